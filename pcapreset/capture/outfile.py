"""outfile: open an output file without following a planted link.

``--write``, ``--export`` and ``--plot`` write into places that may be shared
(``/tmp``, a sticky directory): someone else may have put a symbolic link
there under the name pcapreset is about to write, pointing at a file of the
user's (or, when run as root, of the system's). :func:`open_output` opens the
name itself and nothing it points to: a symbolic link (``O_NOFOLLOW``), a
FIFO or device, or a regular file with other hard links is refused with an
:class:`OSError`; an existing regular file the user named is overwritten.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO


def open_output(path: str | os.PathLike) -> IO[bytes]:
    """``open(path, "wb")``, refusing anything but a regular file of its own."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link (not followed)") from None
        if e.errno == errno.ENXIO:
            raise OSError(errno.ENXIO, "is a FIFO or device, not a file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "is a FIFO or device, not a file")
        if st.st_nlink > 1:
            raise OSError(errno.EMLINK, "has other hard links (not overwritten)")
        os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise
