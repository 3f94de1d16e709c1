"""One line per recorded image and how far it got: `inv images` in a terminal, and the
Markdown table CI writes to the job summary. Read from the records only."""

from typing import Any

from torchimg import engine, record

_STAGES = ("build", "test", "scan", "push")


def _state(rec: record.Record, stage: str) -> str:
    result = rec.section(stage)
    if result is None:
        return "-"
    if result.image_id != rec.image_id:
        return "stale"
    return "ok" if result.ok else "FAILED"


def rows() -> list[dict[str, Any]]:
    out = []
    for rec in record.every():
        bench = (rec.test.bench if rec.test else None) or {}
        best = max((r["best"] for r in bench.get("results", [])), default=None)
        out.append(
            {
                "image": rec.tags[0],
                "id": rec.image_id[7:19],
                "current": engine.image_id(rec.tags[0]) == rec.image_id,
                **{s: _state(rec, s) for s in _STAGES},
                "bench": f"{best} {bench['unit']} ({bench['device']})" if best is not None else "-",
                "vulnerabilities": rec.scan.vulnerabilities if rec.scan else "-",
                "digest": rec.push.digest if rec.push else "-",
            }
        )
    return out


def text() -> str:
    table = [("image", "id", *_STAGES)]
    for r in rows():
        table.append(
            (r["image"], r["id"] + ("" if r["current"] else " (tag moved)"), *(r[s] for s in _STAGES))
        )
    if len(table) == 1:
        return "no image built yet: nox -s build"
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in table)


def markdown() -> str:
    lines = [
        "| image | id | build | test | scan | push | best matmul | vulnerabilities | digest |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows():
        cells = [f"`{r['image']}`", r["id"], *(r[s] for s in _STAGES), r["bench"], r["vulnerabilities"]]
        lines.append("| " + " | ".join([*cells, f"`{r['digest']}`"]) + " |")
    return "\n".join(lines) + "\n"
