"""Integration fixtures: a real Docker Engine with BuildKit, and the real default image.

Builds use the variant's pinned base, or TORCHIMG_BASE where that cannot be pulled (CI here
uses a Debian trixie base made with debootstrap). Every image a test tags is removed after.
"""

import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from torchimg import paths
from torchimg.adapters import engine, local_registry, trivy
from torchimg.errors import PipelineError
from torchimg.model import credentials, record, variants
from torchimg.stages import Image, Selection, build

TEST_REPOSITORY = "torchimg-test/pytorch"


@pytest.fixture(scope="session", autouse=True)
def _engine() -> None:
    """Skip (or, under CI, fail) when no engine answers: these tests need the real thing."""
    try:
        engine.preflight()
    except PipelineError as exc:
        missing(f"integration tests need a Docker Engine with buildx: {exc}")


def missing(reason: str) -> None:
    """A tool these tests need is absent: skip here, fail under CI (which installs it)."""
    if os.environ.get("CI"):
        pytest.fail(f"CI provides it: {reason}")
    pytest.skip(reason)


def require_trivy() -> None:
    try:
        trivy.binary()
    except PipelineError as exc:
        missing(f"these tests need trivy: {exc}")


def build_small(
    folder: Path, dockerfile: str, tag: str, compression: str = "gzip", platforms: tuple[str, ...] = ()
) -> str:
    """Build a small throwaway image from `dockerfile` (text) in `folder`, its layers in
    `compression` (for `platforms`: one index); return its tag."""
    (folder / "Dockerfile").write_text(dockerfile)
    engine.build(
        context=folder,
        dockerfile=folder / "Dockerfile",
        target=None,
        tags=[tag],
        build_args={},
        contexts={},
        secrets=[],
        labels={},
        what=tag,
        compression=compression,
        platforms=platforms,
    )
    return tag


@pytest.fixture(scope="session")
def config() -> variants.Config:
    return variants.load(paths.VARIANTS_FILE)


@pytest.fixture(scope="session")
def default_variant(config: variants.Config) -> variants.Variant:
    return config.variant(config.default)


@pytest.fixture(scope="session")
def base() -> str | None:
    return os.environ.get("TORCHIMG_BASE") or None


@dataclass(frozen=True)
class Canaries:
    """Unique strings planted in the build's secrets: none may appear in any layer."""

    ca_marker: str
    netrc_password: str
    creds: credentials.Credentials


@pytest.fixture(scope="session")
def canaries(tmp_path_factory: pytest.TempPathFactory) -> Canaries:
    folder = tmp_path_factory.mktemp("secrets")
    host = credentials.resolve(None, None)
    ca_marker = f"torchimg-canary-ca-{uuid.uuid4().hex}"
    ca = folder / "ca.pem"
    ca.write_text((host.ca_bundle.read_text() if host.ca_bundle else "") + f"\n# {ca_marker}\n")
    password = f"torchimg-canary-token-{uuid.uuid4().hex}"
    netrc = folder / "netrc"
    netrc.write_text(f"machine private-index.invalid login ci password {password}\n")
    return Canaries(ca_marker, password, credentials.Credentials(ca, netrc))


@pytest.fixture(scope="session")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@dataclass(frozen=True)
class Pipeline:
    """The stages' arguments for one image of the session's reports folder."""

    config: variants.Config
    reports: Path

    def at(self, flavor: str, variant: variants.Variant | None = None) -> tuple[Selection, Image]:
        image = Image(variant or self.config.variant(self.config.default), flavor)
        return Selection(self.config, (image,), self.reports), image

    @property
    def store(self) -> record.Store:
        return record.Store(self.reports)


@pytest.fixture(scope="session")
def pipeline(config: variants.Config, reports: Path) -> Pipeline:
    return Pipeline(config, reports)


def remove_images(*refs: str) -> None:
    for ref in refs:
        engine.remove_image(ref)


def build_options(base: str | None, canaries: Canaries, repository: str = TEST_REPOSITORY) -> build.Options:
    return build.Options(repository=repository, base=base, creds=canaries.creds)


@pytest.fixture(scope="session")
def runtime_image(pipeline: Pipeline, base: str | None, canaries: Canaries) -> Iterator[record.Record]:
    """The real default runtime image, built once through the pipeline's own build stage."""
    rec = build.build(*pipeline.at("runtime"), build_options(base, canaries))[0]
    yield rec
    remove_images(*rec.tags)


@pytest.fixture(scope="session")
def dev_image(
    pipeline: Pipeline, base: str | None, canaries: Canaries, runtime_image: record.Record
) -> Iterator[record.Record]:
    """The dev flavor, built after runtime (so its layers come from BuildKit's cache)."""
    rec = build.build(*pipeline.at("dev"), build_options(base, canaries))[0]
    yield rec
    remove_images(*rec.tags)


def tag_list(host: str, name: str) -> list[str]:
    """The registry's own tag list of a repository ([] when it does not exist)."""
    try:
        with urllib.request.urlopen(f"http://{host}/v2/{name}/tags/list", timeout=5) as r:
            return sorted(json.load(r).get("tags") or [])
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


@pytest.fixture(scope="module")
def new_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], local_registry.Local]]:
    """Start throwaway registries the way the pipeline starts the embedded one; remove them, and
    their storage, when the module ends (each holds GBs of the default image's copies)."""
    if not shutil.which("docker-registry"):
        missing("needs Debian's docker-registry program (the registry:2 image cannot be pulled here)")
    started: list[local_registry.Local] = []

    def throwaway() -> local_registry.Local:
        reg = local_registry.Local.on_free_port(tmp_path_factory.mktemp("registry"))
        started.append(reg)
        return reg

    yield throwaway
    for reg in started:
        reg.stop()
        shutil.rmtree(reg.dir, ignore_errors=True)
