"""The per-image record: what each stage learned about one image, keyed by its image ID.

Stages run as separate processes (nox sessions, CI jobs); the record is their contract. It is
typed and versioned; each stage's section names the image ID it is about, and a stage only
trusts a section about the record's own image. Every read-modify-write holds a lock on the
record, and every write replaces the file atomically, so concurrent stages never lose an
update and a reader never sees half a file.
"""

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torchimg import paths, userfiles
from torchimg.errors import PipelineError
from torchimg.model import references
from torchimg.model.variants import FLAVORS
from torchimg.output import log

SCHEMA_VERSION = 2
STAGES = ("build", "stage", "test", "scan", "push")


def epoch_seconds(text: str) -> int | None:
    """A SOURCE_DATE_EPOCH: whole seconds since 1970 up to 9999-12-31 (a date tags and labels
    can carry); None for anything else, a 5000-digit number included (int() refuses those)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 12) or int(text) > 253402300799:
        return None
    return int(text)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Section(_Model):
    """What one stage found about one image."""

    ok: bool
    image_id: str
    problems: list[str] = []
    finished: str = ""


class Built(Section):
    seconds: float
    cache: bool
    builder: str
    platforms: list[str] = ["linux/amd64"]
    cache_ref: str | None = None
    compression: str = "gzip"
    compression_level: int | None = None  # None: BuildKit's default for the compression
    attest: list[str] = []


class Staged(Section):
    """The candidate pushed to the staging repository: the digest later jobs pull and run."""

    repository: str
    digest: str
    reference: str  # repository:tag, the staging tag of this commit

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


class Tested(Section):
    gpu: bool  # the engine had the NVIDIA runtime
    required_gpu: bool = False  # run with --require-gpu: a GPU not seen failed the smoke checks
    smoke: dict[str, int] = {}
    platform: str = "linux/amd64"  # where smoke and bench ran natively (GPU or CPU mode)
    # Platforms tested under emulation (CPU mode, no benchmark): platform -> smoke counts.
    emulated: dict[str, dict[str, int]] = {}
    bench: dict[str, Any] | None = None
    doctor: dict[str, int] = {}  # with --doctor: the node's readiness and multi-GPU checks
    warnings: list[str] = []  # found, and not blocking (e.g. `pip check`'s notes on upstream metadata)


class VulnDb(_Model):
    """Whether trivy had a vulnerability database, decided before scanning, and how that was known."""

    available: bool
    how: str


class Scanned(Section):
    vulnerabilities: str
    vuln_db: VulnDb
    accepted_without_vuln_db: bool = False
    counts: dict[str, int] = {}  # distinct findings: one CVE in two platforms' images counts once
    counts_by_platform: dict[str, dict[str, int]] = {}  # of a multi-platform image: each one's own
    licenses: dict[str, int] = {}
    accepted: list[str] = []
    stale_allowlist: list[str] = []
    reports: list[str] = []
    platforms: list[str] = []  # the platforms trivy read ([] in scans before it read each one)
    platforms_not_read: list[str] = []  # written by scans that read the engine's platform only
    policy: dict[str, str] = {}
    # platform -> the distribution's packages (name -> version): apt's, which no lockfile pins
    os_packages: dict[str, dict[str, str]] = {}


class Pushed(Section):
    repository: str
    digest: str
    references: list[str]
    manifest: str
    # the digest, in `repository`, of the release manifest and notes beside the image (None:
    # pushed by a pipeline that did not attach them)
    release_files: str | None = None


class GitInput(_Model):
    revision: str
    dirty: bool


class BaseInput(_Model):
    ref: str
    id: str
    pinned: bool


class Inputs(_Model):
    docker_sha256: str
    lockfiles: dict[str, str]
    base: BaseInput
    build_args: dict[str, str]
    git: GitInput


class Record(_Model):
    schema_version: Literal[2] = 2
    variant: str
    flavor: str
    image_id: str
    tags: list[str] = Field(min_length=1)
    labels: dict[str, str]
    inputs: Inputs
    build: Built
    stage: Staged | None = None
    test: Tested | None = None
    scan: Scanned | None = None
    push: Pushed | None = None

    def section(self, stage: str) -> Section | None:
        found: Section | None = getattr(self, stage)
        return found

    def staged(self) -> Staged | None:
        """The staged candidate, if this very image was staged."""
        return self.stage if self.passed("stage") else None

    def passed(self, stage: str) -> bool:
        """The stage ran on this very image and passed."""
        found = self.section(stage)
        return found is not None and found.ok and found.image_id == self.image_id


_IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


def _malformed(rec: "Record") -> str:
    """What the schema's types let through and later stages act on: the digests and
    repositories pushed to (a digest CI signs), the build time tags are dated by, the flavor
    and the image ID."""
    for name, section in (("stage", rec.stage), ("push", rec.push)):
        if section is None:
            continue
        files = getattr(section, "release_files", None) or section.digest
        for key, value in (("digest", section.digest), ("release_files", files)):
            if not _IMAGE_ID.fullmatch(value):
                return f"{name}.{key} {value[:80]!r} is not sha256:<64 hex>"
        try:
            references.repository(section.repository, f"{name}.repository")
        except PipelineError as exc:
            return exc.what
    for tag in rec.tags:  # named to the engine, printed in tables: REPOSITORY:TAG, nothing else
        found = references.IMAGE.fullmatch(tag)
        if not found or not found["tag"] or found["digest"]:
            return f"tags: {tag[:80]!r} is not REPOSITORY:TAG"
        try:
            references.image(tag, "tags")
        except PipelineError as exc:
            return exc.what
    epoch = rec.inputs.build_args.get("SOURCE_DATE_EPOCH", "")
    if epoch_seconds(epoch) is None:
        return f"inputs.build_args.SOURCE_DATE_EPOCH {epoch[:40]!r} is not a time in seconds"
    if rec.flavor not in FLAVORS or not _IMAGE_ID.fullmatch(rec.image_id):
        return (
            f"flavor {rec.flavor!r}, image ID {rec.image_id[:80]!r}: a flavor is one of "
            f"{', '.join(FLAVORS)}, an image ID sha256:<64 hex>"
        )
    return ""


def _fix(variant: str, flavor: str, file: Path) -> str:
    return (
        f"rebuild the image (`nox -s build -- --variant {variant} --flavor {flavor}` writes a new "
        f"record), or remove {paths.shown(file)}"
    )


def load(file: Path) -> Record:
    """Parse one record file; anything else than a record of this schema is a clear error."""
    variant, _, flavor = file.stem.rpartition("-")
    try:
        data = json.loads(userfiles.read(file, 64 * 2**20))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, a number of 4300+ digits
        raise PipelineError(
            f"{paths.shown(file)} is not a readable record (empty, truncated or not JSON: {str(exc)[:120]})",
            _fix(variant, flavor, file),
        ) from None
    except OSError as exc:
        raise PipelineError(
            f"cannot read {paths.shown(file)} as a record: {exc.strerror}",
            f"make it a readable record file, or remove it ({_fix(variant, flavor, file)})",
        ) from None
    if not isinstance(data, dict) or not data:
        raise PipelineError(
            f"{paths.shown(file)} is not a record of this pipeline (found {type(data).__name__} "
            f"{json.dumps(data)[:40]})",
            _fix(variant, flavor, file),
        )
    found = data.get("schema_version", 1)
    if found != SCHEMA_VERSION:
        raise PipelineError(
            f"{paths.shown(file)} has record schema {found!r}; this pipeline reads schema {SCHEMA_VERSION}",
            _fix(variant, flavor, file),
        )
    try:
        rec = Record.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PipelineError(
            f"{paths.shown(file)} is not a valid record ({exc.error_count()} problem(s), first: "
            f"{where}: {first['msg']})",
            _fix(variant, flavor, file),
        ) from None
    if problem := _malformed(rec):
        raise PipelineError(
            f"{paths.shown(file)} is not a valid record ({problem})", _fix(variant, flavor, file)
        )
    if (rec.variant, rec.flavor) != (variant, flavor):
        raise PipelineError(
            f"{paths.shown(file)} describes {rec.variant} {rec.flavor}, not {variant} {flavor} "
            "(copied or renamed): never trusted for another image",
            _fix(variant, flavor, file),
        )
    return rec


@contextlib.contextmanager
def _locked(file: Path) -> Iterator[None]:
    """An exclusive lock per record, held across a read-modify-write (processes included)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    with (file.parent / f".{file.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace(file: Path, text: str) -> None:
    """Write to a unique temp file in the same folder, fsync it, then rename it over the file."""
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _dump(rec: Record) -> str:
    return json.dumps(rec.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


class Store:
    """The records of one reports folder (`--reports`, default reports/): records/<variant>-<flavor>.json."""

    def __init__(self, reports: Path) -> None:
        self.folder = reports / "records"

    def path(self, variant: str, flavor: str) -> Path:
        return self.folder / f"{variant}-{flavor}.json"

    def read(self, variant: str, flavor: str) -> Record | None:
        """The record of this variant and flavor, or None when none was written yet."""
        file = self.path(variant, flavor)
        return load(file) if file.exists() else None

    def every(self) -> list[Record]:
        """Every record in the folder, in name order: `<variant>-<flavor>.json` files. Anything
        else there (a note, a backup) is passed over with a warning, not read as a record."""
        found = []
        for p in sorted(self.folder.glob("*.json")):
            if p.name.startswith("."):
                continue  # lock and temp files
            if not p.stem.endswith(tuple(f"-{f}" for f in FLAVORS)):
                log.warning(
                    "%s is not a record's name (<variant>-<flavor>.json): passed over", paths.shown(p)
                )
                continue
            found.append(load(p))
        return found

    def write(self, rec: Record) -> Path:
        """Replace the record (a new build starts a new one)."""
        file = self.path(rec.variant, rec.flavor)
        with _locked(file):
            _replace(file, _dump(rec))
        return file

    def modify(self, variant: str, flavor: str, change: Callable[[Record], None]) -> Record:
        """Read, change and write the record under its lock; return what was written."""
        file = self.path(variant, flavor)
        with _locked(file):
            if not file.exists():
                raise PipelineError(
                    f"no record of {variant} {flavor}",
                    f"nox -s build -- --variant {variant} --flavor {flavor}",
                )
            rec = load(file)
            change(rec)
            rec = Record.model_validate(rec.model_dump())
            _replace(file, _dump(rec))
        return rec

    def save_section(self, variant: str, flavor: str, stage: str, section: Section) -> Record:
        """Store a stage's result, refusing when the record now describes another image (a
        rebuild happened while the stage ran): a result is never filed under the wrong image."""

        def change(rec: Record) -> None:
            if rec.image_id != section.image_id:
                raise PipelineError(
                    f"{stage} of {variant} {flavor} ran on {section.image_id[:19]}, but the record now "
                    f"describes {rec.image_id[:19]} (rebuilt meanwhile): result not recorded",
                    f"run `nox -s {stage} -- --variant {variant} --flavor {flavor}` again",
                )
            setattr(rec, stage, section)

        return self.modify(variant, flavor, change)
