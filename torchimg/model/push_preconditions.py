"""What an image's record must show before it is pushed: the push preconditions (the other
gate, the scan policy, decides what a scan found). Pure: reads the record only."""

from dataclasses import dataclass

from torchimg.errors import RefusedError
from torchimg.model import record


@dataclass(frozen=True)
class Target:
    """Where an image goes, and what the user accepted for it."""

    repository: str
    allow_no_vuln_db: bool = False
    allow_dirty: bool = False
    allow_cpu_test: bool = False


def unmet(
    rec: record.Record,
    target: Target,
    local_target: bool,
    policy: dict[str, str] | None = None,
    cuda: bool = False,
    platforms: tuple[str, ...] = ("linux/amd64",),
) -> RefusedError | None:
    """Why the record does not allow this push (None: it does). Pure: reads the record only.
    `policy`: the scan policy this push applies; a scan judged under another one is refused.
    `cuda`: a CUDA image, which a remote release wants tested on a GPU (--require-gpu).
    `platforms`: what the variant declares; the image must be built and tested for each."""
    early = untested(rec, target, local_target, cuda, platforms)
    return early if early is not None else unscanned(rec, target, local_target, policy)


def untested(
    rec: record.Record,
    target: Target,
    local_target: bool,
    cuda: bool = False,
    platforms: tuple[str, ...] = ("linux/amd64",),
) -> RefusedError | None:
    """The preconditions a scan cannot change (a clean working tree, build, test, every platform
    tested): checked before a push runs a scan it would refuse anyway."""
    what = f"{rec.variant} {rec.flavor}"
    select = f"-- --variant {rec.variant} --flavor {rec.flavor}"
    git = rec.inputs.git
    if git.dirty and not target.allow_dirty:
        return RefusedError(
            f"push refused: {what} was built from a working tree with uncommitted changes, so "
            f"commit {git.revision[:7]} does not describe it",
            "commit, rebuild and test; or pass --allow-dirty (the immutable tag then ends in -dirty)",
        )
    if not rec.passed("build"):
        return RefusedError(f"push refused: {what} has no successful build", f"nox -s build {select}")
    if set(platforms) != set(rec.build.platforms):
        return RefusedError(
            f"push refused: {what} was built for {', '.join(rec.build.platforms)}, but the variant "
            f"declares {', '.join(platforms)}",
            f"nox -s build {select}",
        )
    if not rec.passed("test"):
        state = "failed its test" if rec.test is not None else "has not been tested"
        return RefusedError(f"push refused: {what} ({rec.image_id[:19]}) {state}", f"nox -s test {select}")
    assert rec.test is not None
    untested = [p for p in rec.build.platforms if p != rec.test.platform and p not in rec.test.emulated]
    if untested:
        return RefusedError(
            f"push refused: {what} was not tested on {', '.join(untested)}",
            f"nox -s test {select} (emulated platforms are smoke-tested in CPU mode)",
        )
    if cuda and not rec.test.required_gpu and not (local_target or target.allow_cpu_test):
        return RefusedError(
            f"push refused: {what} is a CUDA image tested without --require-gpu (GPU checks could "
            f"be skipped); a release to {target.repository} needs its test on a GPU",
            f"on a GPU runner: nox -s test {select} --require-gpu; or accept it with --allow-cpu-test",
        )
    return None


def unscanned(
    rec: record.Record, target: Target, local_target: bool, policy: dict[str, str] | None
) -> RefusedError | None:
    """The scan's part of the preconditions (a failed or missing scan, a platform it did not read,
    another policy, no vulnerability DB for a release)."""
    what = f"{rec.variant} {rec.flavor}"
    select = f"-- --variant {rec.variant} --flavor {rec.flavor}"
    if rec.scan is None or not rec.passed("scan"):
        problems = "; ".join(rec.scan.problems) if rec.scan else "not scanned"
        return RefusedError(f"push refused: {what} failed its scan gate: {problems}", f"nox -s scan {select}")
    read = rec.scan.platforms
    unread = [p for p in rec.build.platforms if p not in read] if read or len(rec.build.platforms) > 1 else []
    if unread:
        return RefusedError(
            f"push refused: the scan of {what} did not read its image for {', '.join(unread)}",
            f"scan it again (every platform is read): nox -s scan {select}",
        )
    if policy is not None and rec.scan.policy != policy:
        return RefusedError(
            f"push refused: {what} was scanned under another policy ({rec.scan.policy or 'unrecorded'}) "
            f"than this push applies ({policy})",
            f"scan again with the same --severity, --include-unfixed and --allowlist: nox -s scan {select}",
        )
    if not rec.scan.vuln_db.available and not (local_target or target.allow_no_vuln_db):
        return RefusedError(
            f"push refused: the scan of {what} could not check vulnerabilities ({rec.scan.vuln_db.how}); "
            f"a release to {target.repository} needs that",
            "scan where trivy's DB is reachable (or mirrored: --db-repository), or accept it "
            "with push --allow-no-vuln-db",
        )
    return None
