"""One line per recorded image and how far it got: `inv images` in a terminal, and the
Markdown table CI writes to the job summary. Read from the records only, one set of rows
for both."""

from typing import Any

from torchimg import output
from torchimg.adapters import engine
from torchimg.errors import ToolError
from torchimg.model import record

_STAGES = record.STAGES
_HEADERS = ["image", "id", *_STAGES, "best matmul", "vulnerabilities", "digest"]


def state(rec: record.Record, stage: str) -> str:
    result = rec.section(stage)
    if result is None:
        return "-"
    if result.image_id != rec.image_id:
        return "stale"
    return "ok" if result.ok else "FAILED"


def best_matmul(bench: dict[str, Any]) -> str:
    """The best matmul figure of a test record ("-" when none: no GPU, or a record without one)."""
    results = bench.get("results")
    values = [
        r["best"]
        for r in (results if isinstance(results, list) else [])
        if isinstance(r, dict) and isinstance(r.get("best"), (int, float)) and not isinstance(r["best"], bool)
    ]
    return f"{max(values)} {bench.get('unit', '')} ({bench.get('device', '?')})" if values else "-"


def _current(records: list[record.Record]) -> list[bool | None]:
    """Whether each record's tag still names its image; None throughout when the engine does not
    answer (CI writes this table after a failure too, the engine's possibly among them)."""
    try:
        return [engine.image_id(rec.tags[0]) == rec.image_id for rec in records]
    except ToolError:
        return [None] * len(records)


def rows(store: record.Store) -> list[dict[str, Any]]:
    out = []
    records = store.every()
    for rec, current in zip(records, _current(records), strict=True):
        out.append(
            {
                "image": rec.tags[0],
                "id": rec.image_id[7:19],
                "current": current,
                **{s: state(rec, s) for s in _STAGES},
                **(
                    {"test": f"ok, {len(rec.test.warnings)} warning(s)"}
                    if rec.test and state(rec, "test") == "ok" and rec.test.warnings
                    else {}
                ),
                "warnings": rec.test.warnings if rec.test and state(rec, "test") != "stale" else [],
                "bench": best_matmul((rec.test.bench if rec.test else None) or {}),
                "vulnerabilities": rec.scan.vulnerabilities if rec.scan else "-",
                "digest": rec.push.digest if rec.push else "-",
            }
        )
    return out


def table(store: record.Store, markdown: bool = False) -> str:
    found = rows(store)
    if not found:
        return "no image built yet: nox -s build\n"
    cells = [
        [
            f"`{r['image']}`" if markdown else r["image"],
            r["id"] + {True: "", False: " (tag moved)", None: " (engine not reached)"}[r["current"]],
            *(r[s] for s in _STAGES),
            r["bench"],
            r["vulnerabilities"],
            f"`{r['digest']}`" if markdown else r["digest"],
        ]
        for r in found
    ]
    listed = "".join(f"- {r['image']}: {w}\n" for r in found for w in r["warnings"])
    return (
        output.table(_HEADERS, cells, markdown=markdown)
        + "\n"
        + (f"\nTest warnings:\n{listed}" if listed else "")
    )
