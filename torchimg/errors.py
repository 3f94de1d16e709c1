"""The one error type the pipeline raises for problems a user can fix."""


class PipelineError(Exception):
    """Something failed for a reason the user can act on: says what, and how to fix it."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}\n  fix: {self.fix}" if self.fix else self.what
