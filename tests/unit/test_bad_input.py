"""Bad input through the real command line: exit 2, the input and the fix named, nothing written.

Every case runs with DOCKER_HOST pointing at a socket that does not exist: had any of them
reached the engine before its input was checked, it would end with exit 3 ("the Docker
Engine does not answer") instead.
"""

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from torchimg import cli
from torchimg.adapters import engine

Edit = Callable[[Path], None]
VARIANT = "2.9.1-cu128"


def _variants(old: str, new: str) -> Edit:
    def edit(root: Path) -> None:
        path = root / "variants.toml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    return edit


def _write(name: str, content: bytes) -> Edit:
    def edit(root: Path) -> None:
        (root / name).write_bytes(content)

    return edit


def _lock(old: str, new: str, name: str = "runtime.txt") -> Edit:
    def edit(root: Path) -> None:
        path = root / "requirements" / "locks" / VARIANT / name
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, 1))

    return edit


_DIGEST = "sha256:" + "a" * 64
_FILELOCK_4_3_0 = "filelock==4.3.0 \\\n    --hash=sha256:" + "0" * 64 + "\n"


def _remove(name: str) -> Edit:
    def edit(root: Path) -> None:
        (root / name).unlink()

    return edit


def _nothing(root: Path) -> None:
    pass


def _loop(name: str) -> Edit:
    def edit(root: Path) -> None:
        (root / name).symlink_to(root / name)

    return edit


def _fifo(name: str) -> Edit:
    """A named pipe: reading it would wait for a writer forever."""

    def edit(root: Path) -> None:
        (root / name).unlink(missing_ok=True)
        os.mkfifo(root / name)

    return edit


def _append(text: str) -> Edit:
    def edit(root: Path) -> None:
        with (root / "variants.toml").open("a") as f:
            f.write(text)

    return edit


def _lock_folder(root: Path) -> None:
    lock = root / "requirements" / "locks" / VARIANT / "runtime.txt"
    lock.unlink()
    lock.mkdir()


FIRST_VARIANT = '[[variant]]\nname = "2.9.1-cu128"\ntorch = "2.9.1"\ncuda = "cu128"\nbase = "debian-trixie"\n'
ALLOW = '[[allow]]\nid = "CVE-1"\nreason = "x"\nexpires = 2027-01-31\n'

