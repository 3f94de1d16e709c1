"""The errors the pipeline raises, each with the exit status the command line ends with.

Exit statuses, the same for every stage: 1 a gate refused (a test failed, the scan blocks,
push refused), 2 bad input or configuration, 3 a tool or service failed (engine, registry,
trivy, git, pip-compile, network). A check that could not run is never a pass.
"""

import os
import traceback
from pathlib import Path

GATE_REFUSED = 1
BAD_INPUT = 2
TOOL_FAILED = 3


class PipelineError(Exception):
    """Something failed for a reason the user can act on: says what, and how to fix it.

    The base class means bad input or configuration (exit 2); the subclasses below name the
    other two outcomes.
    """

    exit_code = BAD_INPUT

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}\n  fix: {self.fix}" if self.fix else self.what


class RefusedError(PipelineError):
    """A gate looked at the image and said no: a failed test, a blocking finding, a refused push."""

    exit_code = GATE_REFUSED


class ToolError(PipelineError):
    """A tool or service the pipeline drives failed, so the answer is unknown (never a pass)."""

    exit_code = TOOL_FAILED


def worst(codes: list[int]) -> int:
    """One exit status for a run over several images: a tool failure outranks bad input,
    which outranks a refusal (the run could not even judge every image)."""
    for code in (TOOL_FAILED, BAD_INPUT, GATE_REFUSED):
        if code in codes:
            return code
    return 0


def debugging() -> bool:
    """TORCHIMG_DEBUG=1 (or true, yes, on): an unclassified failure shows its traceback."""
    return os.environ.get("TORCHIMG_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def unclassified(exc: Exception) -> ToolError:
    """A failure no adapter classified, as a tool failure naming where it happened: the user
    gets one line and a way to the traceback, never the traceback itself."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return ToolError(
        f"{type(exc).__name__}: {exc}{at}", "rerun with TORCHIMG_DEBUG=1 for the traceback, and report it"
    )
