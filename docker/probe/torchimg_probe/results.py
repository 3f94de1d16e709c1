"""Check results: passed, failed, warned or skipped (with the reason), printed and as JSON."""

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("pass", "warn", "fail", "skip")


def expected() -> dict[str, str]:
    """What the image's labels say the probe should find (versions, minimum driver), passed by
    the pipeline as TORCHIMG_EXPECT (JSON); empty when run by hand."""
    return dict(json.loads(os.environ.get("TORCHIMG_EXPECT", "{}")))


MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


@dataclass
class Check:
    name: str
    status: str  # one of STATUSES
    detail: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    fix: str = ""


class CannotCheckError(Exception):
    """Raised by a check that cannot run here; the message says why."""


class ConcernError(Exception):
    """Raised by a check that ran and found something to fix that does not break the image
    (a small /dev/shm, attention falling back to math): a warning, with the fix."""

    def __init__(self, detail: str, data: dict[str, Any] | None = None, fix: str = "") -> None:
        super().__init__(detail)
        self.data, self.fix = data or {}, fix


class BrokenError(ConcernError):
    """Raised by a check that ran and found what breaks the image here (torch.compile cannot
    run its code): a failure, with the fix."""


Outcome = tuple[str, dict[str, Any]] | str | None


@dataclass
class Report:
    kind: str
    checks: list[Check] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], Outcome]) -> Check:
        """Run one check; an exception is a failure with its message, CannotCheckError a skip,
        ConcernError a warning, BrokenError a failure with its fix."""
        start = time.perf_counter()
        try:
            out = fn()
            detail, data = out if isinstance(out, tuple) else (out or "", {})
            check = Check(name, "pass", detail, data=data)
        except CannotCheckError as exc:
            check = Check(name, "skip", str(exc))
        except ConcernError as exc:
            status = "fail" if isinstance(exc, BrokenError) else "warn"
            check = Check(name, status, str(exc), data=exc.data, fix=exc.fix)
        except Exception as exc:  # a failing check must not stop the others
            last = traceback.format_exception_only(type(exc), exc)[-1].strip()
            check = Check(name, "fail", last[:2000])
        check.seconds = round(time.perf_counter() - start, 3)
        self.checks.append(check)
        print(f"[{MARKS[check.status]}] {name}: {check.detail}", flush=True)
        return check

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in STATUSES}

    def summary(self) -> str:
        """One line per warning and failure, with its fix: what a person reads first."""
        lines = [f"{self.kind}: " + ", ".join(f"{n} {s}" for s, n in self.counts().items())]
        for c in self.checks:
            if c.status in ("warn", "fail"):
                lines.append(f"  {c.status.upper()} {c.name}: {c.detail}")
                if c.fix:
                    lines.append(f"       fix: {c.fix}")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "ok": self.ok,
                "counts": self.counts(),
                "info": self.info,
                "checks": [asdict(c) for c in self.checks],
            },
            indent=2,
        )
