"""Opt-in speed-ups for graphs that use the package's convolution and pooling, in the NUMBA and JAX modes.

Nothing here changes a graph unless it is compiled with the mode this module
gives::

    from deeplearning_tutorial import speedups

    f = pytensor.function(inputs, outputs, mode=speedups.mode())

In PyTensor's NUMBA mode (the default), that mode includes two graph rewrites
(:mod:`~deeplearning_tutorial.speedups.rewriting`, tag :data:`TAG`):

* float ``Dot`` products become :class:`~deeplearning_tutorial.speedups.dot.SplitDot`,
  split over Numba's threads with one single-threaded BLAS call per block, the
  way the convolution kernels use the cores (same results up to the rounding
  of a different summation split);
* float32 ``tanh`` becomes :data:`~deeplearning_tutorial.speedups.tanh.float32_tanh`,
  a vectorisable rational approximation within 0.51 ulp (NumPy's is within 1.4).

In PyTensor's JAX mode, that mode's linker is
:class:`~deeplearning_tutorial.speedups.jax_linker.DeviceJAXLinker`, which
puts the shared variables' arrays on JAX's device once instead of at every
call (same results).  Any other mode is returned unchanged.  The tutorial
programs compile their functions with this mode, except ``logistic_cg``,
whose printed digits are the original's.  :func:`keep_freed_memory` is the one process-wide setting the
tutorial programs make, in their ``main`` only.
"""

from __future__ import annotations

import numba
from pytensor.compile.mode import Mode, get_mode
from pytensor.link.jax.linker import JAXLinker
from pytensor.link.numba.linker import NumbaLinker

from deeplearning_tutorial.speedups.jax_linker import DeviceJAXLinker
from deeplearning_tutorial.speedups.process import keep_freed_memory
from deeplearning_tutorial.speedups.rewriting import TAG

__all__ = ["TAG", "mode", "keep_freed_memory"]


def mode(base: str | Mode | None = None) -> Mode:
    """The NUMBA mode ``base`` with the speed-up rewrites included, the JAX mode ``base``
    with :class:`DeviceJAXLinker`; any other mode unchanged.

    Parameters
    ----------
    base
        A mode or its name, as ``pytensor.function`` takes it; None (the
        default) is PyTensor's default mode (``PYTENSOR_FLAGS=mode=...``).

    Returns
    -------
    Mode
        The mode to pass as ``pytensor.function(..., mode=...)``.
    """
    base_mode = get_mode(base)
    if type(base_mode.linker) is JAXLinker:
        return Mode(linker=DeviceJAXLinker(), optimizer=base_mode.provided_optimizer)
    if not isinstance(base_mode.linker, NumbaLinker):
        return base_mode
    # Start Numba's thread pool now: a graph with SplitDot that PyTensor later loads from its
    # disk cache calls the pool through symbols that exist only once it has been launched.
    numba.get_num_threads()
    return base_mode.including(TAG)
