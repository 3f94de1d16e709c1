"""Command line of the pipeline: `python -m torchimg [--config F] [--reports D] STAGE [options]`;
the nox sessions call it, one stage each.

Exit status: 0 done, 1 a gate refused (test failed, scan blocks, push refused), 2 bad input
or configuration, 3 a tool or service failed (engine, registry, trivy, git, pip-compile).
Every input is checked before the engine is touched.
"""

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torchimg import devtools, output, runner_checks, settings, summary
from torchimg.adapters import engine, local_registry, remote_registry, trivy
from torchimg.errors import TOOL_FAILED, PipelineError, RefusedError, ToolError, debugging, unclassified
from torchimg.model import references, scan_policy, tags, variants
from torchimg.model.record import Store
from torchimg.output import log
from torchimg.stages import (
    Image,
    Selection,
    build,
    build_report,
    lock,
    lock_tools,
    promote,
    push,
    refresh_bases,
    scan,
    stage,
    test,
)

# Each stage: HELP, SELECTS, Options, arguments(), options(), run() (torchimg/stages/__init__.py).
STAGES: dict[str, ModuleType] = {
    "lock": lock,
    "build": build,
    "stage": stage,
    "test": test,
    "scan": scan,
    "push": push,
    "promote": promote,
    "refresh-bases": refresh_bases,
    "build-report": build_report,
    "lock-tools": lock_tools,
}


def _selection_arguments(p: argparse.ArgumentParser, per_image: bool, by_digest: bool = False) -> None:
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME",
        help="variant from variants.toml (repeatable; default: the default variant)",
    )
    p.add_argument("--all", action="store_true", help="every declared variant")
    p.add_argument("--locked", action="store_true", help="every variant whose lockfiles are committed")
    if per_image:
        p.add_argument(
            "--flavor",
            action="append",
            choices=variants.FLAVORS,
            default=[],
            help="runtime or dev (repeatable; default: the variant's flavors)",
        )
    if by_digest:
        p.add_argument(
            "--image",
            action="append",
            default=[],
            metavar="REPOSITORY@DIGEST",
            help="pull and run on this digest (repeatable); its record (reports/records/) names the variant",
        )
        p.add_argument(
            "--staged",
            action="store_true",
            help="pull and run on each selected image's staged digest (`python -m torchimg stage`)",
        )


def _images(args: argparse.Namespace, config: variants.Config, selects: str) -> tuple[Image, ...]:
    """The images a stage runs on; an unknown flavor or an empty selection is bad input."""
    if selects == "nothing":
        return ()
    chosen = config.select(args.variant, args.all, args.locked)
    if selects == "variants" and chosen:
        return tuple(Image(v, v.flavors[0]) for v in chosen)
    images = []
    for variant in chosen:
        for flavor in dict.fromkeys(args.flavor or variant.flavors):  # each once
            if flavor not in variant.flavors:
                raise PipelineError(
                    f"variant {variant.name} has no flavor {flavor!r} (it has {', '.join(variant.flavors)})",
                    "pick one of those with --flavor",
                )
            images.append(Image(variant, flavor))
    if not images:
        raise PipelineError(
            "no image selected" + (" (no variant has committed lockfiles)" if args.locked else ""),
            "name one with --variant NAME, or commit a variant's lockfiles (`nox -s lock`)",
        )
    return tuple(images)


