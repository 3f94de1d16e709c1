"""The record store: typed, versioned, locked read-modify-writes, atomic replaces, clear errors."""

import json
import multiprocessing
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.factories import IMAGE, a_record
from torchimg.errors import BAD_INPUT, PipelineError
from torchimg.model import record

STAGE_SECTIONS: dict[str, Callable[[], record.Section]] = {
    "build": lambda: record.Built(ok=True, image_id=IMAGE, seconds=1.0, cache=True, builder="default"),
    "test": lambda: record.Tested(ok=True, image_id=IMAGE, gpu=False),
    "scan": lambda: record.Scanned(
        ok=True, image_id=IMAGE, vulnerabilities="ran", vuln_db=record.VulnDb(available=True, how="test")
    ),
    "push": lambda: record.Pushed(
        ok=True, image_id=IMAGE, repository="localhost:5000/x", digest=IMAGE, references=[], manifest="m"
    ),
}


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def store(reports: Path) -> record.Store:
    return record.Store(reports)


def test_a_record_round_trips_with_its_schema_version(store: record.Store) -> None:
    path = store.write(a_record())
    assert json.loads(path.read_text())["schema_version"] == record.SCHEMA_VERSION
    assert store.read("2.9.1-cu128", "runtime") == a_record()
    assert not list(path.parent.glob("*.tmp")), "no temp file left behind"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty, truncated or not JSON"),
        (b'{"variant": "2.9.1-cu128", "fla', "empty, truncated or not JSON"),
        (b"\xff\xfe garbage", "empty, truncated or not JSON"),
        (b"[]", "not a record of this pipeline"),
        (b"{}", "not a record of this pipeline"),
        (b'{"variant": "x", "image_id": "sha256:1", "tags": []}', "record schema 1"),
        (b'{"schema_version": 2, "variant": "x"}', "not a valid record"),
        (b'{"schema_version": 3}', "record schema 3"),
        (b"[" * 100000 + b"]" * 100000, "empty, truncated or not JSON"),
        (b'{"schema_version": 2, "x": ' + b"9" * 5000 + b"}", "empty, truncated or not JSON"),  # 4300+ digits
    ],
)
def test_a_bad_record_is_a_clear_error_naming_the_file_and_the_fix(
    store: record.Store, reports: Path, content: bytes, message: str
) -> None:
    path = reports / "records" / "2.9.1-cu128-runtime.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(PipelineError) as exc:
        store.read("2.9.1-cu128", "runtime")
    assert message in exc.value.what
    assert "2.9.1-cu128-runtime.json" in exc.value.what
    assert "nox -s build -- --variant 2.9.1-cu128 --flavor runtime" in exc.value.fix
    assert "remove" in exc.value.fix
    assert exc.value.exit_code == BAD_INPUT


def test_a_record_copied_over_another_images_file_is_refused(store: record.Store, reports: Path) -> None:
    other = a_record()
    other.variant = "2.9.1-cpu"
    path = store.write(other)
    path.rename(path.with_name("2.9.1-cu128-runtime.json"))
    with pytest.raises(PipelineError, match=r"describes 2\.9\.1-cpu runtime, not 2\.9\.1-cu128 runtime"):
        store.read("2.9.1-cu128", "runtime")


@pytest.mark.parametrize(("field", "value"), [("flavor", "weird"), ("image_id", "not-a-digest")])
def test_a_record_with_an_unknown_flavor_or_a_malformed_image_id_is_refused(
    store: record.Store, field: str, value: str
) -> None:
    rec = a_record()
    setattr(rec, field, value)
    path = store.write(rec)
    if field == "flavor":
        path = path.rename(path.with_name("2.9.1-cu128-weird.json"))
    with pytest.raises(PipelineError, match="is not a valid record"):
        record.load(path)
    assert [p for p in store.folder.iterdir() if p.name.startswith(".")]  # its lock file is hidden
    path.unlink()
    (store.folder / ".hidden.json").write_text("{}")
    (store.folder / "notes.json").write_text('{"a": 1}')  # not a record's name: passed over
    assert store.every() == []  # hidden files (locks, temp files, an editor's) are never records


