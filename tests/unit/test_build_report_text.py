"""The per-platform build report: one row per platform, emulated time only where emulated."""

from pathlib import Path

import pytest

from torchimg import build_report_text


def _flavor(seconds: float, run: float, size: int) -> dict[str, object]:
    return {
        "seconds": seconds,
        "image_id": "sha256:x",
        "target_run_seconds": run,
        "steps": [{"name": "[linux/arm64 python 2/2] RUN apt-install python3", "seconds": run}],
        "uncompressed": size * 2,
        "compressed": size,
        "layers": {},
    }


def test_platforms_report_rows_and_ratio(tmp_path: Path) -> None:
    report = {
        "variant": "2.15.0-cu132",
        "date": "2026-11-27",
        "engine": "26.1.5",
        "base": "local/debian:trixie",
        "platforms": {
            "linux/amd64": {
                "emulated": False,
                "runtime": _flavor(100.0, 10.0, 4_000_000_000),
                "dev": _flavor(50.0, 5.0, 4_200_000_000),
                "shared_bytes": 4_000_000_000,
                "dev_shares_every_runtime_layer": True,
            },
            "linux/arm64": {
                "emulated": True,
                "runtime": _flavor(240.0, 120.0, 4_100_000_000),
                "dev": _flavor(60.0, 30.0, 4_300_000_000),
                "shared_bytes": 4_100_000_000,
                "dev_shares_every_runtime_layer": True,
            },
        },
    }
    md = build_report_text.write(report, tmp_path).read_text()
    assert (tmp_path / "build-report-platforms.json").exists()
    amd64 = next(line for line in md.splitlines() if line.startswith("| linux/amd64 "))
    arm64 = next(line for line in md.splitlines() if line.startswith("| linux/arm64 "))
    assert "| False | 100.0 | - |" in amd64 and amd64.endswith("| 1.00 |")
    assert "| True | 240.0 | 120.0 |" in arm64 and arm64.endswith("| 2.00 |")
    assert "4.10 GB" in arm64 and "8.20 GB" in arm64


def _build(seconds: float, pip: float = 0.0, export: float = 0.0, unpack: float = 0.0) -> dict[str, object]:
    steps = [
        {"name": "[builder 2/2] RUN sh /tmp/image/install-wheels", "state": "DONE", "seconds": pip},
        {"name": "[runtime 4/6] RUN clamped apt-install g++", "state": "DONE", "seconds": 9.0},
        {"name": "  exporting layers", "state": "DONE", "seconds": export},
        {"name": "  unpacking", "state": "DONE", "seconds": unpack},
    ]
    return {"seconds": seconds, "pip_ran": pip > 0, "torch_downloaded": pip > 0, "steps": steps}


