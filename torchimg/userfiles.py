"""Reading the files a user names or may have replaced (the variants file, the allowlist,
records): only a regular file, and only up to a size such a file never reaches. A FIFO would
block the read forever, a device such as /dev/urandom would never end."""

import errno
import os
import stat
from pathlib import Path


def read(path: Path, limit: int) -> bytes:
    """The file's bytes. Raises OSError (with strerror) for anything but a regular file of at
    most `limit` bytes, as for a file that cannot be read: callers already name those. Opened
    without blocking and checked on the open file: a FIFO swapped in after a check cannot hang."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit // 2**20} MiB")
    return data