# (case id, edit of a copy of the repository's inputs, command line, what the message names)
CASES: list[tuple[str, Edit, list[str], str]] = [
    ("flavors-not-a-list", _variants(FIRST_VARIANT, FIRST_VARIANT + "flavors = 3\n"), ["build"], "flavors"),
    ("duplicate-flavors", _variants(FIRST_VARIANT, FIRST_VARIANT + 'flavors = ["runtime", "runtime"]\n'),
     ["build"], "each flavor once"),
    ("base-not-a-table", _variants("[[variant]]", "[bases]\nx = 5\n\n[[variant]]"), ["build"], "bases"),
    ("base-value-not-a-table", _variants('python = "3.13"', 'python = "3.13"\n\n[bases.x]\n'), ["build"],
     "bases.x"),
    ("index-not-a-string", _variants(FIRST_VARIANT, FIRST_VARIANT + "index = 42\n"), ["build"], "index"),
    ("index-with-credentials",
     _variants(FIRST_VARIANT, FIRST_VARIANT + 'index = "https://user:tok@pypi.example.com/simple"\n'),
     ["build"], "--netrc"),
    ("index-not-https", _variants(FIRST_VARIANT, FIRST_VARIANT + 'index = "http://pypi.example.com/simple"\n'),
     ["build"], "https://"),
    ("torch-never-released", _variants('torch = "2.9.1"', 'torch = "2.9.99"'), ["build"], "2.9.99"),
    ("not-utf8", _write("variants.toml", b'default = "\xff\xfe"\n'), ["build"], "not UTF-8"),
    ("repository-in-config", _variants('repository = "localhost:5000/pytorch"', 'repository = "Bad/Repo"'),
     ["build"], "repository"),
    ("unknown-variant", _nothing, ["build", "--variant", "2.9.1-cu12"], "did you mean '2.9.1-cu128'"),
    ("nothing-locked", _remove("requirements/locks/2.9.1-cu128/runtime.txt"), ["build-report", "--locked"],
     "no image selected"),
    ("all-with-variant", _nothing, ["build", "--all", "--variant", VARIANT], "--all"),
    ("flavor-not-declared", _variants(FIRST_VARIANT, FIRST_VARIANT + 'flavors = ["runtime"]\n'),
     ["build", "--flavor", "dev"], "no flavor 'dev'"),
    ("repository-uppercase", _nothing, ["build", "--repository", "Localhost:5000/PyTorch"], "--repository"),
    ("repository-port-not-numeric", _nothing, ["push", "--repository", "localhost:abc/pytorch"],
     "--repository"),
    ("repository-double-dot", _nothing, ["push", "--repository", "localhost:5000/a..b"], "--repository"),
    ("repository-with-tag", _nothing, ["push", "--repository", "localhost:5000/pytorch:latest"],
     "--repository"),
    ("cache-repository", _nothing, ["build", "--cache-repository", "cache@sha256:12"], "--cache-repository"),
    ("cache-in-config-is-the-release",
     _variants('repository = "localhost:5000/pytorch"',
               'repository = "localhost:5000/pytorch"\ncache = "localhost:5000/pytorch"'),
     ["build"], "variants.toml cache 'localhost:5000/pytorch' is the release repository"),
    ("base-reference", _nothing, ["build", "--base", "UPPER/debian:trixie"], "--base"),
    ("base-port-out-of-range", _nothing, ["build", "--base", "localhost:99999/debian:trixie"], "--base"),
    ("repository-port-zero", _nothing, ["push", "--repository", "localhost:0/pytorch"], "--repository"),
    ("base-key-with-a-pipe",
     _variants("[bases.debian-trixie]", '[bases."a|b"]\nimage = "x"\n\n[bases.debian-trixie]'),
     ["matrix"], "is not a plain name"),
    ("base-python-absurd", _variants('python = "3.13"', 'python = "3.99999999999999999999"'), ["matrix"],
     "is not a minor version"),
    # an empty flag ("$TARGET" unset) never falls back to the environment or variants.toml
    ("repository-empty", _nothing, ["push", "--repository", ""], "--repository is empty"),
    ("staging-blank", _nothing, ["stage", "--staging", "  "], "--staging is empty"),
    ("base-empty", _nothing, ["build", "--base", ""], "--base is empty"),
    ("ca-bundle-empty", _nothing, ["build", "--ca-bundle", ""], "--ca-bundle is empty"),
    ("netrc-empty", _nothing, ["lock", "--netrc", " "], "--netrc is empty"),
    ("netrc-not-one", _write("bad.netrc", b"machine a.example login u password s3cret extra\n"),
     ["build", "--netrc", "{root}/bad.netrc"], "is not a .netrc file (unreadable at line"),
    ("netrc-no-machine", _write("none.netrc", b"# nothing\n"), ["build", "--netrc", "{root}/none.netrc"],
     "names no machine"),
    ("cache-dir-empty", _nothing, ["scan", "--cache-dir", ""], "--cache-dir is empty"),
    ("builder-empty", _nothing, ["build", "--builder", ""], "--builder is empty"),
    ("builder-an-option", _nothing, ["build", "--builder=--help"], "is not a buildx builder name"),
    ("builder-in-config",
     _variants('default = "2.9.1-cu128"', 'default = "2.9.1-cu128"\nbuilder = "a b;rm -rf /"'),
     ["build"], "is not a buildx builder name"),
    ("base-digest-uppercase", _nothing, ["build", "--base", "x@sha256:" + "A" * 64], "64 lowercase hex"),
    ("notes-sha512", _nothing, ["notes", "x@sha512:" + "a" * 64], "64 lowercase hex"),
    ("scan-db-repository", _nothing, ["scan", "--db-repository", "a b;c"], "--db-repository 'a b;c'"),
    ("builder-empty-in-config",
     _variants('default = "2.9.1-cu128"', 'default = "2.9.1-cu128"\nbuilder = ""'),
     ["matrix"], "builder is empty"),
    ("index-of-another-cuda",
     _variants('cuda = "cu126"', 'cuda = "cu126"\nindex = "https://download.pytorch.org/whl/cu130"'),
     ["matrix"], "serves PyTorch's cu130 builds, not cu126"),
    ("base-python-too-old", _variants('python = "3.13"', 'python = "3.0"'), ["matrix"], "3.10 and newer"),
    ("torch-never-released", _variants('torch = "2.9.1"', 'torch = "99.0.0"'), ["matrix"],
     "variants.toml variant '2.9.1-cu128': torch 99.0.0"),
    ("notes-reference", _nothing, ["notes", "Not A/Reference"], "REF 'Not A/Reference' is not a valid image"),
    ("notes-short-digest", _nothing, ["notes", "localhost:5000/pytorch@sha256:12ab"], "REF"),
    ("digests-repository", _nothing, ["digests", "--repository", "UPPER/x"], "--repository"),
    ("cache-repository-empty", _nothing, ["build", "--cache-repository", ""], "--cache-repository is empty"),
    ("threshold-negative", _nothing, ["test", "--threshold=-1"], "--threshold"),
    ("threshold-above-one", _nothing, ["test", "--threshold", "5"], "--threshold"),
    ("threshold-nan", _nothing, ["test", "--threshold", "nan"], "--threshold"),
    ("threshold-inf", _nothing, ["test", "--threshold", "inf"], "--threshold"),
    ("allowlist-unknown-table", _write("allow.toml", b'[[alow]]\nid = "CVE-1"\n'),
     ["scan", "--allowlist", "{root}/allow.toml"], "alow"),
    ("allowlist-wrong-type", _write("allow.toml", ALLOW.replace('"CVE-1"', "5").encode()),
     ["scan", "--allowlist", "{root}/allow.toml"], "id must be a non-empty string"),
    ("allowlist-expiry-too-far", _write("allow.toml", ALLOW.replace("2027-01-31", "2099-01-31").encode()),
     ["push", "--allowlist", "{root}/allow.toml"], "days ahead"),
    ("allowlist-secret-without-path",
     _write("allow.toml", ALLOW.replace("[[allow]]", '[[allow]]\nkind = "secret"').encode()),
     ["scan", "--allowlist", "{root}/allow.toml"], "must say where"),
    ("lock-torch-other-version", _lock("torch==2.9.1", "torch==2.9.0"), ["build"], "torch 2.9.0"),
    ("lock-torch-local-version", _lock("torch==2.9.1", "torch==2.9.1+cpu"), ["build"], "torch 2.9.1+cpu"),
    ("lock-unclosed-quote", _lock("filelock==4.3.1", "filelock==4.3.1 'x"), ["build"], "not a requirement"),
    ("lock-dev-changes-runtime",
     _lock("filelock==4.3.1", "filelock==4.3.0", "dev.txt"),
     ["build", "--flavor", "dev"], "dev.txt changes versions"),
    ("lock-duplicate-pin", _lock("--only-binary :all:", "--only-binary :all:\n" + _FILELOCK_4_3_0),
     ["build"], "pinned twice"),
    ("lock-without-hash", _lock("filelock==4.3.1 \\\n    --hash=sha256:", "filelock==4.3.1\n# "), ["build"],
     "no --hash"),
    ("lock-not-pinned", _lock("filelock==4.3.1", "filelock>=4.3.1"), ["build"], "not pinned with =="),
    ("lock-index-url", _lock("--only-binary :all:", "--only-binary :all:\n--index-url https://evil.example"),
     ["build"], "--index-url"),
    ("lock-extra-index-on-the-allowed-line",
     _lock("--only-binary :all:", "--only-binary :all: --extra-index-url https://evil.example"),
     ["build"], "--extra-index-url https://evil.example"),
    ("lock-find-links", _lock("--only-binary :all:", "--only-binary :all:\n--find-links /tmp/wheels"),
     ["build"], "--find-links"),
    ("image-without-digest", _nothing, ["test", "--image", "localhost:5000/pytorch:latest"],
     "does not name a sha256 digest"),
    ("image-short-digest", _nothing, ["scan", "--image", "localhost:5000/pytorch@sha256:abc"], "--image"),
    ("image-not-a-reference", _nothing, ["scan", "--image", "Not A Reference"], "--image"),
    ("image-with-variant", _nothing, ["test", "--image", f"localhost:5000/p@{_DIGEST}", "--variant", VARIANT],
     "takes no --variant"),
    ("image-without-record", _nothing, ["test", "--image", f"localhost:5000/p@{_DIGEST}"], "no record"),
    ("staged-never-staged", _nothing, ["scan", "--staged"], "has not been staged"),
    ("promote-without-record", _nothing, ["promote"], "no record"),
    ("promote-immutable-only-and-force-move", _nothing, ["promote", "--immutable-only", "--force-move"],
     "contradict"),
    ("preflight-native-only-unknown-variant", _nothing, ["preflight", "--native-only", "--variant", "x"],
     "unknown variant 'x'"),
    ("staging-is-the-release-repository", _nothing, ["stage", "--staging", "localhost:5000/pytorch"],
     "release repository itself"),
    ("staging-not-a-repository", _nothing, ["stage", "--staging", "Staging Repo"], "--staging"),
    ("preflight-negative-disk", _nothing, ["preflight", "--min-free-gb", "-1"], "not a number of GB"),
    ("preflight-unknown-variant", _nothing, ["preflight", "--variant", "nope"], "unknown variant 'nope'"),
    ("preflight-empty-variant", _nothing, ["preflight", "--variant", ""], "unknown variant ''"),
    ("preflight-unknown-job", _nothing, ["preflight", "--job", "deploy"], "invalid choice: 'deploy'"),
    ("matrix-unknown-platform", _nothing, ["matrix", "--platform", "linux/s390x"], "invalid choice"),
    ("variant-named-latest", _append('\n[[variant]]\nname = "latest"\ntorch = "2.9.1"\ncuda = "cu128"\n'
     'base = "debian-trixie"\n'), ["matrix"], "would name both"),
    ("variant-minor-tag-taken", _append('\n[[variant]]\nname = "2.9-cu128"\ntorch = "2.9.0"\ncuda = "cu126"\n'
     'base = "debian-trixie"\n'), ["matrix"], "'2.9-cu128-runtime' would name both"),
    ("variant-name-too-long", _append('\n[[variant]]\nname = "2.9.1-cu128' + "-x" * 50 + '"\n'
     'torch = "2.9.1"\ncuda = "cu128"\nbase = "debian-trixie"\n'), ["matrix"], "Docker allows 128"),
    ("test-no-bench-update-baseline", _nothing, ["test", "--no-bench", "--update-baseline"],
     "no bench to store"),
    ("lock-check-and-upgrade", _nothing, ["lock", "--check", "--upgrade"], "--check together with --upgrade"),
    ("build-report-two-variants", _nothing,
     ["build-report", "--variant", VARIANT, "--variant", "2.9.1-cu126"], "measures one variant"),
    ("image-twice-in-two-repositories", _nothing,
     ["test", "--image", f"localhost:5000/a@{_DIGEST}", "--image", f"localhost:5000/b@{_DIGEST}"], "twice"),
    ("index-port-zero", _variants(FIRST_VARIANT, FIRST_VARIANT + 'index = "https://127.0.0.1:0/simple"\n'),
     ["matrix"], "names port 0"),
    ("refresh-body-with-check", _nothing, ["refresh-bases", "--pull-request-body", "--check"],
     "--pull-request-body together with --check"),
    ("refresh-unknown-base", _nothing, ["refresh-bases", "--base-key", "nope"], "unknown base(s) nope"),
    ("cache-is-the-release-repository", _nothing, ["build", "--cache-repository", "localhost:5000/pytorch"],
     "is the release repository"),
    ("cache-is-the-staging-repository", _nothing,
     ["build", "--cache-repository", "127.0.0.1:5000/pytorch-staging"], "is the staging repository"),
    ("staging-is-the-release-repository-spelled-otherwise", _nothing,
     ["stage", "--staging", "127.0.0.1:5000/pytorch"], "release repository itself"),
    ("preflight-native-only-for-a-build", _nothing, ["preflight", "--native-only", "--variant", VARIANT],
     "--native-only with --job build"),
    ("db-age-absurd", _nothing, ["scan", "--max-db-age-days", "99999999999999999999"], "from 1 to 90"),
    ("db-age-negative", _nothing, ["scan", "--max-db-age-days", "-1"], "from 1 to 90"),
    ("db-age-zero", _nothing, ["scan", "--max-db-age-days", "0"], "from 1 to 90"),
    ("build-report-without-lockfiles", _nothing, ["build-report", "--variant", "2.9.1-cu126"], "lockfile"),
    ("allowlist-name-too-long", _nothing, ["scan", "--allowlist", "/tmp/" + "x" * 300], "allowlist"),
    ("allowlist-empty", _nothing, ["scan", "--allowlist", ""], "--allowlist: is empty"),
    ("ca-bundle-name-too-long", _nothing, ["build", "--ca-bundle", "/tmp/" + "x" * 300],
     "is not a readable file"),
    ("db-repository-empty", _nothing, ["scan", "--db-repository", ""], "--db-repository is empty"),
    ("cache-dir-a-file", _nothing, ["scan", "--cache-dir", "{root}/variants.toml"], "is not a folder"),
    ("index-not-a-url", _variants(FIRST_VARIANT, FIRST_VARIANT + 'index = "https://[::1:x/simple"\n'),
     ["matrix"], "is not a URL"),
    ("index-port-out-of-range",
     _variants(FIRST_VARIANT, FIRST_VARIANT + 'index = "https://127.0.0.1:99999/simple"\n'), ["matrix"],
     "is not a URL"),
    ("variants-nested-too-deep", _write("variants.toml", b"a = " + b"[" * 100_000), ["matrix"],
     "nested too deeply"),
    ("lockfile-is-a-folder", _lock_folder, ["build"], "cannot be read as a lockfile"),
    ("allowlist-typo", _nothing, ["scan", "--allowlist", "{root}/scan-alowlist.toml"], "no such file"),
    ("ca-bundle-not-pem", _write("ca.pem", b"junk\n"), ["build", "--ca-bundle", "{root}/ca.pem"],
     "is not a CA bundle"),
    ("allowlist-symlink-loop", _loop("allow.toml"), ["scan", "--allowlist", "{root}/allow.toml"],
     "--allowlist"),
    ("allowlist-fifo", _fifo("allow.toml"), ["scan", "--allowlist", "{root}/allow.toml"],
     "not a regular file"),
    ("variants-fifo", _fifo("variants.toml"), ["matrix"], "not a regular file"),
    ("variants-too-large", _write("variants.toml", b"# " + b"x" * 2**20 + b"\n"), ["matrix"],
     "larger than 1 MiB"),
]  # fmt: skip


