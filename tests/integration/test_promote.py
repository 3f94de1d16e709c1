"""Build once, promote by digest: the image workflow's commands, in its order, against the real
engine and a real registry (build -> stage -> test by digest -> scan by digest -> promote ->
sign, skipped here), then what a re-run and a rebuild of the same commit meet.

Through the CLI itself, as the workflow calls it. Differences from a GPU runner, each forced by
this machine: no GPU (the test runs in CPU mode, smoke checks only, without --require-gpu),
no vulnerability database (offline: --allow-no-vuln-db, which a local registry accepts), one
flavor (runtime), the pull finds the layers in this engine already, and no cosign or OIDC
identity (the signing step is skipped, saying so).
"""

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import remove_images, require_trivy, tag_list
from torchimg import cli, devtools
from torchimg.adapters import engine, local_registry, remote_registry
from torchimg.model import labels, record, tags, variants

pytestmark = pytest.mark.integration

BUILT_AS = "torchimg-rehearsal/pytorch"  # local tags of these builds: never the session image's


class Workflow:
    """The CLI, as the workflow steps call it, on one reports folder and one image."""

    def __init__(self, reports: Path, variant: str, registry: str, capsys: pytest.CaptureFixture[str]):
        self.reports, self.variant, self.capsys = reports, variant, capsys
        self.release, self.staging = f"{registry}/rehearsal", f"{registry}/rehearsal-staging"
        self.made: list[str] = []  # local tags and pulled digests, removed after the module

    def __call__(self, command: str, *options: str, selects: bool = True) -> tuple[int, str, str]:
        self.capsys.readouterr()
        chosen = ["--variant", self.variant, "--flavor", "runtime"] if selects else []
        code = cli.main(["--reports", str(self.reports), command, *chosen, *options])
        out, err = self.capsys.readouterr()
        return code, out, err

    @property
    def rec(self) -> record.Record:
        found = record.Store(self.reports).read(self.variant, "runtime")
        assert found is not None
        return found

    def build(self) -> record.Record:
        code, _, err = self("build", "--attest", "provenance", "--repository", BUILT_AS)
        assert code == 0, err[-2000:]
        self.made += self.rec.tags
        return self.rec

    def stage(self) -> str:
        code, out, err = self("stage", "--repository", self.release, "--staging", self.staging)
        assert code == 0, err[-2000:]
        self.made.append(out.strip())
        return out.strip()

    def promote(self) -> tuple[int, str]:
        code, _, err = self("promote", "--repository", self.release, "--allow-dirty")
        return code, err

    def released(self, beside: bool = False) -> dict[str, str | None]:
        """Every tag of the release repository and the digest it names: the image's, or
        (`beside`) those of the release manifests attached beside it."""
        host, _, name = self.release.partition("/")
        found = {t: remote_registry.digest(f"{self.release}:{t}") for t in tag_list(host, name)}
        return {t: d for t, d in found.items() if t.endswith(".release") == beside}


@pytest.fixture(scope="module")
def workflow(
    tmp_path_factory: pytest.TempPathFactory,
    new_registry: Callable[[], local_registry.Local],
    default_variant: variants.Variant,
) -> Iterator[Callable[[pytest.CaptureFixture[str]], Workflow]]:
    require_trivy()
    registry = new_registry()
    registry.start()
    reports = tmp_path_factory.mktemp("rehearsal")
    made: list[Workflow] = []

    def bind(capsys: pytest.CaptureFixture[str]) -> Workflow:
        made.append(Workflow(reports, default_variant.name, registry.host, capsys))
        return made[-1]

    yield bind
    remove_images(*(ref for w in made for ref in w.made))
    registry.stop()  # its copy of the image is several GB: free it now, not at the session's end
    shutil.rmtree(registry.dir, ignore_errors=True)


