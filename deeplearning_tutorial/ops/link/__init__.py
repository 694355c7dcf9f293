"""The Ops' implementations for PyTensor's backends, one subpackage per backend.

As in PyTensor's own ``pytensor.link.<backend>.dispatch``: ``numba`` (the
default mode; registered when :mod:`deeplearning_tutorial.ops` is imported)
and ``jax`` (registered when PyTensor's JAX backend is imported and JAX is
installed).  The C VM and Python modes need nothing here: they call the Ops'
``perform``.
"""