@pytest.fixture
def root(repo: Path) -> Path:
    """A repository of the test's own: a variants file and the default variant's lockfiles."""
    return repo


@pytest.mark.parametrize(("edit", "argv", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_naming_it_before_touching_docker(
    root: Path,
    edit: Edit,
    argv: list[str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    edit(root)
    reports = root / "reports"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    monkeypatch.delenv("TORCHIMG_REPOSITORY", raising=False)
    argv = [a.replace("{root}", str(root)) for a in argv]
    code: object
    try:
        code = cli.main(["--config", str(root / "variants.toml"), "--reports", str(reports), *argv])
    except SystemExit as exc:  # argparse refuses a malformed option value itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err, err
    assert "Traceback" not in err and "Docker Engine" not in err
    assert "fix" in err or "usage:" in err, err
    assert not reports.exists(), "bad input wrote something"


@pytest.mark.parametrize("stage", ["build", "push"])
def test_a_bad_repository_in_the_environment_is_named(
    root: Path, stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TORCHIMG_REPOSITORY", "Not A Repository")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    assert cli.main(["--config", str(root / "variants.toml"), "--reports", str(root / "reports"), stage]) == 2
    assert (
        "$TORCHIMG_REPOSITORY 'Not A Repository' is not a valid image repository" in capsys.readouterr().err
    )


def test_an_empty_environment_variable_counts_as_unset(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CI exports unset repository variables as empty strings: they must mean the default."""
    monkeypatch.setenv("TORCHIMG_REPOSITORY", "")
    monkeypatch.setenv("TORCHIMG_CACHE", " ")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    assert cli.main(["--config", str(root / "variants.toml"), "--reports", str(root / "r"), "build"]) == 3
    assert "the Docker Engine does not answer" in capsys.readouterr().err


def test_the_untouched_copy_reaches_the_engine_and_fails_there_with_exit_3(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control: the same command with valid input does reach the (missing) engine."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    argv = ["--config", str(root / "variants.toml"), "--reports", str(root / "reports")]
    assert cli.main([*argv, "build", "--flavor", "runtime"]) == 3
    err = capsys.readouterr().err
    assert "the Docker Engine does not answer" in err and "Traceback" not in err


@pytest.mark.parametrize("stage", ["build", "summary"])
def test_a_reports_folder_that_is_a_file_is_refused_before_anything_runs(
    root: Path, stage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found only when the record is written, it would leave a built image without its record."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    (root / "a-file").write_text("x")
    for reports in (root / "a-file", root / "a-file" / "reports"):
        assert cli.main(["--config", str(root / "variants.toml"), "--reports", str(reports), stage]) == 2
        err = capsys.readouterr().err
        assert f"--reports {reports}: {root / 'a-file'} is not a folder" in err, err


def test_an_image_whose_record_names_an_undeclared_variant_is_named_with_the_record(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.factories import IMAGE, a_record
    from torchimg.model import record

    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    reports = root / "reports"
    _variants('cuda = "cpu"\n', 'cuda = "cpu"\nflavors = ["runtime"]\n')(root)
    record.Store(reports).write(a_record(variant="2.9.1-cpu", flavor="dev", image_id="sha256:" + "b" * 64))
    argv = ["--config", str(root / "variants.toml"), "--reports", str(reports), "test", "--image"]
    assert cli.main([*argv, f"localhost:5000/pytorch@sha256:{'b' * 64}"]) == 2  # 2.9.1-cpu has no dev
    assert "the dev flavor, which variant 2.9.1-cpu no longer declares" in capsys.readouterr().err
    path = record.Store(reports).write(a_record(variant="2.8.0-cu118"))
    argv = ["--config", str(root / "variants.toml"), "--reports", str(reports), "test", "--image"]
    assert cli.main([*argv, f"localhost:5000/pytorch@{IMAGE}"]) == 2
    err = capsys.readouterr().err
    assert "variant '2.8.0-cu118', which variants.toml does not declare" in err and path.name in err, err


@pytest.mark.parametrize("config", ["requirements", "variants.toml/x.toml", "."])
def test_a_variants_file_that_cannot_be_read_is_named(
    root: Path, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--config", str(root / config), "--reports", str(root / "reports"), "matrix"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read as the variants file" in err and "Traceback" not in err, err
    assert not (root / "reports").exists()


def test_an_option_given_twice_with_two_values_is_refused(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--repository A --repository B` would quietly mean B, with A never checked."""
    with pytest.raises(SystemExit) as exc:
        cli.main(
            ["--config", str(root / "variants.toml"), "push", "--repository", "BAD", "--repository", "x/y"]
        )
    assert exc.value.code == 2 and "--repository given 2 times" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--config", str(root / "variants.toml"), "push", "--forc"])  # no abbreviations
    assert "unrecognized arguments: --forc" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--reports", "--config"])
def test_an_empty_global_path_is_refused_not_read_as_the_current_folder(
    root: Path, flag: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    monkeypatch.chdir(root)
    other = "--config" if flag == "--reports" else "--reports"
    value = str(root / ("variants.toml" if other == "--config" else "reports"))
    assert cli.main([other, value, flag, "", "summary"]) == 2
    assert f"{flag} is empty" in capsys.readouterr().err
    assert not (root / "records").exists()


def test_a_device_as_the_variants_file_is_refused_not_read_forever(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["--config", "/dev/zero", "matrix"]) == 2
    assert "/dev/zero: cannot be read as the variants file (not a regular file)" in capsys.readouterr().err


def test_a_named_pipe_among_the_records_is_named_not_waited_on(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = root / "reports" / "records"
    records.mkdir(parents=True)
    os.mkfifo(records / f"{VARIANT}-runtime.json")
    argv = ["--config", str(root / "variants.toml"), "--reports", str(root / "reports"), "summary"]
    assert cli.main(argv) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_a_records_folder_that_is_a_loop_is_refused_before_any_stage(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Else `summary` said "no image built yet", and a build tagged its image, then failed to
    write the record."""
    records = root / "reports" / "records"
    records.parent.mkdir()
    records.symlink_to(records)
    argv = ["--config", str(root / "variants.toml"), "--reports", str(root / "reports"), "summary"]
    assert cli.main(argv) == 2
    assert f"{records} is not a folder" in capsys.readouterr().err


def test_a_file_where_an_images_reports_folder_goes_is_named(root: Path) -> None:
    from torchimg.errors import PipelineError
    from torchimg.model import variants
    from torchimg.stages import Image, Selection

    config = variants.load(root / "variants.toml")
    image = Image(config.variant(VARIANT), "runtime")
    (root / "reports").mkdir()
    (root / "reports" / f"{VARIANT}-runtime").write_text("")
    with pytest.raises(PipelineError, match="cannot make the reports folder") as exc:
        Selection(config, (image,), root / "reports").folder(image)
    assert exc.value.exit_code == 2


def test_the_summary_is_written_when_the_engine_does_not_answer(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """CI writes it after a failure too: the records say how far each image got."""
    from tests.factories import a_record
    from torchimg.model import record

    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    record.Store(root / "reports").write(a_record())
    argv = ["--config", str(root / "variants.toml"), "--reports", str(root / "reports"), "summary"]
    assert cli.main(argv) == 0
    assert "(engine not reached)" in capsys.readouterr().out


def test_a_pull_with_no_engine_says_the_engine_not_the_registry(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchimg.adapters import engine
    from torchimg.errors import ToolError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    with pytest.raises(ToolError, match="the Docker Engine does not answer") as exc:
        engine.pull("localhost:5000/pytorch@sha256:" + "a" * 64)
    assert "docker login" not in str(exc.value)


@pytest.mark.parametrize(
    ("version", "refused"), [("24.0.7", True), ("23.0.1", True), ("25.0.0", False), ("29.1.2", False)]
)
def test_an_engine_whose_buildkit_cannot_read_the_dockerfile_is_named(
    version: str, refused: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines before 25 refuse the whole Dockerfile ("Unknown flag: start-interval")."""
    from torchimg.adapters.engine import images
    from torchimg.errors import PipelineError

    monkeypatch.setattr(
        images, "server_version", lambda: version
    )  # an engine of that version cannot run here
    if refused:
        with pytest.raises(PipelineError, match=f"Docker Engine {version} is older than 25") as exc:
            images.require_dockerfile_support()
        assert exc.value.exit_code == 2  # the machine's configuration, not a failing tool
    else:
        images.require_dockerfile_support()


def test_lint_config_skips_an_absent_trivy_only_when_asked_and_never_a_wrong_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no trivy on it
    monkeypatch.setenv("TORCHIMG_TRIVY", " ")  # blank: unset
    assert cli.main(["lint-config", "--if-available"]) == 0
    assert "trivy config skipped: trivy not found" in capsys.readouterr().err
    assert cli.main(["lint-config"]) == 3
    monkeypatch.setenv("TORCHIMG_TRIVY", "/etc/passwd")  # named, and no program: never "absent"
    assert cli.main(["lint-config", "--if-available"]) == 2
    assert "is not an executable file" in capsys.readouterr().err


def _inspected(driver: str, *nodes: str) -> str:
    """`docker buildx inspect` as buildx 0.13+ prints it, with one block per node."""
    head = (
        f"Name:          b\nDriver:        {driver}\nLast Activity: 2026-12-07 18:45:53 +0000 UTC\n\nNodes:\n"
    )
    labels = "Labels:\n org.mobyproject.buildkit.worker.executor: oci\nGC Policy rule#0:\n All: false\n"
    return head + "\n".join(
        f"Name: {n}\nStatus: running\n{v}\n{labels}" for n, v in zip("abc", nodes, strict=False)
    )


@pytest.mark.parametrize(
    ("inspected", "problem"),
    [
        (_inspected("docker-container", "BuildKit version: v0.11.6"), "runs BuildKit 0.11"),
        (_inspected("docker-container", "Buildkit:  v0.10.4"), "runs BuildKit 0.10"),  # buildx < 0.13
        (_inspected("remote", "BuildKit version: v0.12.5"), None),
        (_inspected("kubernetes", "BuildKit version: v0.16.0", "BuildKit version: v0.18.1"), None),
        # every node of a multi-node builder: the build may land on any of them
        (
            _inspected("remote", "BuildKit version: v0.16.0", "BuildKit version: v0.11.6"),
            "runs BuildKit 0.11",
        ),
        # a version that cannot be checked is not passed
        (_inspected("docker-container", "BuildKit version: v0.0.0+unknown"), "(a) that reports no BuildKit"),
        (_inspected("kubernetes", "BuildKit version: 3ecd4a8"), "reports no BuildKit version (3ecd4a8)"),
        (_inspected("remote", "Platforms: linux/amd64"), "reports no BuildKit version (none)"),
        ("Name: b\nDriver: remote\n", "lists no node"),
    ],
)
def test_a_builder_that_cannot_be_shown_to_read_the_dockerfile_is_said_before_the_build(
    inspected: str, problem: str | None
) -> None:
    """An old BuildKit would fail parsing the Dockerfile (HEALTHCHECK --start-interval) after
    the stages before it ran."""
    found = engine.buildkit_problem(inspected)
    assert found == problem if problem is None else problem in str(found)
    assert len(engine.builder_nodes(inspected)) == inspected.count("Status: running")


def test_a_setting_from_another_variants_file_is_named_by_that_file(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-such-docker.sock")
    other = root / "other.toml"
    other.write_text(
        (root / "variants.toml")
        .read_text()
        .replace(
            'repository = "localhost:5000/pytorch"',
            'repository = "localhost:5000/pytorch"\nbuilder = "a b"',
            1,
        )
    )
    assert cli.main(["--config", str(other), "--reports", str(root / "reports"), "build"]) == 2
    err = capsys.readouterr().err
    assert "other.toml builder 'a b'" in err, err
