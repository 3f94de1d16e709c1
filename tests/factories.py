"""Typed records for tests of the stages' pure logic (no engine, no files)."""

from torchimg.model import record

IMAGE = "sha256:" + "a" * 64


def a_record(image_id: str = IMAGE, **changes: object) -> record.Record:
    """A record of a built image (build section only); `changes` set further sections."""
    rec = record.Record(
        variant="2.9.1-cu128",
        flavor="runtime",
        image_id=image_id,
        tags=["localhost:5000/pytorch:2.9.1-cu128-runtime"],
        labels={},
        inputs=record.Inputs(
            docker_sha256="0" * 64,
            lockfiles={},
            base=record.BaseInput(ref="debian", id=IMAGE, pinned=True),
            build_args={"SOURCE_DATE_EPOCH": "0"},
            git=record.GitInput(revision="c31bdfd", dirty=False),
        ),
        build=record.Built(ok=True, image_id=image_id, seconds=1.0, cache=True, builder="default"),
    )
    for key, value in changes.items():
        setattr(rec, key, value)
    return rec


def has_row(markdown: str, *cells: str) -> bool:
    """Whether a Markdown table in `markdown` has a row of exactly these cells (padding aside)."""
    wanted = [c.strip() for c in cells]
    for line in markdown.splitlines():
        if line.startswith("|") and [c.strip() for c in line.strip().strip("|").split("|")] == wanted:
            return True
    return False