def _by_digest(args: argparse.Namespace, found: settings.Settings) -> Selection:
    """`--image REPO@DIGEST`: the images whose records describe those digests; `--staged`: the
    selected images, each by its staged digest. Either way the stage pulls and runs that digest."""
    store = Store(found.reports)
    if args.staged and args.image:
        raise PipelineError(
            "--staged and --image both name the images to pull", "give one of them: --staged, or --image"
        )
    if args.staged:
        images = _images(args, found.config, "images")
        pulls = {}
        for image in images:
            rec = store.read(image.variant.name, image.flavor)
            staged = rec.staged() if rec else None
            if staged is None:
                raise PipelineError(
                    f"{image} has not been staged (no staged digest in its record)",
                    f"nox -s stage {image.select}, or bring the build job's reports/records/",
                )
            pulls[str(image)] = staged.by_digest
        return Selection(found.config, images, found.reports, pulls)
    if args.variant or args.all or args.locked or args.flavor:
        raise PipelineError(
            "--image names the image itself: it takes no --variant, --all, --locked or --flavor",
            "drop those options (the image's record says which variant and flavor it is)",
        )
    wanted: dict[str, str] = {}
    for ref in args.image:
        digest = references.digest_of(ref, "--image")
        if wanted.setdefault(digest, ref) != ref:
            raise PipelineError(
                f"--image {wanted[digest]} and --image {ref} name one image ({digest[:19]}) twice",
                "give each image once",
            )
    chosen: dict[str, Image] = {}
    for rec in store.every():
        staged = rec.staged()
        for digest in {rec.image_id, staged.digest if staged else rec.image_id} & set(wanted):
            if rec.variant not in found.config.variants:
                raise PipelineError(
                    f"--image {wanted[digest]}: its record {store.path(rec.variant, rec.flavor)} is of "
                    f"variant {rec.variant!r}, which variants.toml does not declare",
                    "use the variants.toml of the commit that built it, or declare the variant again",
                )
            if rec.flavor not in found.config.variants[rec.variant].flavors:
                raise PipelineError(
                    f"--image {wanted[digest]}: its record is of the {rec.flavor} flavor, which variant "
                    f"{rec.variant} no longer declares in variants.toml",
                    "use the variants.toml of the commit that built it, or declare the flavor again",
                )
            chosen[digest] = Image(found.config.variant(rec.variant), rec.flavor)
    for digest, ref in wanted.items():
        if digest not in chosen:
            raise PipelineError(
                f"--image {ref}: no record in {found.reports}/records/ describes {digest[:19]}",
                "bring the records of the job that built and staged it (reports/records/), "
                "or build and stage it here: nox -s build, then nox -s stage",
            )
    images = tuple(chosen[d] for d in wanted)
    return Selection(found.config, images, found.reports, {str(chosen[d]): r for d, r in wanted.items()})


def _stage(args: argparse.Namespace, found: settings.Settings) -> None:
    module: ModuleType = args.module
    opts = module.options(args, found)  # every option checked before the selection runs
    if getattr(args, "image", None) or getattr(args, "staged", False):
        selection = _by_digest(args, found)
    else:
        selection = Selection(found.config, _images(args, found.config, module.SELECTS), found.reports)
    module.run(selection, opts).raise_for_failures()


def _registry(args: argparse.Namespace, found: settings.Settings) -> None:
    print(devtools.registry_action(args.action, args.host))


def _matrix(args: argparse.Namespace, found: settings.Settings) -> None:
    """JSON list of the variants with committed lockfiles (or, --all, every declared one): a CI matrix."""
    chosen = found.config.select([], everything=args.all, locked=not args.all)
    print(json.dumps([v.name for v in chosen if args.platform is None or args.platform in v.platforms]))


