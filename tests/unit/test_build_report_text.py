"""The per-platform build report: one row per platform, emulated time only where emulated."""

from pathlib import Path

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
