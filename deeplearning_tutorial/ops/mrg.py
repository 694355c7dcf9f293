"""The MRG31k3p generator as Theano 1.0 ran it, and the Ops that draw from it.

:class:`MRGUniform` advances a set of streams and returns their next
uniforms; :class:`BoxMuller` turns pairs of uniforms into normal deviates.
The streams' seeding, element order and normalisation are described in
:mod:`deeplearning_tutorial.rng_mrg`, whose ``MRG_RandomStreams`` builds graphs
of these Ops.  Their ``perform`` is NumPy, vectorised over streams; the NUMBA
and JAX implementations are in :mod:`deeplearning_tutorial.ops.link`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad_undefined
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.op import Op
from pytensor.tensor.type import TensorType

M1 = 2147483647  # 2**31 - 1
M2 = 2147462579  # 2**31 - 21069

# one step of each component, acting on the column vector (x[n-1], x[n-2], x[n-3])
A1 = ((0, 4194304, 129), (1, 0, 0), (0, 1, 0))
A2 = ((32768, 0, 32769), (1, 0, 0), (0, 1, 0))

MAX_STREAMS = 60 * 256  # Theano's number of streams for sizes known only at run time
NORM_FLOAT64 = 2.0 ** -31
NORM_FLOAT32 = np.float32(4.6566126e-10)  # the float32 literal of Theano's C code: 2**-31 - 2**-55


def _matmul_mod(a, b, modulus):
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(3)) % modulus for j in range(3)) for i in range(3))


def _jump_matrix(matrix, log2_steps, modulus):
    """``matrix ** (2 ** log2_steps) mod modulus``, by repeated squaring."""
    for _ in range(log2_steps):
        matrix = _matmul_mod(matrix, matrix, modulus)
    return matrix


# a jump of 2**72 steps separates the streams of a set, one of 2**134 steps the sets
JUMP_STREAM = (_jump_matrix(A1, 72, M1), _jump_matrix(A2, 72, M2))
JUMP_SET = (_jump_matrix(A1, 134, M1), _jump_matrix(A2, 134, M2))


def jump(states, matrices):
    """The states (rows of six integers) moved by a jump ``(matrix mod M1, matrix mod M2)``.

    Each product of a matrix entry and a state value is below ``2**62`` and is
    reduced before summing, so int64 arithmetic is exact.
    """
    states = np.asarray(states, dtype=np.int64)
    out = np.empty_like(states)
    for half, (matrix, modulus) in enumerate(zip(matrices, (M1, M2))):
        x = states[..., 3 * half:3 * half + 3]
        for i in range(3):
            out[..., 3 * half + i] = sum((matrix[i][k] * x[..., k]) % modulus for k in range(3)) % modulus
    return out


def stream_states(base_state, n_streams):
    """The int32 ``(n_streams, 6)`` matrix of a stream set starting at ``base_state``:
    row ``i`` is ``2**(72 i)`` steps after the base state.

    Computed by doubling (rows ``L .. 2L-1`` are rows ``0 .. L-1`` moved by
    ``2**(72 L)`` steps), which gives the same rows as ``n_streams - 1``
    successive jumps.
    """
    states = np.asarray(base_state, dtype=np.int64).reshape(1, 6)
    step = JUMP_STREAM
    while len(states) < n_streams:
        states = np.concatenate([states, jump(states[:n_streams - len(states)], step)])
        step = tuple(_matmul_mod(m, m, modulus) for m, modulus in zip(step, (M1, M2)))
    return states.astype(np.int32)


def guess_n_streams(size):
    """Theano's number of streams for a draw of ``size``.

    A tuple or list of Python ints: their product, divided by 6 (integer
    division) when above 6, at most 15360 (and at least 1, for an empty
    draw).  Anything else (a symbolic shape, NumPy integers): 15360.
    """
    if isinstance(size, tuple | list) and all(isinstance(i, int) for i in size):
        r = math.prod(size)
        if r > 6:
            r = r // 6
        return max(1, min(r, MAX_STREAMS))
    return MAX_STREAMS


# ----------------------------------------------------------------------------
# The generator in NumPy (the Ops' perform) and Numba (the NUMBA mode; the Box-Muller
# transform in every mode, for the C library's log, cos and sin)
# ----------------------------------------------------------------------------


def check_size(size):
    """The number of elements of a draw of shape ``size`` (a sequence of ints); a clear
    error for negative entries or more elements than the generator can index."""
    if any(s < 0 for s in size):
        raise ValueError(f"MRG_RandomStreams: the size {tuple(int(s) for s in size)} has a negative entry; "
                         "sizes must be >= 0")
    n = math.prod(int(s) for s in size)
    if n > M1:
        raise ValueError(f"MRG_RandomStreams: a draw of {n} elements is too large; at most {M1} per draw")
    return n


def step_numpy(state):
    """Advance every row of an int64 ``(k, 6)`` state matrix by one step, in place, and
    return the generator's integer outputs ``z`` (``1 <= z <= M1``)."""
    x11, x12, x13, x21, x22, x23 = state.T.copy()
    y1 = (4194304 * x12 + 129 * x13) % M1
    y2 = (32768 * x21 + 32769 * x23) % M2
    state[:] = np.stack([y1, x11, x12, y2, x21, x22], axis=1)
    return np.where(y1 > y2, y1 - y2, y1 - y2 + M1)


