"""What importing the package changes in a process: prints one JSON record before and after.

    python scripts/check_side_effects.py

Records the thread counts of every BLAS and OpenMP library (threadpoolctl;
SciPy's BLAS is loaded first, as a user's own ``scipy.linalg`` calls would;
a library that only the package loads must start with its default count),
the environment, the bits of a float32 ``tanh(dot(x, w))`` graph compiled in
the default mode, and whether a freed 256 MB array gives its memory back to
the system; then imports ``deeplearning_tutorial`` and ``deeplearning_tutorial.ops``,
compiles and runs a ``conv2d``/``pool_2d`` graph, and records them again.
Exits 1 if anything differs.  Needs threadpoolctl (in the test extra).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import threadpoolctl


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]


def bytes_from_the_system() -> int:
    """What glibc's allocator holds from the system: its heaps and its mmap'ed blocks.

    glibc's own count (``mallinfo2``, glibc 2.33 and later), not the resident
    set, which the kernel may shrink under memory pressure whatever the
    allocator does.
    """
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = _Mallinfo2
    info = mallinfo2()
    return info.arena + info.hblkhd


def freed_memory_returns() -> bool:
    """Whether a freed 256 MB array goes back to the system."""
    block = np.ones(256 << 20, dtype=np.uint8)
    held = bytes_from_the_system()
    del block
    return held - bytes_from_the_system() > (200 << 20)


def tanh_dot_bits() -> str:
    x, w = pt.matrix("x", dtype="float32"), pt.matrix("w", dtype="float32")
    f = pytensor.function([x, w], pt.tanh(pt.dot(x, w)))
    rng = np.random.default_rng(0)
    result = f(rng.standard_normal((500, 800), dtype=np.float32),
               rng.standard_normal((800, 500), dtype=np.float32) / 30)
    return hashlib.sha256(result.tobytes()).hexdigest()


def record() -> dict:
    return {
        "threads": {lib["filepath"]: (lib["internal_api"], lib["num_threads"])
                    for lib in threadpoolctl.threadpool_info()},
        "environment": dict(os.environ),
        "tanh_dot_bits": tanh_dot_bits(),
        "freed_memory_returns": freed_memory_returns(),
    }


def use_the_package() -> None:
    import deeplearning_tutorial  # noqa: F401
    from deeplearning_tutorial.ops import conv2d, pool_2d

    images = pt.tensor4("images", dtype="float32")
    filters = pt.tensor4("filters", dtype="float32")
    f = pytensor.function([images, filters], pool_2d(pt.tanh(conv2d(images, filters)), ws=(2, 2),
                                                     ignore_border=True))
    rng = np.random.default_rng(1)
    f(rng.standard_normal((64, 3, 28, 28), dtype=np.float32), rng.standard_normal((8, 3, 5, 5), dtype=np.float32))


# the variables a library takes its thread count from when it loads, the first one set;
# OpenMP's is set by Numba's OpenMP threading layer, to Numba's count, once the package's
# NUMBA graphs have run (with another Numba threading layer it would be OMP_NUM_THREADS)
THREAD_VARIABLES = {"openblas": ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"),
                    "mkl": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
                    "blis": ("BLIS_NUM_THREADS", "OMP_NUM_THREADS"),
                    "openmp": ("NUMBA_NUM_THREADS",)}


def default_threads(internal_api: str) -> int:
    """The thread count a library starts with: its environment variable's, else one per core."""
    for variable in THREAD_VARIABLES.get(internal_api, ()):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return len(os.sched_getaffinity(0))


def thread_differences(before: dict, after: dict) -> dict:
    """Libraries whose thread count changed, and newly loaded ones not at their default count."""
    return {path: {"before": before.get(path), "after": count} for path, (api, count) in after.items()
            if before.get(path, (api, default_threads(api))) != (api, count)}


def main() -> int:
    import scipy.linalg  # noqa: F401  (the user's own SciPy, and with it SciPy's BLAS)

    before = record()
    use_the_package()
    after = record()
    differences = {key: {"before": before[key], "after": after[key]} for key in before
                   if key != "threads" and before[key] != after[key]}
    if changed := thread_differences(before["threads"], after["threads"]):
        differences["threads"] = changed
    print(json.dumps({"before": {k: v for k, v in before.items() if k != "environment"},
                      "differences": differences}, indent=1))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