def _sizes(n: int) -> dict[str, object]:
    layer = {"blob": "abc", "what": "torch", "uncompressed": n, "tar": n, "compressed": n // 2}
    return {"uncompressed": n, "tar": n, "compressed": n // 2, "layers": [layer], "breakdown": {"torch": n}}


def test_the_report_reads_the_goals_against_the_empty_engine_figures(tmp_path: Path) -> None:
    report: dict[str, object] = {
        "variant": "2.9.1-cu128",
        "date": "2026-11-28",
        "engine": "26.1.5",
        "base": "local/debian:trixie",
        "compression": "zstd",
        "other_compression": "gzip",
        "cold_runtime": _build(200.0, pip=90.0, export=60.0, unpack=30.0),
        "cold_again": _build(201.0, pip=91.0),
        "cold_other": _build(300.0, pip=90.0, export=150.0, unpack=60.0) | {"same_layers": True},
        "cold_dev": _build(50.0, pip=30.0),
        "noop_runtime": _build(1.0),
        "noop_dev": _build(1.0),
        "dev_change": _build(20.0, pip=10.0),
        "other_runtime": _build(150.0),
        "other_dev": _build(20.0),
        "cache_export_runtime": _build(30.0),
        "cache_import_runtime": _build(38.0) | {"same_image_id": True},
        "first_container_zstd": {"pull_seconds": 30.0, "seconds": 40.0},
        "first_container_gzip": {"pull_seconds": 60.0, "seconds": 70.0},
        "cold_fast": _build(180.0, pip=90.0, export=40.0, unpack=30.0)
        | {
            "level": 1,
            "registry_bytes": 3_900_000_000,
            "same_layers": True,
        },
        "first_container_fast": {"pull_seconds": 31.0, "seconds": 41.0},
        "naive": {"seconds": 400.0},
        "registry": {
            "runtime_zstd": 3_600_000_000,
            "dev_zstd": 3_800_000_000,
            "runtime_gzip": 4_300_000_000,
            "dev_gzip": 4_500_000_000,
            "shared_layers": 9,
            "runtime_layers": 9,
            "dev_shares_every_runtime_layer": True,
            "shared_bytes": 3_600_000_000,
            "dev_adds_bytes": 200_000_000,
            "dev_change_pushed_bytes": 1_000_000,
            "dev_change_new_layers": 1,
        },
        "size_runtime": _sizes(7_000_000_000),
        "size_dev": _sizes(7_500_000_000),
        "size_naive": _sizes(8_000_000_000),
        "reproducible": {"same_image_id": True, "differing_layers": []},
    }
    md = build_report_text.write(report, tmp_path).read_text()
    goals = [line for line in md.splitlines() if line.startswith("| cold runtime build, empty engine")]
    assert goals == [
        "| cold runtime build, empty engine | 120 s | 200.0 s (pip 90.0 s, exporting layers 60.0 s, "
        "unpacking 30.0 s) | no |"
    ]
    cache = next(line for line in md.splitlines() if line.startswith("| rebuild from the registry cache,"))
    assert "38.0 s = 19.0% of cold; pip ran: False" in cache and cache.endswith("| yes |")
    pull = next(line for line in md.splitlines() if line.startswith("| pull the runtime image"))
    assert "zstd: 40.0 s (pull 30.0 s), gzip: 70.0 s" in pull and pull.endswith("| yes |")
    assert "| zstd (default) | 200.0 | 60.0 | 30.0 | 3.60 GB | 3.80 GB | 30.0 | 40.0 |" in md
    assert "| gzip | 300.0 | 150.0 | 60.0 | 4.30 GB | 4.50 GB | 60.0 | 70.0 |" in md
    assert "| zstd level 1 | 180.0 | 40.0 | 30.0 | 3.90 GB | - | 31.0 | 41.0 |" in md
    assert "| cold, runtime, zstd at its fastest level (another empty engine) | 180.0 | True | True |" in md
    assert "the level 1 build: True." in md
    floors = [line for line in md.splitlines() if line.startswith("- ")]
    assert (
        len(floors) == 1
        and floors[0].startswith("- Cold build: pip 90.0 s")
        and "180.0 s of 200.0 s" in floors[0]
    )


def test_a_compression_level_is_checked_where_options_are_made() -> None:
    from torchimg.errors import PipelineError
    from torchimg.stages import build

    assert build.Options(repository="r", compression_level=1).compression_level == 1
    for compression, level in (("zstd", 0), ("zstd", 23), ("gzip", 10), ("gzip", 0)):
        with pytest.raises(PipelineError, match=f"compression level {level}: not a {compression} level"):
            build.Options(repository="r", compression=compression, compression_level=level)


def test_json_differences_name_each_differing_path() -> None:
    from torchimg.stages.build_report import json_differences

    a = {"config": {"digest": "x"}, "layers": [{"d": 1}, {"d": 2}], "history": [{"created": "t0"}]}
    b = {
        "config": {"digest": "y"},
        "layers": [{"d": 1}, {"d": 3}],
        "history": [{"created": "t0"}],
        "extra": 1,
    }
    assert json_differences(a, b) == ["config.digest", "extra", "layers[1].d"]
    assert json_differences({"layers": [1, 2]}, {"layers": [1]}) == ["layers (length 2 != 1)"]
    assert json_differences(1, 2) == ["(document)"]
    assert json_differences(a, a) == []