@pytest.mark.parametrize(
    ("section", "field", "value", "named"),
    [
        ("push", "digest", "latest", "push.digest"),
        ("push", "repository", "Evil Repo", "push.repository"),
        ("stage", "digest", "sha256:abc", "stage.digest"),
        ("build_args", "SOURCE_DATE_EPOCH", "abc", "SOURCE_DATE_EPOCH"),
        ("build_args", "SOURCE_DATE_EPOCH", "9" * 5000, "SOURCE_DATE_EPOCH"),  # past int()'s digit limit
    ],
)
def test_what_later_stages_act_on_is_checked_when_a_record_is_read(
    store: record.Store, section: str, field: str, value: str, named: str
) -> None:
    """A digest CI would sign, a repository it would push to, the date tags carry."""
    rec = a_record()
    if section == "build_args":
        rec.inputs.build_args[field] = value
    else:
        sections = {
            "push": record.Pushed(ok=True, image_id=IMAGE, repository="localhost:5000/pytorch", digest=IMAGE,
                                  references=[], manifest="m.json"),
            "stage": record.Staged(ok=True, image_id=IMAGE, repository="localhost:5000/pytorch-staging",
                                   digest=IMAGE, reference="localhost:5000/pytorch-staging:x"),
        }  # fmt: skip
        setattr(sections[section], field, value)
        setattr(rec, section, sections[section])
    path = store.write(rec)
    with pytest.raises(PipelineError, match=named):
        record.load(path)


def test_a_record_without_tags_is_refused(store: record.Store, reports: Path) -> None:
    path = store.write(a_record())
    path.write_text(
        path.read_text().replace(
            '"tags": [\n    "localhost:5000/pytorch:2.9.1-cu128-runtime"\n  ]', '"tags": []'
        )
    )
    with pytest.raises(PipelineError, match="not a valid record"):
        store.read("2.9.1-cu128", "runtime")


def test_a_section_about_another_image_is_not_filed(store: record.Store) -> None:
    store.write(a_record())
    other = record.Tested(ok=True, image_id="sha256:" + "b" * 64, gpu=False)
    with pytest.raises(PipelineError, match="rebuilt meanwhile"):
        store.save_section("2.9.1-cu128", "runtime", "test", other)
    saved = store.read("2.9.1-cu128", "runtime")
    assert saved is not None and saved.test is None


def test_passed_needs_the_same_image() -> None:
    rec = a_record()
    rec.test = record.Tested(ok=True, image_id="sha256:" + "b" * 64, gpu=False)
    assert rec.passed("build") and not rec.passed("test") and not rec.passed("scan")


def _writer(reports: str, stage: str, worker: int, rounds: int) -> None:
    store = record.Store(Path(reports))

    def change(n: int) -> Callable[[record.Record], None]:
        def add(rec: record.Record) -> None:
            section = rec.section(stage) or STAGE_SECTIONS[stage]()
            section.problems.append(f"w{worker}-{n}")
            setattr(rec, stage, section)

        return add

    for n in range(rounds):
        store.modify("2.9.1-cu128", "runtime", change(n))


def _reader(reports: str, reads: int, bad: "multiprocessing.Queue[str]") -> None:
    store = record.Store(Path(reports))
    for _ in range(reads):
        try:
            store.read("2.9.1-cu128", "runtime")
        except PipelineError as exc:
            bad.put(exc.what)
            return


def test_eight_writers_on_four_stages_lose_no_update_and_every_read_parses(
    store: record.Store, reports: Path
) -> None:
    store.write(a_record())
    rounds, stages = 200, list(STAGE_SECTIONS)
    ctx = multiprocessing.get_context("fork")
    bad: multiprocessing.Queue[str] = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(reports), stages[w % 4], w, rounds)) for w in range(8)]
    reader = ctx.Process(target=_reader, args=(str(reports), 3000, bad))
    for p in [*writers, reader]:
        p.start()
    for p in [*writers, reader]:
        p.join(timeout=300)
        assert p.exitcode == 0
    assert bad.empty(), bad.get()
    saved = store.read("2.9.1-cu128", "runtime")
    assert saved is not None
    for w in range(8):
        section = saved.section(stages[w % 4])
        assert section is not None
        mine = [p for p in section.problems if p.startswith(f"w{w}-")]
        assert mine == [f"w{w}-{n}" for n in range(rounds)], f"writer {w} lost updates"


@pytest.mark.parametrize(
    "tag", ["a|b\n| evil |", "localhost:5000/pytorch", "x:1@sha256:" + "a" * 64, "UP/x:1"]
)
def test_a_record_whose_tags_are_not_repository_tag_is_refused(store: record.Store, tag: str) -> None:
    """Its tags are given to the engine (inv clean untags them) and printed in Markdown tables."""
    path = store.write(a_record())
    data = json.loads(path.read_text())
    data["tags"] = [tag]
    path.write_text(json.dumps(data))
    with pytest.raises(PipelineError, match="tags"):
        store.read("2.9.1-cu128", "runtime")