def normalise(z, dtype):
    """The generator's integers ``z`` as floats in (0, 1), as Theano's C code computes them."""
    if np.dtype(dtype) == np.float32:
        return z.astype(np.float32) * NORM_FLOAT32
    if np.dtype(dtype) == np.float64:
        return z.astype(np.float64) * NORM_FLOAT64
    raise TypeError(f"MRG_RandomStreams: dtype {dtype} is not supported; use float32 or float64")


def uniform_numpy(rstate, size, dtype):
    """``(new_state, sample)``: ``prod(size)`` uniforms drawn from the stream set ``rstate``
    (element ``j`` from stream ``j % n_streams``), vectorised over streams."""
    n = check_size(size)
    state = rstate.astype(np.int64)
    n_streams = len(state)
    out = np.empty(n, dtype=dtype)
    for start in range(0, n, n_streams):
        k = min(n_streams, n - start)
        out[start:start + k] = normalise(step_numpy(state[:k]), dtype)
    return state.astype(np.int32), out.reshape(tuple(int(s) for s in size))


def _make_uniform_kernel(to_float, norm):
    """A Numba function ``(rstate, n, out)`` that fills the flat ``out`` with ``n``
    uniforms and returns the advanced states; ``to_float`` is the output's float type
    and ``norm`` its constant.  Each stream's state stays in registers while it draws its elements."""

    @numba.njit
    def uniform_kernel(rstate, n, out):
        new_state = rstate.copy()
        n_streams = rstate.shape[0]
        for s in range(min(n_streams, n)):
            x11 = np.int64(new_state[s, 0])
            x12 = np.int64(new_state[s, 1])
            x13 = np.int64(new_state[s, 2])
            x21 = np.int64(new_state[s, 3])
            x22 = np.int64(new_state[s, 4])
            x23 = np.int64(new_state[s, 5])
            for j in range(s, n, n_streams):
                y1 = (4194304 * x12 + 129 * x13) % M1
                y2 = (32768 * x21 + 32769 * x23) % M2
                x13, x12, x11 = x12, x11, y1
                x23, x22, x21 = x22, x21, y2
                z = y1 - y2 if y1 > y2 else y1 - y2 + M1
                out[j] = to_float(z) * norm
            new_state[s, 0] = x11
            new_state[s, 1] = x12
            new_state[s, 2] = x13
            new_state[s, 3] = x21
            new_state[s, 4] = x22
            new_state[s, 5] = x23
        return new_state

    return uniform_kernel


UNIFORM_KERNELS = {"float32": _make_uniform_kernel(np.float32, NORM_FLOAT32),
                   "float64": _make_uniform_kernel(np.float64, NORM_FLOAT64)}


