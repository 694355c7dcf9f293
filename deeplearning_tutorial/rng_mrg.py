"""Theano's ``MRG_RandomStreams``: L'Ecuyer's MRG31k3p generator, with Theano's numbers.

    from deeplearning_tutorial.rng_mrg import MRG_RandomStreams

    srng = MRG_RandomStreams(seed=1234)
    mask = srng.binomial(size=x.shape, n=1, p=0.7, dtype=pytensor.config.floatX)

The tutorials' noise (the denoising autoencoder's corruption, the RBM's Gibbs
samples, the HMC sampler's velocities) comes from this generator, so a program
that uses it draws, for the same seed, the same numbers as under Theano 1.0.

How it works:

- MRG31k3p combines two recurrences of order 3, modulo ``M1 = 2**31 - 1`` and
  ``M2 = 2**31 - 21069``.  A stream's state is six integers, the last three
  values of each recurrence, the most recent first.
- Each random variable owns a *stream set*: an int32 matrix of ``n_streams``
  states, one row per stream, kept in a shared variable.  Row 0 is the object's
  current base state and row ``i`` is ``2**72`` steps after row ``i - 1``; after
  building a set, the base state jumps ``2**134`` steps, where the next set starts.
- Element ``j`` (flat, C order) of a draw is the next number of stream
  ``j % n_streams``.  The Op that draws returns the advanced states, and the
  shared variable's ``default_update`` is that output, so every call of a
  compiled function continues where the last one stopped.
- The integer output ``z`` (``1 <= z <= M1``) becomes a float as Theano's C code
  did: ``z * 2**-31`` in float64; in float32, ``z`` rounded to float32, times
  the float32 constant ``4.6566126e-10``.

The generator runs in NumPy (vectorised over streams) in the Ops' ``perform``
(the C VM and Python modes), as a Numba loop in the default NUMBA mode and in
uint32 JAX operations in the JAX mode (``deeplearning_tutorial.ops.link``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import grad_undefined
from pytensor.graph.basic import Apply, Constant, Variable
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


# ----------------------------------------------------------------------------
# The streams object
# ----------------------------------------------------------------------------


def _check_seed(seed):
    """The base state (six ints) of a seed: a positive int below ``M2``, or six ints
    (the first three below ``M1``, the last three below ``M2``, neither three all zero)."""
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        if not 0 < seed < M2:
            raise ValueError(f"MRG_RandomStreams: the seed {seed} is out of range; use an integer with "
                             f"0 < seed < {M2}, or six integers")
        return [int(seed)] * 6
    if isinstance(seed, Sequence | np.ndarray) and len(seed) == 6 and all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) for s in seed):
        seed = [int(s) for s in seed]
        if any(s < 0 for s in seed) or any(s >= M1 for s in seed[:3]) or any(s >= M2 for s in seed[3:]):
            raise ValueError(f"MRG_RandomStreams: the seed {seed} is out of range; the first three must be in "
                             f"[0, {M1}), the last three in [0, {M2})")
        if not any(seed[:3]) or not any(seed[3:]):
            raise ValueError(f"MRG_RandomStreams: the seed {seed} has three zeros in a half; "
                             "each half needs a non-zero value")
        return seed
    raise TypeError(f"MRG_RandomStreams: the seed must be one integer or six integers, not {seed!r}")


def _size_variable(size, what):
    """``size`` (a tuple or list of ints and scalars, or a 1-d int variable) as a 1-d
    int64 variable, with a clear error for negative constant entries."""
    if isinstance(size, tuple | list):
        for s in size:
            if not isinstance(s, int | np.integer | Variable) or isinstance(s, bool):
                raise TypeError(f"MRG_RandomStreams.{what}: size must be a tuple of ints or a 1-d int "
                                f"variable, got {size!r}")
            if isinstance(s, int | np.integer) and s < 0:
                raise ValueError(f"MRG_RandomStreams.{what}: size {tuple(size)} has a negative entry; "
                                 "sizes must be >= 0")
        if not size:
            return pt.constant(np.zeros(0, dtype="int64"))
        return pt.as_tensor_variable(list(size), ndim=1)
    if isinstance(size, Variable) and size.type.ndim == 1:
        return size
    raise TypeError(f"MRG_RandomStreams.{what}: size must be a tuple of ints or a 1-d int variable "
                    f"(such as x.shape), got {size!r}")


class MRG_RandomStreams:  # noqa: N801  (Theano's name)
    """Random variables drawn from MRG31k3p, with Theano 1.0's API and numbers.

    Parameters
    ----------
    seed : int or sequence of six ints, optional
        A positive int below ``2**31 - 21069`` starts every component at it;
        six ints give the generator's state itself.

    Each call of :meth:`uniform` (also through :meth:`binomial` and :meth:`normal`)
    creates a random variable with its own stream set, a shared int32 matrix whose
    ``default_update`` advances it whenever a compiled function draws the variable.
    """

    def __init__(self, seed=12345):
        self.state_updates = []
        self.default_instance_seed = seed
        self.set_rstate(seed)

    def set_rstate(self, seed):
        """Set the base state, where the next stream set starts, from a seed."""
        self.rstate = np.asarray(_check_seed(seed), dtype=np.int32)

    def inc_rstate(self):
        """Move the base state ``2**134`` steps on, to the start of the next stream set."""
        self.rstate = jump(self.rstate, JUMP_SET).astype(np.int32)

    def get_substream_rstates(self, n_streams, dtype=None, inc_rstate=True):
        """The ``(n_streams, 6)`` state matrix of a new stream set from the base state;
        ``inc_rstate`` moves the base state on to the next set."""
        if n_streams < 1:
            raise ValueError(f"MRG_RandomStreams: nstreams must be >= 1, not {n_streams}")
        states = stream_states(self.rstate, n_streams)
        if inc_rstate:
            self.inc_rstate()
        return states

    def n_streams(self, size):
        """The number of streams of a draw of ``size``: :func:`guess_n_streams`."""
        return guess_n_streams(size)

    def seed(self, seed=None):
        """Restart from ``seed`` (by default the one given to the constructor): every
        random variable made so far gets, in creation order, the states it would have
        had with this seed."""
        self.set_rstate(self.default_instance_seed if seed is None else seed)
        for rstate, _, _, _ in self.state_updates:
            rstate.set_value(self.get_substream_rstates(len(rstate.get_value(borrow=True))), borrow=True)

    def updates(self):
        """The ``(state, new_state)`` pairs of every random variable made so far."""
        return [(rstate, new_rstate) for rstate, new_rstate, _, _ in self.state_updates]

    def _draw(self, size, dtype, nstreams, what):
        size_var = _size_variable(size, what)
        if nstreams is None:
            nstreams = self.n_streams(size)
        rstate = pytensor.shared(self.get_substream_rstates(int(nstreams)))
        rstate.tag.is_rng = True
        new_rstate, sample = MRGUniform(dtype)(rstate, size_var)
        # the update pytensor.function applies when it is not given one for this state, as
        # Theano's (and PyTensor's RandomStream) did; set directly, since PyTensor's setter
        # warns of its planned removal in favour of explicit updates, which updates() gives
        rstate._default_update = new_rstate
        sample.rstate = rstate
        sample.update = (rstate, new_rstate)
        self.state_updates.append((rstate, new_rstate, size, nstreams))
        return sample

    def uniform(self, size, low=0.0, high=1.0, ndim=None, dtype=None, nstreams=None):
        """Uniform values in (low, high) of shape ``size``.

        Parameters
        ----------
        size : tuple of ints or scalar variables, or a 1-d int variable
            The shape, possibly known only at run time (``x.shape``).
        low, high : float or scalar variable
            The bounds, both excluded.
        ndim : int, optional
            The number of dimensions, checked against ``size``.
        dtype : str, optional
            float32 or float64; by default the upcast of floatX with the bounds' dtypes.
        nstreams : int, optional
            The number of streams; by default :func:`guess_n_streams` of ``size``.
        """
        low = pt.as_tensor_variable(low)
        high = pt.as_tensor_variable(high)
        if dtype is None:
            dtype = pytensor.scalar.upcast(pytensor.config.floatX, low.dtype, high.dtype)
        u = self._draw(size, dtype, nstreams, "uniform")
        if ndim is not None and u.ndim != ndim:
            raise ValueError(f"MRG_RandomStreams.uniform: ndim={ndim} does not match size {size!r}")
        r = u * (pt.cast(high, dtype) - pt.cast(low, dtype)) + pt.cast(low, dtype)
        if r.type.broadcastable != u.type.broadcastable:
            raise ValueError("MRG_RandomStreams.uniform: low and high must broadcast to size; make size "
                             "as large as their shapes")
        r.rstate, r.update = u.rstate, u.update
        return r

    def binomial(self, size=None, n=1, p=0.5, ndim=None, dtype="int64", nstreams=None):
        """Bernoulli draws: 1 where a floatX uniform is strictly below ``p``, else 0.

        Parameters
        ----------
        size : tuple or 1-d int variable, optional
            The shape; by default ``p``'s.
        n : int
            The number of trials: only 1 is supported, as in Theano.
        p : float or variable
            The probability of a 1, broadcast against ``size``; a constant must be in [0, 1].
        dtype : str
            The result's dtype (``'int64'`` by default; ``floatX`` for a mask to multiply by).
        """
        if n != 1:
            raise ValueError(f"MRG_RandomStreams.binomial: n={n} is not supported, only n=1 (Bernoulli "
                             "draws); sum n draws for a binomial")
        p = pt.as_tensor_variable(p)
        if isinstance(p, Constant) and not np.all((p.data >= 0) & (p.data <= 1)):
            raise ValueError(f"MRG_RandomStreams.binomial: p={p.data} is not a probability; use values "
                             "in [0, 1]")
        if size is None:
            size = p.shape
        x = self.uniform(size=size, ndim=ndim, nstreams=nstreams)
        return pt.cast(pt.lt(x, p), dtype)

    def normal(self, size, avg=0.0, std=1.0, ndim=None, dtype=None, nstreams=None):
        """Normal values of shape ``size``, mean ``avg`` and standard deviation ``std``,
        by the Box-Muller transform of one uniform draw of the size rounded up to even.

        Parameters are those of :meth:`uniform`, with ``avg`` and ``std`` for the bounds.
        """
        avg = pt.as_tensor_variable(avg)
        std = pt.as_tensor_variable(std)
        if dtype is None:
            dtype = pytensor.scalar.upcast(pytensor.config.floatX, avg.dtype, std.dtype)
        size_var = _size_variable(size, "normal")
        n = pt.prod(size_var, dtype="int64")
        m = n + n % 2
        u = self._draw(pt.stack([m]), dtype, nstreams, "normal")
        samples = BoxMuller()(u)[:n].reshape(size_var, ndim=pt.get_vector_length(size_var))
        if ndim is not None and samples.ndim != ndim:
            raise ValueError(f"MRG_RandomStreams.normal: ndim={ndim} does not match size {size!r}")
        return pt.cast(avg, dtype) + pt.cast(std, dtype) * samples


# the Ops' NUMBA implementations (registered there with the package's other Ops)
from deeplearning_tutorial.ops.link.numba import dispatch as _numba_dispatch  # noqa: E402,F401
