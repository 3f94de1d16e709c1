"""Check results: passed, failed or skipped (with the reason), printed and as JSON."""

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


class CannotCheckError(Exception):
    """Raised by a check that cannot run here; the message says why."""


@dataclass
class Report:
    kind: str
    checks: list[Check] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], tuple[str, dict[str, Any]] | str | None]) -> Check:
        """Run one check; an exception is a failure with its message, CannotCheckError a skip."""
        start = time.perf_counter()
        try:
            out = fn()
            detail, data = out if isinstance(out, tuple) else (out or "", {})
            check = Check(name, "pass", detail, data=data)
        except CannotCheckError as exc:
            check = Check(name, "skip", str(exc))
        except Exception as exc:  # a failing check must not stop the others
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            check = Check(name, "fail", last[:2000])
        check.seconds = round(time.perf_counter() - start, 3)
        self.checks.append(check)
        mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[check.status]
        print(f"[{mark}] {name}: {check.detail}", flush=True)
        return check

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def to_json(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip")}
        return json.dumps(
            {
                "kind": self.kind,
                "ok": self.ok,
                "counts": counts,
                "info": self.info,
                "checks": [asdict(c) for c in self.checks],
            },
            indent=2,
        )