def _digests(args: argparse.Namespace, found: settings.Settings) -> None:
    """`repository@digest` of every image of the selection pushed to the configured repository
    (what CI signs), and with --release-files the release files beside each, checked to be still
    what the push recorded (the registry is asked). An image whose
    record says it went elsewhere is refused, not printed: its signature would name another
    registry's image. Nothing is printed unless every line is."""
    store, repository = Store(found.reports), found.repository(args.repository)
    lines: list[str] = []
    elsewhere: list[str] = []
    lacking: list[str] = []
    moved: list[str] = []
    for variant in found.config.select(args.variant, args.all, args.locked):
        for flavor in variant.flavors:
            rec = store.read(variant.name, flavor)
            if rec is None or rec.push is None or not rec.passed("push"):
                continue
            if references.canonical(rec.push.repository) != references.canonical(repository):
                elsewhere.append(f"{variant.name} {flavor} (pushed to {rec.push.repository})")
                continue
            lines.append(f"{rec.push.repository}@{rec.push.digest}")
            if args.release_files:
                beside = f"{rec.push.repository}:{tags.release_files(rec.push.digest)}"
                if rec.push.release_files is None:
                    lacking.append(f"{variant.name} {flavor}")
                elif remote_registry.digest(beside) != rec.push.release_files:
                    moved.append(beside)  # a concurrent push replaced them after this one read them
                else:
                    lines.append(f"{rec.push.repository}@{rec.push.release_files}")
    if elsewhere:  # the configuration names another repository than the records: bad input
        raise PipelineError(
            f"not pushed to {repository}: {', '.join(elsewhere)}",
            "pass the --repository the push had (or set $TORCHIMG_REPOSITORY alike), or push there",
        )
    if moved:
        raise RefusedError(
            f"no longer the release files this push recorded: {', '.join(moved)}",
            "push again: it reads what is there now, keeps it only if it describes the image, and records it",
        )
    if lacking:
        raise RefusedError(
            f"no release manifest beside the pushed image of {', '.join(lacking)} (pushed by an older "
            "pipeline)",
            "push again (with --immutable-only once the moving tags have moved on): the same digest "
            "gets its release manifest attached, nothing else changes",
        )
    for line in lines:
        print(line)


# a terminal's control characters, and the bidirectional overrides that make text read
# otherwise than it is (CVE-2021-42574): what a registry's files must not do to a terminal
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _notes(args: argparse.Namespace, found: settings.Settings) -> None:
    """The release notes (--json: the manifest) attached beside an image in its registry: what
    anyone running it can read about it, with docker's credentials. Checked to describe that
    digest; printed without terminal control characters (they come from a registry)."""
    ref = references.image(args.ref, "REF")
    parts = references.IMAGE.fullmatch(ref)
    assert parts is not None
    repository = parts["name"]
    named = references.digest_of(ref, "REF") if parts["digest"] else None  # checked before the engine
    engine.preflight(buildx=True)
    digest = named
    if digest is None:
        tagged = ref if parts["tag"] else f"{ref}:latest"
        digest = remote_registry.digest(tagged)
        if digest is None:
            raise PipelineError(f"{tagged}: the registry has no such tag", "name an image it serves")
    beside = f"{repository}:{tags.release_files(digest)}"
    files = remote_registry.attached_release(repository, digest)
    if files is None:
        raise PipelineError(
            f"no release notes beside {repository}@{digest} ({beside} does not exist)",
            "it was not released by this pipeline, or by one from before release notes travelled "
            "with the image (its reports/releases/ has them); for an image of several platforms, "
            "name the index (the tag's digest), not one platform's manifest",
        )
    text = (files.manifest_bytes if args.json else files.notes).decode(errors="replace")
    sys.stdout.write(_CONTROL.sub("\ufffd", text))


def _staged(args: argparse.Namespace, found: settings.Settings) -> None:
    """`repository@digest` of each selected image still staged (CI: a re-run reuses them)."""
    store, missing = Store(found.reports), []
    for image in _images(args, found.config, "images"):
        rec = store.read(image.variant.name, image.flavor)
        try:
            if rec is None:
                raise RefusedError(f"no record of {image}")
            print(stage.still_staged(rec, image).by_digest)
        except RefusedError as exc:  # a registry that does not answer is exit 3, not "rebuild"
            log.info("%s", exc.what)
            missing.append(str(image))
    if missing:
        raise RefusedError(f"not staged: {', '.join(missing)}", "nox -s build, then nox -s stage")


