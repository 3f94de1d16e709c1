"""Extra CA bundle and private-index credentials: handed to BuildKit as secrets, never layers.

Corporate networks that intercept TLS need their CA inside the build; it must not end up in
the image. BuildKit secrets are mounted for one RUN step only and are not part of any layer.
"""

import netrc as netrc_files
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from torchimg.errors import PipelineError

# Where an extra CA bundle is looked for when --ca-bundle is not given, in order: the
# pipeline's own variable, then the ones pip and requests already honour on the host.
CA_ENV = ("TORCHIMG_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class Credentials:
    ca_bundle: Path | None = None
    netrc: Path | None = None

    def buildkit_secrets(self) -> list[str]:
        """`--secret` values for buildx: ids `ca` and `netrc`, as docker/Dockerfile mounts them."""
        out = []
        if self.ca_bundle:
            out.append(f"id=ca,src={self.ca_bundle}")
        if self.netrc:
            out.append(f"id=netrc,src={self.netrc}")
        return out


def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    try:
        found = p.is_file()
    except OSError:  # a name too long, a loop
        found = False
    if not found:
        raise PipelineError(f"{what} {path[:200]} is not a readable file", f"fix the path given as {what}")
    return p.resolve()


def _netrc(path: str, what: str) -> Path:
    """A .netrc pip can read (machine/login/password entries): a wrong file fails here, naming
    where it came from, not as a pip error inside the build."""
    p = _existing(path, what)
    try:
        found = netrc_files.netrc(str(p)).hosts
    except netrc_files.NetrcParseError as exc:  # its message may quote a token: a password
        raise PipelineError(
            f"{what} {path[:200]} is not a .netrc file (unreadable at line {exc.lineno})",
            f"point {what} at a file of `machine HOST login USER password TOKEN` lines",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(
            f"{what} {path[:200]} cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})",
            f"point {what} at a file of `machine HOST login USER password TOKEN` lines",
        ) from None
    if not found:
        raise PipelineError(
            f"{what} {path[:200]} names no machine",
            f"point {what} at a file of `machine HOST login USER password TOKEN` lines",
        )
    return p


def _ca_bundle(path: str, what: str) -> Path:
    """A CA bundle that TLS can load (PEM certificates): a wrong file fails here, naming where
    it came from, not as an SSL error in the middle of a lock or a refresh."""
    p = _existing(path, what)
    try:
        ssl.create_default_context(cafile=str(p))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise PipelineError(
            f"{what} {path} is not a CA bundle TLS can load ({getattr(exc, 'reason', None) or exc})",
            f"point {what} at a PEM file of CA certificates",
        ) from None
    return p


def resolve(ca_bundle: str | None, netrc: str | None) -> Credentials:
    """Explicit options first, then the environment (see CA_ENV and TORCHIMG_NETRC). An empty
    option is refused, not read as "use the environment"; an empty variable counts as unset."""
    for flag, value in (("--ca-bundle", ca_bundle), ("--netrc", netrc)):
        if value is not None and not value.strip():
            raise PipelineError(f"{flag} is empty", f"give {flag} a file's path, or leave it out")
    ca = None
    if ca_bundle:
        ca = _ca_bundle(ca_bundle, "--ca-bundle")
    else:
        for var in CA_ENV:
            if os.environ.get(var, "").strip():  # a blank one counts as unset, as elsewhere
                ca = _ca_bundle(os.environ[var], f"${var}")
                break
    if netrc:
        return Credentials(ca, _netrc(netrc, "--netrc"))
    env = os.environ.get("TORCHIMG_NETRC", "")
    return Credentials(ca, _netrc(env, "$TORCHIMG_NETRC") if env.strip() else None)
