"""Hybrid (Hamiltonian) Monte Carlo: drawing samples from ``p(x) ~ exp(-E(x))`` with a symbolic energy.

    sampler = HMC_sampler.new_from_shared_positions(positions, energy_fn)
    samples = [sampler.draw() for _ in range(1000)]

The position ``x`` gets a companion, a velocity ``v`` drawn from a standard
normal, and the pair moves along the level lines of the Hamiltonian
``H(x, v) = E(x) + |v|^2 / 2`` (a particle of unit mass in the potential ``E``).
The leapfrog integrator follows that motion for ``n_steps`` steps of size
``stepsize``; its small error in ``H`` is corrected by a Metropolis-Hastings test
that keeps the end point with probability ``min(1, exp(H_start - H_end))``.
Every row of ``positions`` is an independent chain.  The step size adapts so that
the running average of the acceptance rate approaches a target (0.9).

All random numbers come from :class:`~deeplearning_tutorial.rng_mrg.MRG_RandomStreams`
(the velocities, then the uniforms of the acceptance test), as the original did.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial.rng_mrg import MRG_RandomStreams


def sharedX(value, name):  # noqa: N802  (the original's name)
    """A floatX shared variable holding ``value``."""
    return pytensor.shared(np.asarray(value, dtype=pytensor.config.floatX), name=name)


def kinetic_energy(vel):
    """The kinetic energy ``|v|^2 / 2`` of each row of velocities (unit mass)."""
    return 0.5 * (vel**2).sum(axis=1)


def hamiltonian(pos, vel, energy_fn):
    """The total energy ``E(x) + |v|^2 / 2`` of each row; ``energy_fn`` maps a matrix of positions to a vector."""
    return energy_fn(pos) + kinetic_energy(vel)


def metropolis_hastings_accept(energy_prev, energy_next, s_rng):
    """Accept each row's move with probability ``min(1, exp(energy_prev - energy_next))``.

    Parameters
    ----------
    energy_prev, energy_next : vector
        The Hamiltonian of each chain before and after the move.
    s_rng : MRG_RandomStreams
        Draws one uniform ``u`` per chain: the move is accepted where
        ``exp(energy_prev - energy_next) - u >= 0``.

    Returns
    -------
    bool vector
    """
    ediff = energy_prev - energy_next
    return (pt.exp(ediff) - s_rng.uniform(size=energy_prev.shape)) >= 0


def simulate_dynamics(initial_pos, initial_vel, stepsize, n_steps, energy_fn):
    """Integrate Hamilton's equations with ``n_steps`` leapfrog steps of size ``stepsize``.

    A half step of the velocity, then ``n_steps`` alternating full steps (the
    position, then the velocity at the new position; the last velocity step is
    a half step), so the positions are evaluated at whole steps and the
    velocities in between.  The middle steps run in :func:`pytensor.scan`.

    Returns
    -------
    (final_pos, final_vel) : the symbolic end of the trajectory.
    """

    def force(pos):
        return -pytensor.grad(energy_fn(pos).sum(), pos)

    def leapfrog(pos, vel, step):
        new_vel = vel + step * force(pos)
        new_pos = pos + step * new_vel
        return new_pos, new_vel

    vel_half_step = initial_vel + 0.5 * stepsize * force(initial_pos)
    pos_full_step = initial_pos + stepsize * vel_half_step
    pos, vel = pos_full_step, vel_half_step
    if n_steps > 1:
        all_pos, all_vel = pytensor.scan(leapfrog, outputs_info=[pos_full_step, vel_half_step],
                                         non_sequences=[stepsize], n_steps=n_steps - 1, return_updates=False)
        pos, vel = all_pos[-1], all_vel[-1]
    final_vel = vel + 0.5 * stepsize * force(pos)
    return pos, final_vel


def hmc_move(s_rng, positions, energy_fn, stepsize, n_steps):
    """One HMC move of every chain: fresh normal velocities, a trajectory, the acceptance test.

    Returns
    -------
    (accept, final_pos) : a bool per chain and the trajectory's end.
    """
    initial_vel = s_rng.normal(size=positions.shape)
    final_pos, final_vel = simulate_dynamics(positions, initial_vel, stepsize, n_steps, energy_fn)
    accept = metropolis_hastings_accept(
        energy_prev=hamiltonian(positions, initial_vel, energy_fn),
        energy_next=hamiltonian(final_pos, final_vel, energy_fn),
        s_rng=s_rng,
    )
    return accept, final_pos


def hmc_updates(positions, stepsize, avg_acceptance_rate, final_pos, accept, target_acceptance_rate,
                stepsize_inc, stepsize_dec, stepsize_min, stepsize_max, avg_acceptance_slowness):
    """The updates of one move: the positions, the step size and the average acceptance rate.

    Accepted chains move to ``final_pos``.  The step size grows by
    ``stepsize_inc`` while the average acceptance rate (before this move) is
    above the target and shrinks by ``stepsize_dec`` otherwise, within
    [``stepsize_min``, ``stepsize_max``]; the average is an exponential moving
    average of the accepted fraction, ``avg_acceptance_slowness`` the old value's weight.

    Returns
    -------
    list of (shared variable, new value) pairs.
    """
    accept_rows = accept.dimshuffle(0, *(["x"] * (final_pos.ndim - 1)))
    new_positions = pt.switch(accept_rows, final_pos, positions)
    scaled_stepsize = pt.switch(avg_acceptance_rate > target_acceptance_rate,
                                stepsize * stepsize_inc, stepsize * stepsize_dec)
    new_stepsize = pt.clip(scaled_stepsize, stepsize_min, stepsize_max)
    new_acceptance_rate = pt.add(avg_acceptance_slowness * avg_acceptance_rate,
                                 (1.0 - avg_acceptance_slowness) * accept.mean(dtype=pytensor.config.floatX))
    return [(positions, new_positions), (stepsize, new_stepsize), (avg_acceptance_rate, new_acceptance_rate)]


class HMC_sampler:  # noqa: N801  (the original's name)
    """A compiled HMC sampler over shared positions, with an adaptive step size.

    Build it with :meth:`new_from_shared_positions`; each :meth:`draw` moves
    every chain once and returns the positions.

    Attributes
    ----------
    positions : shared matrix
        The current state of the chains, one per row.
    stepsize, avg_acceptance_rate : shared scalars
        The current leapfrog step size and the running average of the acceptance rate.
    stepsize_min, stepsize_max, target_acceptance_rate : float
        The step size's bounds and the acceptance rate it aims at.
    s_rng : MRG_RandomStreams
        The generator of the velocities and acceptance tests.
    simulate : compiled function
        One move of every chain (no inputs, no outputs; it updates the shared variables).
    """

    def __init__(self, positions, stepsize, stepsize_min, stepsize_max, avg_acceptance_rate,
                 target_acceptance_rate, s_rng, updates, simulate):
        self.positions = positions
        self.stepsize = stepsize
        self.stepsize_min = stepsize_min
        self.stepsize_max = stepsize_max
        self.avg_acceptance_rate = avg_acceptance_rate
        self.target_acceptance_rate = target_acceptance_rate
        self.s_rng = s_rng
        self._updates = updates
        self.simulate = simulate

    @classmethod
    def new_from_shared_positions(cls, shared_positions, energy_fn, initial_stepsize=0.01,
                                  target_acceptance_rate=.9, n_steps=20, stepsize_dec=0.98,
                                  stepsize_min=0.001, stepsize_max=0.25, stepsize_inc=1.02,
                                  avg_acceptance_slowness=0.9, seed=12345):
        """Compile a sampler moving the chains held in ``shared_positions``.

        Parameters
        ----------
        shared_positions : shared matrix
            The chains' initial positions, one chain per row; updated by every draw.
        energy_fn : callable
            Maps a symbolic matrix of positions to the vector of their energies.
        initial_stepsize : float
            The first leapfrog step size.
        target_acceptance_rate : float
            The acceptance rate the step size's adaptation aims at (also the
            running average's initial value).
        n_steps : int
            Leapfrog steps per move.
        stepsize_dec, stepsize_inc : float
            The factors shrinking and growing the step size.
        stepsize_min, stepsize_max : float
            Its bounds.
        avg_acceptance_slowness : float
            The weight of the old value in the running average of the acceptance rate.
        seed : int
            The seed of the sampler's MRG_RandomStreams.
        """
        if not initial_stepsize > 0:
            raise ValueError(f"HMC_sampler: initial_stepsize={initial_stepsize} must be positive")
        if not (isinstance(n_steps, int | np.integer) and n_steps >= 1):
            raise ValueError(f"HMC_sampler: n_steps={n_steps!r} must be a positive integer (leapfrog steps per move)")
        if not 0 < stepsize_min <= stepsize_max:
            raise ValueError(f"HMC_sampler: the step size's bounds [{stepsize_min}, {stepsize_max}] must be "
                             "positive and in order")
        stepsize = sharedX(initial_stepsize, "hmc_stepsize")
        avg_acceptance_rate = sharedX(target_acceptance_rate, "avg_acceptance_rate")
        s_rng = MRG_RandomStreams(seed)
        accept, final_pos = hmc_move(s_rng, shared_positions, energy_fn, stepsize, n_steps)
        simulate_updates = hmc_updates(
            shared_positions, stepsize, avg_acceptance_rate, final_pos=final_pos, accept=accept,
            stepsize_min=stepsize_min, stepsize_max=stepsize_max, stepsize_inc=stepsize_inc,
            stepsize_dec=stepsize_dec, target_acceptance_rate=target_acceptance_rate,
            avg_acceptance_slowness=avg_acceptance_slowness)
        simulate = pytensor.function([], [], name="hmc_simulate", updates=simulate_updates)
        return cls(shared_positions, stepsize, stepsize_min, stepsize_max, avg_acceptance_rate,
                   target_acceptance_rate, s_rng, simulate_updates, simulate)

    def draw(self, **kwargs):
        """Move every chain once and return a copy of the new positions."""
        self.simulate()
        return self.positions.get_value(borrow=False)


# ----------------------------------------------------------------------------
# The original's test: a correlated 5-d Gaussian
# ----------------------------------------------------------------------------


def sampler_on_nd_gaussian(sampler_cls, burnin, n_samples, dim=10):
    """Sample a ``dim``-dimensional Gaussian with 3 chains and print its true and empirical moments.

    The mean is uniform in [0, 10); the covariance has unit variances and
    uniform [0, 1) correlations (symmetrised), both from ``RandomState(123)``.
    After ``burnin`` discarded draws, ``n_samples`` draws of the 3 chains give
    the empirical mean and covariance.  Returns the sampler.
    """
    batchsize = 3
    floatX = pytensor.config.floatX
    rng = np.random.RandomState(123)
    mu = np.array(rng.rand(dim) * 10, dtype=floatX)
    cov = np.array(rng.rand(dim, dim), dtype=floatX)
    cov = (cov + cov.T) / 2.0
    cov[np.arange(dim), np.arange(dim)] = 1.0
    cov_inv = np.linalg.inv(cov)

    def gaussian_energy(x):
        return 0.5 * (pt.dot(x - mu, cov_inv) * (x - mu)).sum(axis=1)

    position = sharedX(rng.randn(batchsize, dim), "position")
    sampler = sampler_cls(position, gaussian_energy, initial_stepsize=1e-3, stepsize_max=0.5)
    for _ in range(burnin):
        sampler.draw()
    draws = np.asarray([sampler.draw() for _ in range(n_samples)])  # (n_samples, batchsize, dim)
    samples = draws.T.reshape(dim, -1).T  # one row per sample, chain by chain

    print("****** TARGET VALUES ******")
    print("target mean:", mu)
    print("target cov:\n", cov)
    print("****** EMPIRICAL MEAN/COV USING HMC ******")
    print("empirical mean: ", samples.mean(axis=0))
    print("empirical_cov:\n", np.cov(samples.T))
    print("****** HMC INTERNALS ******")
    print("final stepsize", sampler.stepsize.get_value())
    print("final acceptance_rate", sampler.avg_acceptance_rate.get_value())
    return sampler


def test_hmc():
    """The original's test: 1000 burn-in and 1000 kept draws of a 5-d Gaussian; the average
    acceptance rate ends within 0.1 of its 0.9 target and the step size within its bounds."""
    sampler = sampler_on_nd_gaussian(HMC_sampler.new_from_shared_positions, burnin=1000, n_samples=1000, dim=5)
    assert abs(sampler.avg_acceptance_rate.get_value() - sampler.target_acceptance_rate) < .1
    assert sampler.stepsize_min <= sampler.stepsize.get_value() <= sampler.stepsize_max
    return sampler


if __name__ == "__main__":
    test_hmc()