def _preflight(args: argparse.Namespace, found: settings.Settings) -> None:
    platforms = found.config.variant(args.variant).platforms if args.variant is not None else ()
    if args.native_only and args.job != "test":
        raise PipelineError(
            f"--native-only with --job {args.job}: only a test job leaves other platforms to "
            "another runner; a build needs emulation for every platform it builds",
            "add --job test (the arm64 GPU test job), or drop --native-only",
        )
    if args.native_only or args.job == "scan":  # a scan reads the image; it never runs it
        platforms = ()
    scanner = args.trivy or args.job == "scan"
    builder = found.builder(None) if args.job == "build" else None  # variants.toml, $TORCHIMG_BUILDER
    runner_checks.check(
        args.gpu, args.min_free_gb, scanner, platforms, buildx=args.job == "build", builder=builder
    )


def _summary(args: argparse.Namespace, found: settings.Settings) -> None:
    print(summary.table(Store(found.reports), markdown=True), end="")


def _lint_config(args: argparse.Namespace, found: settings.Settings) -> None:
    try:
        trivy.binary()
    except ToolError as exc:  # absent (a $TORCHIMG_TRIVY naming no program is bad input: raised)
        if not args.if_available:
            raise
        log.warning("trivy config skipped: %s", exc)
        return
    with tempfile.TemporaryDirectory(prefix="torchimg-lint-") as tmp:
        misconfigured = scan_policy.findings(trivy.config_report(Path(tmp) / "config.json"))
    if misconfigured:
        raise RefusedError(
            f"trivy config found {len(misconfigured)} misconfiguration(s) in docker/:\n  "
            + "\n  ".join(str(f) for f in misconfigured),
            "fix the Dockerfile (trivy's check ID names the rule)",
        )
    log.info("trivy config: docker/ clean")


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GB (0 or more)")
    return value


def _reference(what: str, check: Callable[[str, str], str]) -> Callable[[str], str]:
    """argparse type from a checker that raises PipelineError."""

    def parse(value: str) -> str:
        try:
            return check(value, what)
        except PipelineError as exc:
            raise argparse.ArgumentTypeError(f"{exc.what}; {exc.fix}") from None

    return parse