def test_the_workflow_commands_in_order(
    workflow: Callable[[pytest.CaptureFixture[str]], Workflow], capsys: pytest.CaptureFixture[str]
) -> None:
    run = workflow(capsys)
    code, _, err = run("preflight", "--min-free-gb", "1", selects=False)
    assert code == 0, err
    assert "ok       the containerd image store" in err
    assert "ok       docker buildx" in err and "(builds docker/Dockerfile)" in err
    # a GPU test node pulls and runs with the plain engine: it is not asked for buildx
    code, _, err = run("preflight", "--job", "test", "--min-free-gb", "1", selects=False)
    assert code == 0, err
    assert "buildx" not in err and "ok       the containerd image store" in err

    built = run.build()
    staged = run.stage()
    assert staged == f"{run.staging}@{built.image_id}"  # containerd store: the image ID is the digest
    assert remote_registry.is_index(staged)
    code, out, _ = run("staged")
    assert (code, out.strip()) == (0, staged)
    # The test job pulls what it tests: here the pull finds the layers already in this engine
    # (a full 5 GB download and 12 GB unpack would add about 3 minutes to CI), but the registry
    # is asked for that digest, and the pulled image must be the one the record describes.

    code, _, err = run("test", "--staged", "--no-bench")
    assert code == 0, err[-2000:]
    assert f"pulling {staged}" in err
    assert run.rec.passed("test")

    # offline, the scan gate refuses (no vulnerability DB), and promote refuses that image
    code, _, err = run("scan", "--staged")
    assert code == 1, err[-2000:]
    code, err = run.promote()
    assert code == 1
    assert "promote refused" in err and "failed its scan gate" in err
    assert run.released() == {}

    code, _, err = run("scan", "--staged", "--allow-no-vuln-db")
    assert code == 0, err[-2000:]
    code, err = run.promote()
    assert code == 0, err[-2000:]
    released = run.released()
    assert set(released.values()) == {built.image_id}, released  # the tested digest, byte for byte
    assert len(released) == 1 + 3  # immutable + <variant>-runtime, 2.9-..., latest
    assert list(run.released(beside=True)) == [tags.release_files(built.image_id)]
    beside = remote_registry.attached_release(run.release, built.image_id)
    assert beside is not None
    attached = beside.manifest
    assert attached["digest"] == built.image_id and attached["repository"] == run.release
    code, out, _ = run("digests", "--variant", run.variant, "--repository", run.release, selects=False)
    assert (code, out.split()) == (0, [f"{run.release}@{built.image_id}"])
    code, out, _ = run(
        "digests", "--variant", run.variant, "--repository", run.release, "--release-files", selects=False
    )
    files = remote_registry.digest(f"{run.release}:{tags.release_files(built.image_id)}")
    assert (code, out.split()) == (0, [f"{run.release}@{built.image_id}", f"{run.release}@{files}"])
    # the signing step (`cosign sign` on those digests) needs cosign and an OIDC identity: not here


def test_a_second_promote_changes_nothing(
    workflow: Callable[[pytest.CaptureFixture[str]], Workflow], capsys: pytest.CaptureFixture[str]
) -> None:
    run = workflow(capsys)
    before, beside = run.released(), run.released(beside=True)
    assert before, "needs the promote of the previous test"
    code, err = run.promote()
    assert code == 0, err[-2000:]
    assert "already names this image" in err
    assert "moved" not in err
    assert "holds the manifest of this image's first release: kept" in err
    assert run.released() == before and run.released(beside=True) == beside


def test_the_sign_step(
    workflow: Callable[[pytest.CaptureFixture[str]], Workflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """The workflow signs what `digests` prints, by digest; keyless signing needs what CI has."""
    run = workflow(capsys)
    code, out, _ = run("digests", "--variant", run.variant, "--repository", run.release, selects=False)
    assert code == 0 and out.split() == [f"{run.release}@{run.rec.image_id}"]
    missing = [] if shutil.which("cosign") else ["cosign"]
    if not os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL"):
        missing.append("a GitHub OIDC token (id-token: write)")
    if missing:
        pytest.skip(f"`cosign sign --yes {out.split()[0]}` not run, missing here: {'; '.join(missing)}")
    subprocess.run(["cosign", "sign", "--yes", *out.split()], check=True, timeout=300)


def test_a_rebuild_of_a_promoted_commit_is_never_promoted(
    workflow: Callable[[pytest.CaptureFixture[str]], Workflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """A re-run that rebuilt (provenance: another digest) meets a refusal with its reason; the
    first build's records still promote, changing nothing."""
    run = workflow(capsys)
    before, first = run.released(), run.rec
    kept = run.reports.parent / f"{run.reports.name}-first-records"
    shutil.copytree(run.reports / "records", kept)

    rebuilt = run.build()
    assert rebuilt.image_id != first.image_id  # provenance: every build is another digest
    staged = run.stage()
    assert staged == f"{run.staging}@{rebuilt.image_id}"
    code, out, _ = run("staged")
    assert (code, out.strip()) == (0, staged)
    code, err = run.promote()  # the rebuild's own record: staged, never tested
    assert code == 1
    assert "has not been tested" in err

    assert run("test", "--staged", "--no-bench")[0] == 0
    assert run("scan", "--staged", "--allow-no-vuln-db")[0] == 0
    code, err = run.promote()  # tested and scanned, but the commit was released as the first build
    assert code == 1
    assert f"already names {first.image_id}" in err and "a rebuild is another image" in err
    assert run.released() == before

    shutil.rmtree(run.reports / "records")
    shutil.copytree(kept, run.reports / "records")  # what the first attempt tested: still staged
    code, err = run.promote()
    assert code == 0, err[-2000:]
    assert "already names this image" in err
    assert run.released() == before


def test_cleaning_removes_the_digests_the_jobs_pulled(
    workflow: Callable[[pytest.CaptureFixture[str]], Workflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """A digest pulled by `--staged` has no tag: `inv clean` must still find it on a runner."""
    run = workflow(capsys)
    pulled = [r for r in engine.labelled_tags(labels.OURS) if r.startswith(f"{run.staging}@")]
    assert pulled, "the test and scan above pulled by digest"
    assert sorted(devtools.remove_project_images((run.staging,))) == sorted(pulled)
    assert all(engine.image_id(r) is None for r in pulled)
