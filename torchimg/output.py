"""What the pipeline prints: one logging format, stages folded in CI logs, tables as data.

Progress and findings go to stderr through the `torchimg` logger (stdout stays for what
commands are asked to print: a digest list, a JSON matrix, a Markdown table). Under GitHub
Actions each image's work is a collapsible group (`::group::`); tables are written by
tabulate, in the terminal and as Markdown from the same rows.
"""

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from tabulate import tabulate

log = logging.getLogger("torchimg")


class _Format(logging.Formatter):
    """`message` for progress, `warning: message` / `error: message` otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


class _Stderr(logging.StreamHandler[TextIO]):
    """Writes to whatever sys.stderr is at the time (tests and nox swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup() -> None:
    """Once per process (the command line, an invoke task): stderr, one format."""
    if any(isinstance(h, _Stderr) for h in log.handlers):
        return
    handler = _Stderr()
    handler.setFormatter(_Format())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def in_ci() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


@contextlib.contextmanager
def group(title: str) -> Iterator[None]:
    """One image's work: a folded group in GitHub Actions, a heading line elsewhere."""
    sys.stderr.flush()
    if in_ci():
        print(f"::group::{title}", file=sys.stderr, flush=True)
    else:
        log.info("== %s", title)
    try:
        yield
    finally:
        if in_ci():
            print("::endgroup::", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    """Rows as a terminal table, or as a GitHub Markdown table (the same data)."""
    return str(
        tabulate(
            rows, headers=list(headers), tablefmt="github" if markdown else "simple", disable_numparse=True
        )
    )