class _Parser(argparse.ArgumentParser):
    """No abbreviations (`--forc` is not `--force-move`), and an option that takes one value
    given twice with two values is refused (`--repository A --repository B` would quietly
    mean B, A never checked)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        found, rest = super().parse_known_args(args, namespace)
        given = list(sys.argv[1:] if args is None else args)
        for action in self._actions:
            if type(action) is argparse._StoreAction and action.option_strings:
                values = _values_of(action.option_strings, given)
                if len(set(values)) > 1:
                    self.error(f"{action.option_strings[-1]} given {len(values)} times ({', '.join(values)})")
        return found, rest


def _values_of(names: Sequence[str], given: list[str]) -> list[str]:
    """Each value given to one option (`--opt V` or `--opt=V`)."""
    out = []
    for i, token in enumerate(given):
        name, eq, value = token.partition("=")
        if token in names and i + 1 < len(given):
            out.append(given[i + 1])
        elif eq and name in names:
            out.append(value)
    return out


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m torchimg", description=__doc__)
    p.add_argument(
        "--config",
        metavar="PATH",
        help="the variants file (default: variants.toml; $TORCHIMG_CONFIG)",
    )
    p.add_argument(
        "--reports",
        metavar="DIR",
        help="reports and records (default: reports/; $TORCHIMG_REPORTS)",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module in STAGES.items():
        sp = sub.add_parser(name, help=module.HELP)
        if module.SELECTS != "nothing":
            _selection_arguments(sp, module.SELECTS == "images", getattr(module, "BY_DIGEST", False))
        module.arguments(sp)
        sp.set_defaults(func=_stage, module=module)
    rg = sub.add_parser("registry", help="the embedded local registry: up, down, status")
    rg.add_argument("action", choices=["up", "down", "status"])
    rg.add_argument(
        "--host",
        default=local_registry.LOCAL,
        type=_reference("--host", local_registry.check_host),
        help=f"where it listens, HOST:PORT (default {local_registry.LOCAL})",
    )
    rg.set_defaults(func=_registry)
    mx = sub.add_parser("matrix", help="JSON list of the variants with committed lockfiles (CI matrix)")
    mx.add_argument("--all", action="store_true", help="every declared variant (the base refresh tries each)")
    mx.add_argument(
        "--platform",
        choices=variants.PLATFORMS,
        help="only the variants built for this platform (its GPU job)",
    )
    mx.set_defaults(func=_matrix)
    dg = sub.add_parser("digests", help="repository@digest of each pushed image (to sign)")
    _selection_arguments(dg, per_image=False)
    dg.add_argument(
        "--repository",
        help="the repository the images were pushed to (default: $TORCHIMG_REPOSITORY, variants.toml "
        "`repository`)",
    )
    dg.add_argument(
        "--release-files",
        action="store_true",
        help="also the release manifest and notes beside each image (sha256-<hex>.release)",
    )
    dg.set_defaults(func=_digests)
    nt = sub.add_parser("notes", help="the release notes attached beside an image in its registry")
    nt.add_argument(
        "ref", metavar="REF", help="REPOSITORY[:TAG] or REPOSITORY@sha256:... (default tag: latest)"
    )
    nt.add_argument("--json", action="store_true", help="the release manifest (JSON) instead of the notes")
    nt.set_defaults(func=_notes)
    pf = sub.add_parser("preflight", help="check a runner: engine, buildx, containerd store, GPU, disk")
    pf.add_argument(
        "--job",
        choices=runner_checks.JOBS,
        default="build",
        help="what the runner does: build (needs buildx; the default), test (pulls and runs: no buildx), "
        "scan (trivy, no buildx, no emulation)",
    )
    pf.add_argument("--gpu", action="store_true", help="the NVIDIA runtime is required too (GPU jobs)")
    pf.add_argument("--trivy", action="store_true", help="trivy must run too (scan jobs)")
    pf.add_argument(
        "--variant", help="what the job builds or tests: each foreign platform it declares needs emulation"
    )
    pf.add_argument(
        "--native-only",
        action="store_true",
        help="the job tests with --native-only: no emulation needed (the variant is still checked)",
    )
    pf.add_argument(
        "--min-free-gb",
        type=_non_negative,
        default=runner_checks.MIN_FREE_GB,
        help=f"free disk the engine needs (default {runner_checks.MIN_FREE_GB}, measured for one variant)",
    )
    pf.set_defaults(func=_preflight)
    sg = sub.add_parser("staged", help="REPOSITORY@DIGEST of each selected image still staged; else exit 1")
    _selection_arguments(sg, per_image=True)
    sg.set_defaults(func=_staged)
    sub.add_parser("summary", help="Markdown table of every recorded image and its stages").set_defaults(
        func=_summary
    )
    lc = sub.add_parser("lint-config", help="trivy config over docker/: fail on any misconfiguration")
    lc.add_argument("--if-available", action="store_true", help="warn and pass when trivy is not installed")
    lc.set_defaults(func=_lint_config)
    return p


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM (a cancelled CI job, `kill`) unwinds like Ctrl-C: every cleanup runs (throwaway
    containers, registries and engines stopped) instead of the process vanishing mid-stage."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    output.setup()
    signal.signal(signal.SIGTERM, _terminated)
    func: Callable[[argparse.Namespace, settings.Settings], None] = args.func
    try:
        config = variants.load(settings.config_file(args.config))
        tags.check(config)
        func(args, settings.Settings(config, settings.reports_dir(args.reports)))
    except PipelineError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted; no moving tag is moved before its image is verified")
        return 130
    except BrokenPipeError:  # the reader of stdout went away (`| head`): as a shell reports SIGPIPE
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141
    except Exception as exc:  # a failure no adapter classified: still no traceback for the user
        if debugging():
            traceback.print_exc()  # the traceback asked for, and still the exit status of a tool failure
        log.error("%s failed: %s", args.command, unclassified(exc))
        return TOOL_FAILED
    return 0
