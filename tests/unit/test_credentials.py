"""Extra CA bundle and netrc go to BuildKit as secrets, found from options or environment."""

from pathlib import Path

import certifi
import pytest

from torchimg.errors import PipelineError
from torchimg.model import credentials


def test_explicit_option_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    monkeypatch.setenv("PIP_CERT", "/nonexistent")
    creds = credentials.resolve(str(ca), None)
    assert creds.buildkit_secrets() == [f"id=ca,src={ca}"]


def test_environment_fallback_and_bad_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*credentials.CA_ENV, "TORCHIMG_NETRC"):
        monkeypatch.delenv(var, raising=False)
    assert credentials.resolve(None, None).buildkit_secrets() == []
    netrc = tmp_path / "netrc"
    netrc.write_text("machine x login y password z\n")
    monkeypatch.setenv("TORCHIMG_NETRC", str(netrc))
    assert credentials.resolve(None, None).buildkit_secrets() == [f"id=netrc,src={netrc}"]
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "missing.pem"))
    with pytest.raises(PipelineError, match=r"\$PIP_CERT .*missing.pem is not a readable file"):
        credentials.resolve(None, None)


@pytest.mark.parametrize("text", ["junk\n", ""])
def test_a_ca_bundle_tls_cannot_load_is_named_with_where_it_came_from(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in (*credentials.CA_ENV, "TORCHIMG_NETRC"):
        monkeypatch.delenv(var, raising=False)
    bad = tmp_path / "ca.pem"
    bad.write_text(text)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bad))
    with pytest.raises(PipelineError, match=r"\$REQUESTS_CA_BUNDLE .* is not a CA bundle TLS can load"):
        credentials.resolve(None, None)
    with pytest.raises(PipelineError, match=r"--ca-bundle .* is not a CA bundle"):
        credentials.resolve(str(bad), None)
    monkeypatch.setenv("TORCHIMG_NETRC", str(tmp_path / "nope"))
    with pytest.raises(PipelineError, match=r"\$TORCHIMG_NETRC .* is not a readable file"):
        credentials.resolve(str(certifi.where()), None)
