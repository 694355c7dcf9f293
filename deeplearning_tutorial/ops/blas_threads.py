"""One thread pool: the BLAS that the kernels and Numba call gets a single thread.

The convolution kernels split a minibatch into chunks of images and process
them on all threads at once, each thread multiplying its own chunk with a
BLAS call.  A multi-threaded BLAS would serialise those concurrent calls, and
its idle threads would spin on the cores the kernels' threads need: measured
here, a LeNet training minibatch took 705 ms that way against 129 ms with a
single-threaded BLAS.

The C kernels and Numba's ``np.dot`` call the BLAS that SciPy exports
(``scipy.linalg.cython_blas``).  In the PyPI wheels that is SciPy's own copy
of OpenBLAS, a different library from NumPy's, so NumPy's products elsewhere
in the program keep all their threads; the NUMBA backend's ``Dot`` nodes split
large products over Numba's threads instead (``numba_dot.py``).  To give
SciPy's BLAS its threads back (which makes these convolutions slower), use
``threadpoolctl``::

    threadpoolctl.ThreadpoolController().select(filepath=numba_blas_path()).limit(limits=None)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import threadpoolctl


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


# The Fortran name of sgemm as SciPy's BLAS exports it, by build: plain, and the
# prefixed symbols of the scipy-openblas wheels.
_SGEMM_SYMBOLS = ("sgemm_", "scipy_sgemm_", "scipy_sgemm_64_", "sgemm")


def numba_blas_path() -> str | None:
    """Path of the BLAS library Numba's ``np.dot`` ends up in, or None where it cannot be found.

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


def limit_numba_blas_threads() -> None:
    """Give the BLAS library that Numba calls one thread (nothing to do where it is not found)."""
    path = numba_blas_path()
    if path is None:
        return
    loaded = threadpoolctl.ThreadpoolController()
    matching = [lib.filepath for lib in loaded.lib_controllers if os.path.realpath(lib.filepath) == path]
    if matching:
        loaded.select(filepath=matching).limit(limits=1)
