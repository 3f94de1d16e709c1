"""Where each setting comes from, in one place: the command-line flag, else its environment
variable, else variants.toml, else the default. Every value is checked naming where it came
from, before any engine or registry is touched."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

from torchimg import paths
from torchimg.errors import PipelineError
from torchimg.model import credentials, references
from torchimg.model.variants import Config

_BUILDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

ENV = {
    "base": "TORCHIMG_BASE",
    "repository": "TORCHIMG_REPOSITORY",
    "staging": "TORCHIMG_STAGING",
    "builder": "TORCHIMG_BUILDER",
    "cache_repository": "TORCHIMG_CACHE",
    "reports": "TORCHIMG_REPORTS",
    "config": "TORCHIMG_CONFIG",
}
_FLAGS = {
    "base": "--base",
    "repository": "--repository",
    "staging": "--staging",
    "builder": "--builder",
    "cache_repository": "--cache-repository",
    "reports": "--reports",
    "config": "--config",
}

_TOML = {"cache_repository": "cache"}  # the variants.toml key where it differs from the setting's


def resolve(
    name: str, flag: str | None, configured: str | None = None, file: str = "variants.toml"
) -> tuple[str | None, str]:
    """(value, where it came from): the flag, else $ENV, else variants.toml. An empty or blank
    variable counts as unset (CI fills unset ones with ''); an empty flag is refused: given as
    `--repository "$TARGET"` with TARGET unset, it must not fall back to somewhere else."""
    if flag is not None:
        if not flag.strip():
            raise PipelineError(
                f"{_FLAGS[name]} is empty",
                f"give {_FLAGS[name]} a value, or leave it out to use ${ENV[name]} or the default",
            )
        return flag, _FLAGS[name]
    if (env := os.environ.get(ENV[name], "")).strip():
        return env, f"${ENV[name]}"
    return (configured, f"{file} {_TOML.get(name, name)}") if configured else (None, "")


def config_file(flag: str | None) -> Path:
    value, _ = resolve("config", flag)
    return Path(value) if value else paths.VARIANTS_FILE


def reports_dir(flag: str | None) -> Path:
    """Reports and per-image records (tests give a temp folder). Checked before any stage
    runs: a path that cannot become a writable folder would fail only after a build had
    tagged its image, leaving an image without its record."""
    value, source = resolve("reports", flag)
    folder = Path(value).absolute() if value else paths.ROOT / "reports"  # tools run from the root
    where = f"{source} {folder}" if source else f"the reports folder {folder}"
    fix = f"point {source or '$TORCHIMG_REPORTS'} at a folder this user can write"
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            if existing.is_symlink():
                raise PipelineError(f"{where}: {existing} is a broken symbolic link", fix)
            existing = existing.parent
    except OSError as exc:  # a parent this user cannot search
        raise PipelineError(f"{where}: {existing} cannot be reached ({exc.strerror or exc})", fix) from None
    if problem := _cannot_write_in(existing, "is not a folder"):
        raise PipelineError(f"{where}: {existing} {problem}", fix)
    records = folder / "records"  # where every stage writes: a build must not tag, then fail here
    present = records.is_symlink() or records.exists()  # `folder` was found searchable above
    if present and (problem := _cannot_write_in(records, "is not a folder (or a link to none)")):
        raise PipelineError(f"{where}: {records} {problem}", f"remove or repair {records}")
    return folder


def _cannot_write_in(folder: Path, not_a_folder: str) -> str:
    """Why this user cannot write in `folder`, which exists ('' when it can)."""
    try:
        if not folder.is_dir():
            return not_a_folder
        return "" if os.access(folder, os.W_OK | os.X_OK) else "is not writable by this user"
    except OSError as exc:
        return f"cannot be reached ({exc.strerror or exc})"


@dataclass(frozen=True)
class Settings:
    """The validated variants file and reports folder, and the resolution of the rest."""

    config: Config
    reports: Path

    def _resolve(self, name: str, flag: str | None, configured: str | None) -> tuple[str | None, str]:
        """resolve(), naming a configured value by the variants file it came from."""
        return resolve(name, flag, configured, self.config.source.name)

    def repository(self, flag: str | None) -> str:
        value, source = self._resolve("repository", flag, self.config.repository)
        assert value is not None  # variants.toml requires it
        return references.repository(value, source)

    def staging(self, flag: str | None, repository: str) -> str:
        """Where candidates wait for their test and scan: default `<repository>-staging`."""
        value, source = self._resolve("staging", flag, self.config.staging)
        if not value:
            return f"{repository}-staging"
        staging = references.repository(value, source)
        if references.canonical(staging) == references.canonical(repository):
            raise PipelineError(
                f"{source} {staging!r} is the release repository itself: candidates would sit "
                "beside releases",
                "name another repository for staging, e.g. " + f"{repository}-staging",
            )
        return staging

    def cache_repository(self, flag: str | None, repository: str) -> str | None:
        """BuildKit's registry cache: never the release or staging repository (its cache ref
        `<variant>-<flavor>` is a released moving tag's name)."""
        value, source = self._resolve("cache_repository", flag, self.config.cache)
        if not value:
            return None
        cache = references.repository(value, source)
        taken = {repository: "release", self.staging(None, repository): "staging"}
        for repo, what in taken.items():
            if references.canonical(cache) == references.canonical(repo):
                raise PipelineError(
                    f"{source} {cache!r} is the {what} repository: each build would write its cache "
                    f"over the tag {cache}:<variant>-<flavor>",
                    f"name a repository of its own for the cache, e.g. {repository}-cache",
                )
        return cache

    def builder(self, flag: str | None) -> str | None:
        """A buildx builder's name, as buildx allows them: it goes on buildx's command line."""
        value, source = self._resolve("builder", flag, self.config.builder)
        if value is not None and not _BUILDER.fullmatch(value):
            raise PipelineError(
                f"{source} {value[:80]!r} is not a buildx builder name (letters, digits, '_', '.', '-')",
                "`docker buildx ls` lists the builders; name one of them",
            )
        return value

    def base(self, flag: str | None) -> str | None:
        """A base image override (a local image works); None: the variant's pinned base."""
        value, source = resolve("base", flag)
        return references.image(value, source) if value else None

    def credentials(self, ca_bundle: str | None, netrc: str | None) -> credentials.Credentials:
        return credentials.resolve(ca_bundle, netrc)
