"""The refresh pull request's verdicts: which images made it onto the new bases, whether the
pull request is a draft, and whether a newer torch is out."""

from pathlib import Path

import pytest

from tests.factories import IMAGE, a_record, has_row
from torchimg.errors import PipelineError, ToolError
from torchimg.model import record, variants
from torchimg.stages import refresh_bases


def _passed(flavor: str) -> record.Record:
    return a_record(
        flavor=flavor,
        test=record.Tested(ok=True, image_id=IMAGE, gpu=True),
        scan=record.Scanned(
            ok=True, image_id=IMAGE, vulnerabilities="ran", vuln_db=record.VulnDb(available=True, how="fresh")
        ),
    )


def test_every_locked_image_passed_makes_a_ready_pull_request(
    config: variants.Config, tmp_path: Path
) -> None:
    store = record.Store(tmp_path)
    for flavor in ("runtime", "dev"):
        store.write(_passed(flavor))
    table, complete = refresh_bases.image_status(config, store)
    assert complete
    assert has_row(table, "2.9.1-cu128 runtime", "ok", "ok", "ok", "ok")
    assert has_row(table, "2.9.1-cu126 runtime", "-", "-", "-", "not refreshed (no committed lockfiles)")


def test_a_locked_image_that_failed_or_never_ran_makes_a_draft(
    config: variants.Config, tmp_path: Path
) -> None:
    store = record.Store(tmp_path)
    failed = _passed("runtime")
    failed.test = record.Tested(ok=False, image_id=IMAGE, gpu=True, problems=["smoke: cuda: no GPU"])
    store.write(failed)  # and dev never built (its lock failed: index unreachable)
    table, complete = refresh_bases.image_status(config, store)
    assert not complete
    assert has_row(table, "2.9.1-cu128 runtime", "ok", "FAILED", "ok", "**FAILED**")
    assert has_row(table, "2.9.1-cu128 dev", "-", "-", "-", "**FAILED**")


def test_a_newer_torch_on_the_index_is_named(config: variants.Config) -> None:
    assert "**torch 2.15.0 is out**" in refresh_bases.torch_news(config, lambda: "2.15.0")
    assert "is the newest release" in refresh_bases.torch_news(config, lambda: "2.9.1")
    assert "not a version" in refresh_bases.torch_news(config, lambda: "latest!")


def test_an_index_that_does_not_answer_is_said_not_fatal(config: variants.Config) -> None:
    def unreachable() -> str:
        raise ToolError("cannot read https://pypi.org/pypi/torch/json (no route)")

    assert "could not be looked up" in refresh_bases.torch_news(config, unreachable)


@pytest.mark.parametrize("content", ["{", '[{"base": "x"}]', '{"a": 1}', ""])
def test_a_damaged_bases_file_is_named_not_a_traceback(content: str, tmp_path: Path) -> None:
    (tmp_path / "bases.json").write_text(content)
    with pytest.raises(PipelineError, match=r"bases\.json") as exc:
        refresh_bases.pull_request_body(tmp_path)
    assert exc.value.exit_code == 2 and "nox -s refresh_bases" in exc.value.fix
    assert not (tmp_path / "pull-request.md").exists()
