"""Where a build's time went, read from BuildKit's plain progress log."""

import re
from dataclasses import dataclass

_HEADER = re.compile(r"^#(?P<n>\d+) (?P<name>\[.*?\] .*|exporting to image|.+)$")
_DONE = re.compile(r"^#(?P<n>\d+) (?P<state>DONE|CACHED|ERROR)(?: (?P<s>[\d.]+)s)?")
_SUB = re.compile(
    r"^#(?P<n>\d+) (?P<what>exporting layers|unpacking to \S+|writing image \S+)(?: (?P<s>[\d.]+)s)? done$"
)


@dataclass(frozen=True)
class Step:
    name: str
    state: str  # DONE, CACHED or ERROR
    seconds: float


def steps(log: list[str]) -> list[Step]:
    """Every vertex with its final state and duration, and the export sub-steps."""
    names: dict[str, str] = {}
    out: list[Step] = []
    for line in log:
        if m := _SUB.match(line):
            out.append(Step(f"  {m['what'].split(' to ')[0]}", "DONE", float(m["s"] or 0)))
        elif m := _DONE.match(line):
            name = names.get(m["n"], f"#{m['n']}")
            out.append(Step(name, m["state"], float(m["s"] or 0)))
        elif (m := _HEADER.match(line)) and m["n"] not in names and not line[len(m["n"]) + 2 :][:1].isdigit():
            names[m["n"]] = m["name"][:90]
    return out


# "[builder 2/2] RUN ...", or in a multi-platform build "[linux/amd64->arm64 builder 2/2] RUN ..."
_STAGE = re.compile(r"^\[(?:linux/\S+ )?(?P<stage>[\w.-]+) \d+/\d+\] (?P<instruction>\w+)")


def stage(name: str) -> tuple[str, str] | None:
    """A step's Dockerfile stage and instruction (None for BuildKit's own steps)."""
    m = _STAGE.match(name)
    return (m["stage"], m["instruction"]) if m else None


def ran(log: list[str], stage_name: str) -> bool:
    """Whether a step of the stage `stage_name` was executed (not cached)."""
    return any((stage(s.name) or ("", ""))[0] == stage_name and s.state == "DONE" for s in steps(log))


def run_seconds(log: list[str], stages: tuple[str, ...]) -> float:
    """Seconds spent in the RUN steps of these stages that were executed (not cached)."""
    total = 0.0
    for s in steps(log):
        where = stage(s.name)
        if s.state == "DONE" and where is not None and where[0] in stages and where[1] == "RUN":
            total += s.seconds
    return round(total, 1)


# A step's own error line ("#12 0.31 error: ...", pip's "ERROR: ..."), then BuildKit's summary.
_STEP_OUTPUT_ERROR = re.compile(r"^#\d+ [\d.]+ (?:error|ERROR): (?P<msg>.*)")
_BUILDKIT_ERROR = re.compile(r"^(?:#\d+ )?ERROR:? (?P<msg>.*)")


def first_error(log: list[str]) -> str:
    """The first error a step printed (the cause), else BuildKit's own last error line."""
    for line in log:
        if m := _STEP_OUTPUT_ERROR.match(line):
            return m["msg"].strip()
    for line in reversed(log):
        if m := _BUILDKIT_ERROR.match(line):
            return m["msg"].strip()
    return log[-1] if log else "no output"
