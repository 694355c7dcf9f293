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

from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Constant, Variable

from deeplearning_tutorial.ops.mrg import (  # noqa: F401  (the generator's constants, as Theano's module had them)
    JUMP_SET,
    JUMP_STREAM,
    M1,
    M2,
    MAX_STREAMS,
    NORM_FLOAT32,
    NORM_FLOAT64,
    BoxMuller,
    MRGUniform,
    check_size,
    guess_n_streams,
    jump,
    stream_states,
)

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

