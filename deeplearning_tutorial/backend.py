"""The PyTensor mode a tutorial program compiles in (its ``--mode`` option), and what that mode needs.

PyTensor compiles a graph in a *mode*: NUMBA (its default) generates machine
code for this computer's CPU; JAX hands the graph to XLA, which runs it on
whatever device JAX finds, a GPU included.  ``--mode JAX`` (or
``PYTENSOR_FLAGS=mode=JAX``) selects it.  JAX picks a GPU when its CUDA build
is installed (``pip install ".[gpu]"``) and one is present, else the CPU,
silently; ``JAX_PLATFORMS=cuda`` insists on the GPU, and then
:func:`check_mode` reports its absence as an error instead.
"""

from __future__ import annotations

import importlib.util
import os

from pytensor.compile.mode import get_mode, predefined_modes
from pytensor.link.jax.linker import JAXLinker

#: The modes ``--mode`` accepts: PyTensor's predefined ones.
MODES = tuple(sorted(predefined_modes))


def uses_jax(mode: str | None) -> bool:
    """Whether ``mode`` (a name; None: PyTensor's default mode) compiles with JAX."""
    return isinstance(get_mode(mode).linker, JAXLinker)


def check_mode(mode: str | None) -> None:
    """Raise ValueError, naming the fix, if ``mode`` cannot run here.

    Parameters
    ----------
    mode
        A mode's name; None: PyTensor's default mode (``PYTENSOR_FLAGS=mode=...``).

    Raises
    ------
    ValueError
        For the JAX mode, when JAX is not installed, or when ``JAX_PLATFORMS``
        names a platform (``cuda``: an NVIDIA GPU) that JAX cannot start.
    """
    if not uses_jax(mode):
        return
    if importlib.util.find_spec("jax") is None:
        raise ValueError('the JAX mode needs JAX: pip install ".[jax]" (".[gpu]" for an NVIDIA GPU)')
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if not platforms:
        return
    import jax

    try:
        jax.devices()
    except (RuntimeError, AssertionError) as exc:  # JAX 0.12 fails an assertion where CUDA is missing
        reason = str(exc).splitlines()[0] if str(exc) else "no such device"
        raise ValueError(f"JAX_PLATFORMS={platforms} asks JAX for a device it cannot start ({reason}): "
                         f'for an NVIDIA GPU, run on a machine with one and pip install ".[gpu]"; '
                         f"unset JAX_PLATFORMS to run on the CPU") from None
