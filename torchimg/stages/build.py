"""`nox -s build`: one variant x flavor -> one image, through BuildKit, plus its record.

Every input is checked before BuildKit starts (lockfiles, their Python, engine, buildx,
base image), so a bad input fails in seconds with its fix and nothing gets tagged.
"""

import argparse
import datetime
from dataclasses import dataclass, field

from torchimg import image_inputs, paths
from torchimg.adapters import emulation, engine, gitinfo
from torchimg.errors import PipelineError
from torchimg.model import lockfile, record
from torchimg.model.credentials import Credentials
from torchimg.output import log
from torchimg.settings import Settings
from torchimg.stages import Image, Selection, StageResult, each_image

HELP = "build images through BuildKit and record them"
SELECTS = "images"  # variants x flavors
COMPRESSIONS = ("zstd", "gzip")
# zstd: exports and unpacks several times faster than gzip and is ~10 % smaller; every engine
# since Docker 23 / containerd 1.5 pulls it. gzip for older engines (--compression gzip).
DEFAULT_COMPRESSION = "zstd"
# Levels the build report may ask for (BuildKit maps zstd's onto four encoder speeds; gzip 0
# stores). No command-line option: BuildKit reuses a layer it holds in the same compression at
# whatever level it was made, so mixing levels on one builder would make the digest depend on
# its cache. Every image is built at BuildKit's default level (zstd 3, gzip 6).
LEVELS = {"zstd": range(1, 23), "gzip": range(1, 10)}
ATTESTATIONS = ("provenance", "sbom")


@dataclass(frozen=True)
class Options:
    repository: str
    base: str | None = None
    creds: Credentials = field(default_factory=Credentials)
    cache: bool = True
    builder: str | None = None  # a named buildx builder (remote BuildKit); None: the default
    cache_repository: str | None = None  # registry cache: <repo>:<variant>-<flavor>
    cache_export: bool = True  # False: import the registry cache only (read-only machines)
    compression: str = DEFAULT_COMPRESSION
    compression_level: int | None = None  # the build report's fast row only; None: BuildKit's
    attest: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        levels = LEVELS[self.compression]
        if self.compression_level is not None and self.compression_level not in levels:
            raise PipelineError(
                f"compression level {self.compression_level}: not a {self.compression} level",
                f"give {levels.start}-{levels.stop - 1} for {self.compression}",
            )


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base",
        metavar="REF",
        help="build on this base image instead of the variant's "
        "pinned one (a local image works; default: $TORCHIMG_BASE)",
    )
    p.add_argument(
        "--ca-bundle",
        metavar="PATH",
        help="extra CA bundle for the package index, given to "
        "BuildKit as a secret (default: $TORCHIMG_CA_BUNDLE, $PIP_CERT, $REQUESTS_CA_BUNDLE)",
    )
    p.add_argument(
        "--netrc",
        metavar="PATH",
        help="netrc with private-index credentials, as a secret (default: $TORCHIMG_NETRC)",
    )
    p.add_argument("--no-cache", action="store_true", help="build without BuildKit's cache")
    p.add_argument(
        "--builder",
        help="named buildx builder, e.g. a remote BuildKit (default: "
        "$TORCHIMG_BUILDER, variants.toml `builder`, else docker's current one)",
    )
    p.add_argument(
        "--cache-repository",
        metavar="REPO",
        help="registry cache to import and export, one "
        "ref per variant and flavor (default: $TORCHIMG_CACHE, variants.toml `cache`)",
    )
    p.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=DEFAULT_COMPRESSION,
        help="layer compression (default zstd: faster to build and pull, smaller; pulled by Docker "
        ">= 23 and containerd >= 1.5. gzip: for older engines and tools)",
    )
    p.add_argument(
        "--attest",
        action="append",
        choices=ATTESTATIONS,
        default=[],
        help="attach BuildKit attestations to the image (release builds: both)",
    )
    p.add_argument(
        "--repository",
        help="image repository for tags (default: $TORCHIMG_REPOSITORY, variants.toml `repository`)",
    )


def options(args: argparse.Namespace, settings: Settings) -> Options:
    repository = settings.repository(args.repository)
    return Options(
        repository=repository,
        base=settings.base(args.base),
        creds=settings.credentials(args.ca_bundle, args.netrc),
        cache=not args.no_cache,
        builder=settings.builder(args.builder),
        cache_repository=settings.cache_repository(args.cache_repository, repository),
        compression=args.compression,
        attest=tuple(args.attest),
    )