def _make_box_muller_kernel(to_float):
    """A Numba function of ``m`` uniforms (``m`` even) that returns ``m`` normal values:
    ``r cos t`` then ``r sin t``, with ``r = sqrt(-2 log u1)`` from the first half,
    ``t = 2 pi u2`` from the second, in the uniforms' dtype with the C library's
    ``log``, ``cos`` and ``sin`` (NumPy's own versions differ in the last bit for some
    values, so this runs in Numba in every mode)."""
    minus_two = to_float(-2.0)
    two_pi = to_float(2.0 * np.pi)

    @numba.njit
    def box_muller_kernel(u):
        half = u.shape[0] // 2
        out = np.empty_like(u)
        for k in range(half):
            r = math.sqrt(minus_two * math.log(u[k]))
            t = two_pi * u[half + k]
            out[k] = r * math.cos(t)
            out[half + k] = r * math.sin(t)
        return out

    return box_muller_kernel


BOX_MULLER_KERNELS = {"float32": _make_box_muller_kernel(np.float32), "float64": _make_box_muller_kernel(np.float64)}


# ----------------------------------------------------------------------------
# The Ops
# ----------------------------------------------------------------------------


def _static_shape(size):
    """The entries of a 1-d int vector that are constants, None for the others."""
    if isinstance(size, Constant):
        return tuple(int(s) for s in size.data)
    if size.owner is not None and isinstance(size.owner.op, pt.basic.MakeVector):
        return tuple(int(s.data) if isinstance(s, Constant) else None for s in size.owner.inputs)
    return (None,) * pt.get_vector_length(size)


class MRGUniform(Op):
    """Draw uniforms in (0, 1) of ``dtype`` from a stream set: ``(rstate, size) ->
    (new_rstate, sample)``, ``rstate`` an int32 ``(n_streams, 6)`` matrix of states and
    ``size`` the sample's shape.  Not differentiable."""

    __props__ = ("dtype",)

    def __init__(self, dtype):
        if dtype not in UNIFORM_KERNELS:
            raise TypeError(f"MRG_RandomStreams: dtype {dtype} is not supported; use float32 or float64")
        self.dtype = dtype

    def make_node(self, rstate, size):
        rstate = pt.as_tensor_variable(rstate)
        size = pt.as_tensor_variable(size, ndim=1)
        if rstate.type.dtype != "int32" or rstate.type.ndim != 2:
            raise TypeError(f"MRG_RandomStreams: the state must be an int32 matrix, not {rstate.type}")
        if size.type.dtype not in pytensor.tensor.type.integer_dtypes:
            raise TypeError(f"MRG_RandomStreams: size must be integers, not {size.type.dtype}")
        sample = TensorType(self.dtype, shape=_static_shape(size))()
        size = pt.cast(size, "int64")
        return Apply(self, [rstate, size], [rstate.type(), sample])

    def perform(self, node, inputs, outputs):
        rstate, size = inputs
        new_state, sample = uniform_numpy(rstate, size, self.dtype)
        outputs[0][0] = new_state
        outputs[1][0] = sample

    def infer_shape(self, node, shapes):
        size = node.inputs[1]
        return [shapes[0], [size[i] for i in range(pt.get_vector_length(size))]]

    def grad(self, inputs, output_grads):
        return [grad_undefined(self, k, inp, "MRG_RandomStreams draws have no gradient")
                for k, inp in enumerate(inputs)]

    def connection_pattern(self, node):
        return [[True, True], [True, True]]


class BoxMuller(Op):
    """Turn ``m`` uniforms (``m`` even) into ``m`` standard normal values, as Theano's
    ``normal`` did: ``concatenate(r cos t, r sin t)`` with ``r = sqrt(-2 log u[:m/2])``
    and ``t = 2 pi u[m/2:]``."""

    __props__ = ()

    def make_node(self, u):
        u = pt.as_tensor_variable(u)
        if u.type.ndim != 1 or u.type.dtype not in BOX_MULLER_KERNELS:
            raise TypeError(f"BoxMuller: needs a float32 or float64 vector, not {u.type}")
        return Apply(self, [u], [u.type()])

    def perform(self, node, inputs, outputs):
        (u,) = inputs
        outputs[0][0] = BOX_MULLER_KERNELS[u.dtype.name](u)

    def infer_shape(self, node, shapes):
        return shapes

    def grad(self, inputs, output_grads):
        return [grad_undefined(self, 0, inputs[0], "MRG_RandomStreams draws have no gradient")]
