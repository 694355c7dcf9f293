"""The deeplearning.net Theano tutorials (logistic regression, MLP, LeNet) on PyTensor.

Modules mirror the original files: ``logistic_sgd``, ``mlp``,
``convolutional_mlp``; ``ops`` provides the 2-D convolution and pooling that
PyTensor lacks.

Importing the package keeps large freed blocks in the heap (glibc
``mallopt``, unless ``MALLOC_MMAP_MAX_`` or ``MALLOC_TRIM_THRESHOLD_`` is set),
so the big temporary arrays of each minibatch reuse memory instead of paying
page faults again.
"""

import os


def _keep_freed_memory() -> None:
    if "MALLOC_MMAP_MAX_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)


_keep_freed_memory()
