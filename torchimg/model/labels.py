"""Every image label key, defined once: the OCI annotations and this project's own.

The build writes them, the test checks the image against them, the release manifest and
`push` read them back; nobody spells a key twice.
"""

OCI = "org.opencontainers.image."
TITLE = OCI + "title"
VERSION = OCI + "version"
REVISION = OCI + "revision"
CREATED = OCI + "created"
SOURCE = OCI + "source"
BASE_NAME = OCI + "base.name"
BASE_DIGEST = OCI + "base.digest"

OURS = "io.torchimg."  # `inv clean` recognises this project's images by this prefix
BUILT_BY = OURS + "built-by"
VARIANT = OURS + "variant"
FLAVOR = OURS + "flavor"
TORCH = OURS + "torch.version"
CUDA_TAG = OURS + "cuda.tag"
CUDA = OURS + "cuda.version"
CUDNN = OURS + "cudnn.version"
NCCL = OURS + "nccl.version"
DRIVER_MIN = OURS + "driver.min"
PYTHON = OURS + "python.version"
BASE_PINNED = OURS + "base.pinned"
RELEASE_OF = OURS + "release-of"  # on the release files beside an image: repository@digest

# What the probe checks inside the image, and what a release manifest lists: name -> key.
PROBED = {"torch": TORCH, "cuda": CUDA, "cudnn": CUDNN, "nccl": NCCL, "driver_min": DRIVER_MIN}
VERSIONS = {**PROBED, "python": PYTHON}


def lock_sha256(stem: str) -> str:
    """The key holding the sha256 of one lockfile (runtime, dev) the image was built from."""
    return f"{OURS}lock.{stem}.sha256"
