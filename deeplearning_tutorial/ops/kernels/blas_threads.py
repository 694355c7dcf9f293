"""The BLAS inside the kernels: single-threaded while a kernel runs, untouched otherwise.

The convolution kernels split a minibatch into chunks of images and process
them on all threads at once, each thread multiplying its own chunk with a
BLAS call.  A multi-threaded BLAS would serialise those concurrent calls, and
its idle threads would spin on the cores the kernels' threads need.  So each
kernel that calls BLAS sets the BLAS's thread count to one when it starts and
gives the previous count back when it returns (``csrc/kernels.c``): between
kernel calls, the rest of the program sees the BLAS exactly as it was.

The kernels call the BLAS that SciPy exports (``scipy.linalg.cython_blas``,
which Numba's ``np.dot`` uses too).  In the PyPI wheels that is SciPy's own
copy of OpenBLAS, a different library from NumPy's.  Its thread count is
changed through OpenBLAS's own functions; a BLAS without them (where they are
not found) is called as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


# The Fortran name of sgemm as SciPy's BLAS exports it, by build: plain, and the
# prefixed symbols of the scipy-openblas wheels.
_SGEMM_SYMBOLS = ("sgemm_", "scipy_sgemm_", "scipy_sgemm_64_", "sgemm")
# OpenBLAS's thread-count functions, by the same builds' prefixes.
_THREAD_FUNCTION_PREFIXES = ("", "scipy_", "scipy_64_")


def numba_blas_path() -> str | None:
    """Path of the BLAS library Numba's ``np.dot`` and the kernels end up in, or None where it
    cannot be found.

    Numba calls the wrappers of ``scipy.linalg.cython_blas``; looking ``sgemm``
    up from that module's handle searches it and the libraries it links, in
    load order, so the symbol found is the one its wrappers call.
    """
    try:
        from scipy.linalg import cython_blas

        module = ctypes.CDLL(cython_blas.__file__)
        libdl = ctypes.CDLL(ctypes.util.find_library("dl") or "libc.so.6")
    except (ImportError, OSError):
        return None
    for symbol in _SGEMM_SYMBOLS:
        try:
            address = ctypes.cast(getattr(module, symbol), ctypes.c_void_p)
        except AttributeError:
            continue
        info = _DlInfo()
        if libdl.dladdr(address, ctypes.byref(info)) and info.dli_fname:
            return os.path.realpath(info.dli_fname.decode())
    return None


def thread_functions() -> tuple[int | None, int | None]:
    """Addresses of the kernels' BLAS's ``openblas_set_num_threads`` and
    ``openblas_get_num_threads``, or (None, None) where it has no such functions."""
    path = numba_blas_path()
    if path is None:
        return None, None
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None, None
    for prefix in _THREAD_FUNCTION_PREFIXES:
        try:
            set_threads = getattr(library, f"{prefix}openblas_set_num_threads")
            get_threads = getattr(library, f"{prefix}openblas_get_num_threads")
        except AttributeError:
            continue
        return (ctypes.cast(set_threads, ctypes.c_void_p).value, ctypes.cast(get_threads, ctypes.c_void_p).value)
    return None, None