def cache_ref(opts: Options, image: Image) -> str | None:
    """One registry cache ref per variant and flavor, so flavors never evict each other."""
    return f"{opts.cache_repository}:{image.variant.name}-{image.flavor}" if opts.cache_repository else None


def run(selection: Selection, opts: Options) -> StageResult:
    for image in selection.images:  # every input checked before the first build starts
        image_inputs.check(image.variant, image.flavor, opts.base)
    return each_image("build", selection, lambda image: build(selection, image, opts))


def build(selection: Selection, image: Image, opts: Options) -> tuple[record.Record, list[str]]:
    """Build and tag one image; write its record. Returns it and BuildKit's log (the build
    report reads its steps)."""
    variant, flavor = image.variant, image.flavor
    locks = image_inputs.check(variant, flavor, opts.base)
    lock_python = image_inputs.check_lock_python(variant, locks[0], opts.base)
    engine.preflight()
    engine.require_dockerfile_support(opts.builder)
    if opts.compression != "gzip" and opts.builder is None and not engine.containerd_store():
        log.warning(
            "   the engine's classic image store keeps and pushes gzip layers whatever --compression "
            "says: enable the containerd image store (README, Runner prerequisites)"
        )
    if opts.builder is None:  # a named builder (often remote) runs its own emulators, not ours
        for platform in variant.platforms:
            emulation.require(platform)
    base_ref = opts.base or variant.base.image
    base_id = engine.require_base(base_ref)
    git = gitinfo.current()
    if cut := gitinfo.shallow_cut(image_inputs.layer_epoch_file(variant)):
        log.warning(
            "   this clone is shallow: %s was last changed before its history starts, so the layers "
            "are dated by commit %s instead, and differ from a full clone's build of the same commit "
            "(another digest, no layer reused by the next commit's build); `git fetch --unshallow` "
            "(CI: actions/checkout with fetch-depth: 0)",
            paths.shown(image_inputs.layer_epoch_file(variant)),
            cut[:12],
        )
    tag = f"{opts.repository}:{variant.name}-{flavor}"
    args = image_inputs.build_args(variant, base_ref, git, lock_python)
    labels = image_inputs.image_labels(variant, flavor, git, base_ref, base_id, locks)
    log.info("   -> %s (%s)", tag, ", ".join(variant.platforms))
    result = engine.build(
        context=paths.DOCKER,
        dockerfile=paths.DOCKERFILE,
        target=flavor,
        tags=[tag],
        build_args=args,
        contexts={"lock": variant.lock_dir, "requirements": paths.REQUIREMENTS},
        secrets=opts.creds.buildkit_secrets(),
        labels=labels,
        cache=opts.cache,
        what=str(image),
        builder=opts.builder,
        cache_ref=cache_ref(opts, image),
        cache_export=opts.cache_export,
        compression=opts.compression,
        compression_level=opts.compression_level,
        attest=opts.attest,
        # The engine's own platform needs no --platform: the build stays what it always was.
        platforms=()
        if len(variant.platforms) == 1 and emulation.native(variant.platforms[0])
        else variant.platforms,
    )
    rec = record.Record(
        variant=variant.name,
        flavor=flavor,
        image_id=result.image_id,
        tags=[tag],
        build=record.Built(
            ok=True,
            image_id=result.image_id,
            seconds=round(result.seconds, 1),
            cache=opts.cache,
            builder=opts.builder or "default",
            platforms=list(variant.platforms),
            cache_ref=cache_ref(opts, image),
            compression=opts.compression,
            compression_level=opts.compression_level,
            attest=list(opts.attest),
            finished=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        ),
        inputs=record.Inputs(
            docker_sha256=image_inputs.tree_sha256(paths.DOCKER),
            lockfiles={paths.shown(p): lockfile.sha256(p) for p in locks},
            base=record.BaseInput(ref=base_ref, id=base_id, pinned=base_ref == variant.base.image),
            build_args=args,
            git=record.GitInput(revision=git.revision, dirty=git.dirty),
        ),
        labels=labels,
    )
    path = selection.store.write(rec)
    log.info("== built %s (%s) in %.1f s; record %s", tag, result.image_id[:19], result.seconds, path)
    return rec, result.log
