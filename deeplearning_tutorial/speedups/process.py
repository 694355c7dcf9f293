"""The one process-wide setting the tutorial programs make: freed large blocks stay in the heap.

Each LeNet minibatch allocates and frees large temporaries.  glibc returns
such blocks to the system (they are mmap'ed) and the next minibatch pays the
page faults again.  :func:`keep_freed_memory` tells glibc to
keep them (``mallopt``).  It changes the whole process, so only the tutorial
programs' ``main`` calls it; a library user may call it in their own program.
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Keep freed large blocks in glibc's heap for the rest of the process.

    Nothing is done where the C library is not glibc, or where the user
    already chose through ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_``.

    Returns
    -------
    bool
        Whether the setting was made.
    """
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return False
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    return True
