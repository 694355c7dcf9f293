"""The deeplearning.net Theano tutorials (logistic regression, MLP, LeNet) on PyTensor.

Modules mirror the original files: ``logistic_sgd``, ``mlp``,
``convolutional_mlp``; ``ops`` provides the 2-D convolution and pooling that
PyTensor lacks.

Importing the package tunes two process-wide settings for speed, before NumPy
loads when it can (each is left alone when the user has set it):

* ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS worker threads stop spinning right
  after a matrix product instead of keeping a core busy for ~0.1 s, which
  otherwise starves the compiled kernels that run next;
* large freed blocks stay in the heap (glibc ``mallopt``), so the big
  temporary arrays of each minibatch reuse memory instead of paying page
  faults again.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


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
