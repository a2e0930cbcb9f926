"""Writing a file so that it appears whole or not at all.

The data goes to a temporary file in the target's directory, is flushed and fsynced, and is
then renamed over the target. A process killed part-way leaves either the old file (or none)
or the complete new one, never a partial file; a failed write removes its temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, an fsync and a rename.

    ``str`` is written in text mode, ``bytes`` in binary mode. The directory of ``path`` must
    exist.
    """
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "w" if isinstance(data, str) else "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
