"""Reading one image file that may come from anyone: the checks image folders and ``graphc predict`` share.

- Only a regular file is read. A FIFO, a socket or a device named ``x.png`` would block the read
  forever or never end (``/dev/zero``), so the file is opened without blocking (``O_NONBLOCK``)
  and checked with ``fstat`` on the open descriptor, so it cannot be swapped between a check and
  the read. A symbolic link is followed (to a regular file): where links may lead is the caller's
  rule (an image folder refuses links out of its root).
- An image larger than PIL's ``Image.MAX_IMAGE_PIXELS`` (89.5 million pixels) is refused from
  its header, before it is decoded: a few-kilobyte PNG can claim gigabytes (a decompression bomb).

Both raise RunError naming the file and saying what to do.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

from graphc.errors import RunError

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def read_image_file(path: str | Path) -> bytes:
    """The bytes of the image file ``path``, refusing anything but a regular file and a
    decompression bomb (see the module's docstring). OSError (missing, no permission) passes
    through for the caller's message."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
            raise RunError(f"{path} is {kind}, not an image file; graphc reads only regular files. Give an image file.")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    finally:
        os.close(fd)
    refuse_bombs(str(path), data)
    return data


def refuse_bombs(path: str, data: bytes) -> None:
    """Read the image's size from its header (PIL opens lazily) and refuse one over
    ``Image.MAX_IMAGE_PIXELS`` before anything is decoded."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # PIL warns between the limit and twice it: refused below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError as exc:  # PIL refuses twice the limit itself
        found = str(exc).split("(", 1)[-1].split(")", 1)[0]
    except Exception:  # not an image PIL knows, or a torn header: the decoder says why
        return
    else:
        if limit is None or width * height <= limit:
            return
        found = f"{width}x{height} = {width * height:,} pixels"
    raise RunError(
        f"{path} claims {found}, more than the {limit:,} pixels graphc decodes (PIL's Image.MAX_IMAGE_PIXELS): "
        "it is too large to load, or a decompression bomb (a small file that expands to gigabytes). "
        "Replace it with a smaller image or delete it."
    )
