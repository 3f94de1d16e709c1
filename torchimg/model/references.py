"""Image references checked against Docker's grammar before any engine or registry call.

The grammar is distribution's (github.com/distribution/reference, regexp.go): a name of
lowercase path components with an optional registry host and port, an optional tag, an
optional digest. A typo such as `Localhost:5000/PyTorch` or `host:port/a..b` is refused here
with the fix, instead of failing deep inside BuildKit or after a tag was pushed.
"""

import re

from torchimg.errors import PipelineError

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

REPOSITORY = re.compile(_NAME, re.ASCII)
IMAGE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?", re.ASCII)
_MAX_NAME = 255


def _refuse(value: str, what: str, shape: str) -> PipelineError:
    return PipelineError(
        f"{what} {value!r} is not a valid image {shape} (Docker's reference grammar: lowercase "
        "path components separated by '/', '.', '_' or '-', an optional host[:port] first)",
        f"fix {what}, e.g. localhost:5000/pytorch or ghcr.io/org/pytorch",
    )


def _valid_name(name: str) -> bool:
    """Docker reads the first component as a registry host only when it has a '.' or ':' or
    is `localhost`; otherwise it is a path component, which must be lowercase."""
    first, _, rest = name.partition("/")
    is_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
    port = re.search(r":([0-9]+)$", first) if is_host and not first.endswith("]") else None
    if port and not (len(port[1]) <= 5 and 1 <= int(port[1]) <= 65535):
        return False  # not a TCP port: Docker would refuse it only when it tries to connect
    return len(name) <= _MAX_NAME and (is_host or name == name.lower())


def repository(value: str, what: str) -> str:
    """A repository: name only, no tag or digest (e.g. --repository, --cache-repository)."""
    if not REPOSITORY.fullmatch(value) or not _valid_name(value):
        raise _refuse(value, what, "repository (no tag, no digest)")
    return value


def image(value: str, what: str) -> str:
    """An image reference: name, optional tag, optional digest (e.g. --base). A digest is
    sha256:<64 lowercase hex>, the only one registries and this pipeline use."""
    found = IMAGE.fullmatch(value)
    if not found or not _valid_name(found["name"]):
        raise _refuse(value, what, "reference")
    if found["digest"] and not re.fullmatch(r"sha256:[0-9a-f]{64}", found["digest"]):
        raise PipelineError(
            f"{what} {value!r}: digest {found['digest'][:80]!r} is not sha256:<64 lowercase hex digits>",
            f"fix {what}: REPOSITORY@sha256:<64 hex>, as `docker buildx imagetools inspect` shows it",
        )
    return value


def digest_of(value: str, what: str) -> str:
    """The sha256 digest of an image reference that must name one (`REPOSITORY@sha256:...`)."""
    image(value, what)
    found = IMAGE.fullmatch(value)
    digest = found["digest"] if found else None
    if not digest or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise PipelineError(
            f"{what} {value!r} does not name a sha256 digest: a tag could name another image by now",
            f"pass REPOSITORY@sha256:<64 hex digits>, e.g. {what} localhost:5000/pytorch-staging@sha256:…",
        )
    return digest


def canonical(repo: str) -> str:
    """A repository as the registry sees it: Docker Hub's implicit host and `library/`, and
    127.0.0.1 for localhost, spelled out; so two spellings of one repository compare equal."""
    first, _, rest = repo.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        first, rest = "docker.io", repo
    if first == "docker.io" and "/" not in rest:
        rest = f"library/{rest}"
    host, _, port = first.partition(":")
    host = "localhost" if host == "127.0.0.1" else host
    return f"{host}{':' + port if port else ''}/{rest}"
