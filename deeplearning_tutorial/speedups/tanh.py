"""``float32_tanh``: a vectorisable float32 ``tanh`` for PyTensor's NUMBA backend.

Numba compiles ``tanh`` of a float32 into a call of the C library's scalar
function, which no loop vectorises, where NumPy's ``tanh`` uses SIMD
instructions; LeNet evaluates millions of them per training minibatch.  This
scalar Op is PyTensor's ``Tanh`` (same gradient, C code and Python
implementation) with a NUMBA implementation of its own: a rational
approximation evaluated in float64 and rounded once, within 0.51 ulp of the
exact value over the whole float32 range (0.5 ulp is the rounding itself;
NumPy's float32 ``tanh`` is within about 1.4), keeping ``tanh(±0) = ±0``,
``tanh(±inf) = ±1`` and NaN.  It makes no calls (its clamp is a select) and no
checked division (Numba's ``/`` raises on a zero divisor, and that branch alone
keeps a loop scalar; ``np.true_divide`` is the same IEEE division without it),
so fused elementwise loops vectorise it.

The :mod:`~deeplearning_tutorial.speedups` rewrites put it in place of
float32 ``tanh`` in the graphs compiled with
:func:`deeplearning_tutorial.speedups.mode` only.
"""

from __future__ import annotations

import numpy as np
from pytensor.link.numba.dispatch.basic import numba_njit
from pytensor.link.numba.dispatch.scalar import register_scalar_funcify, scalar_op_cache_key
from pytensor.scalar.basic import Tanh, upgrade_to_float

from deeplearning_tutorial.ops.link.numba.dispatch import source_hash

# tanh(x) = x P(x^2) / Q(x^2) on |x| <= CLAMP: a weighted least-squares fit
# to float64 tanh (relative error below 3e-8).  Beyond CLAMP the exact tanh
# rounds to +-1 in float32, and so does the approximation at CLAMP.
CLAMP = 9.1
P0, P1, P2, P3 = 0.9999999998552905, 0.13938544811415526, 0.0042021186673866, 3.553901752161632e-05
P4, P5, P6, P7 = 5.4659580461905006e-08, -4.736096152276591e-11, 6.460991638011198e-14, -5.90549548832197e-17
Q1, Q2, Q3, Q4 = 0.4727187803488558, 0.028441713719926997, 0.00045519240138556675, 1.8761660810751206e-06

_SOURCE_HASH = source_hash(__file__)


@numba_njit(inline="always")
def tanh_float32(x):
    v = np.float64(x)
    v = CLAMP if v > CLAMP else (-CLAMP if v < -CLAMP else v)  # NaN fails both tests and stays NaN
    z = v * v
    p = ((((((P7 * z + P6) * z + P5) * z + P4) * z + P3) * z + P2) * z + P1) * z + P0
    q = (((Q4 * z + Q3) * z + Q2) * z + Q1) * z + 1.0
    return np.float32(np.true_divide(v * p, q))


class Float32Tanh(Tanh):
    """PyTensor's ``Tanh`` with the rational float32 approximation as its NUMBA implementation."""


float32_tanh = Float32Tanh(upgrade_to_float, name="float32_tanh")


@register_scalar_funcify(Float32Tanh)
def numba_funcify_Float32Tanh(op, node, **kwargs):
    return tanh_float32, scalar_op_cache_key(op, implementation=f"rational-{_SOURCE_HASH}")
