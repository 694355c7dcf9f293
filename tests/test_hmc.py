"""The HMC sampler against NumPy: the leapfrog integrator, the Metropolis-Hastings rule, a whole
move with the MRG numbers of test_rng_mrg's plain-Python reference, and the original's test."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from test_rng_mrg import RefStreams, glibc_box_muller, ref_draw

from deeplearning_tutorial import hmc
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams


@pytest.fixture(autouse=True)
def float64_by_default():
    """Theano's default floatX, float64, whatever the process was started with."""
    with pytensor.config.change_flags(floatX="float64"):
        yield


def gaussian(dim, seed=0):
    """A mean, a symmetric positive definite precision matrix, and the energy and its gradient."""
    rng = np.random.RandomState(seed)
    mu = rng.rand(dim) * 10
    a = rng.rand(dim, dim)
    precision = a @ a.T + dim * np.eye(dim)

    def energy(x):
        return 0.5 * (pt.dot(x - mu, precision) * (x - mu)).sum(axis=1)

    def numpy_energy(x):
        return 0.5 * (((x - mu) @ precision) * (x - mu)).sum(axis=1)

    def numpy_gradient(x):
        return (x - mu) @ precision

    return mu, energy, numpy_energy, numpy_gradient


def numpy_leapfrog(x, v, step, n_steps, gradient):
    """Leapfrog: half a velocity step, n_steps position steps with full velocity steps in
    between, half a velocity step at the end."""
    v = v - step / 2 * gradient(x)
    for i in range(n_steps):
        x = x + step * v
        v = v - (step if i < n_steps - 1 else step / 2) * gradient(x)
    return x, v


@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_leapfrog_matches_a_numpy_integrator_from_the_same_momenta(n_steps):
    mu, energy, _, gradient = gaussian(4)
    pos, vel, step = pt.matrix("pos"), pt.matrix("vel"), pt.scalar("step")
    final = hmc.simulate_dynamics(pos, vel, step, n_steps, energy)
    f = pytensor.function([pos, vel, step], final)
    rng = np.random.RandomState(1)
    x0, v0 = rng.randn(3, 4), rng.randn(3, 4)
    got_x, got_v = f(x0, v0, 0.05)
    want_x, want_v = numpy_leapfrog(x0, v0, 0.05, n_steps, gradient)
    np.testing.assert_allclose(got_x, want_x, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-13, atol=1e-13)


def test_leapfrog_nearly_conserves_the_hamiltonian_and_is_reversible():
    _, energy, numpy_energy, gradient = gaussian(3)
    x0, v0 = np.random.RandomState(2).randn(2, 3, 3)
    pos, vel = pt.matrix("pos"), pt.matrix("vel")
    f = pytensor.function([pos, vel], hmc.simulate_dynamics(pos, vel, 0.01, 20, energy))
    x1, v1 = f(x0, v0)
    h0 = numpy_energy(x0) + 0.5 * (v0**2).sum(axis=1)
    h1 = numpy_energy(x1) + 0.5 * (v1**2).sum(axis=1)
    np.testing.assert_allclose(h1, h0, rtol=1e-3)
    x_back, v_back = f(x1, -v1)  # time reversal: back to the start with the opposite velocity
    np.testing.assert_allclose(x_back, x0, atol=1e-12)
    np.testing.assert_allclose(-v_back, v0, atol=1e-12)


def test_metropolis_hastings_accepts_with_probability_min_1_exp_minus_delta_h():
    # energy_prev - energy_next = log(0.3): accepted where u <= 0.3; a lower energy: always
    n = 15360 * 2
    e_prev = pt.vector("e_prev")
    accept = hmc.metropolis_hastings_accept(e_prev, pt.zeros_like(e_prev), MRG_RandomStreams(99))
    f = pytensor.function([e_prev], accept)
    differences = np.where(np.arange(n) % 2 == 0, np.log(0.3), 0.5)
    got = f(differences)
    u = ref_draw(RefStreams(99).new_set(15360), n, "float64")
    np.testing.assert_array_equal(got, np.exp(differences) - u >= 0)
    assert got[1::2].all()
    assert abs(got[0::2].mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / (n // 2))


def test_one_move_matches_numpy_with_the_mrg_velocities_and_uniforms():
    mu, energy, numpy_energy, gradient = gaussian(5)
    x0 = np.random.RandomState(3).randn(3, 5) + mu
    positions = hmc.sharedX(x0, "positions")
    sampler = hmc.HMC_sampler.new_from_shared_positions(positions, energy, initial_stepsize=0.05, n_steps=10,
                                                        seed=4321)
    reference = RefStreams(4321)
    velocity_states, uniform_states = reference.new_set(15360), reference.new_set(15360)
    x, step, rate = x0, 0.05, 0.9
    for _ in range(3):
        got = sampler.draw()
        v0 = glibc_box_muller(ref_draw(velocity_states, 16, "float64"), "float64")[:15].reshape(3, 5)
        x1, v1 = numpy_leapfrog(x, v0, step, 10, gradient)
        h0 = numpy_energy(x) + 0.5 * (v0**2).sum(axis=1)
        h1 = numpy_energy(x1) + 0.5 * (v1**2).sum(axis=1)
        accept = np.exp(h0 - h1) - ref_draw(uniform_states, 3, "float64") >= 0
        x = np.where(accept[:, None], x1, x)
        step = np.clip(step * (1.02 if rate > 0.9 else 0.98), 0.001, 0.25)
        rate = 0.9 * rate + 0.1 * accept.mean()
        np.testing.assert_allclose(got, x, rtol=1e-12)
        assert sampler.stepsize.get_value() == pytest.approx(step, rel=1e-15)
        assert sampler.avg_acceptance_rate.get_value() == pytest.approx(rate, rel=1e-15)


def test_stepsize_adapts_within_its_bounds():
    # tiny steps accept every move; the average acceptance rate starts at the target (not above
    # it), so the step size first shrinks by 0.98, then grows by 1.02 per draw up to its maximum
    _, energy, _, _ = gaussian(2)
    positions = hmc.sharedX(np.zeros((3, 2)), "positions")
    sampler = hmc.HMC_sampler.new_from_shared_positions(positions, energy, initial_stepsize=1e-3,
                                                        stepsize_min=1e-4, stepsize_max=1.2e-3)
    sampler.draw()
    assert sampler.stepsize.get_value() == pytest.approx(1e-3 * 0.98, rel=1e-15)
    assert sampler.avg_acceptance_rate.get_value() == pytest.approx(0.9 * 0.9 + 0.1, rel=1e-15)
    sampler.draw()
    assert sampler.stepsize.get_value() == pytest.approx(1e-3 * 0.98 * 1.02, rel=1e-15)
    for _ in range(20):
        sampler.draw()
    assert sampler.stepsize.get_value() == 1.2e-3


@pytest.mark.parametrize(("options", "message"), [
    ({"initial_stepsize": 0.0}, "initial_stepsize=0.0 must be positive"),
    ({"n_steps": 0}, "n_steps=0 must be a positive integer"),
    ({"stepsize_min": 0.3, "stepsize_max": 0.2}, "bounds"),
])
def test_bad_sampler_settings_are_refused(options, message):
    positions = hmc.sharedX(np.zeros((3, 2)), "positions")
    with pytest.raises(ValueError, match=message):
        hmc.HMC_sampler.new_from_shared_positions(positions, lambda x: (x**2).sum(axis=1), **options)


def test_hmc_on_the_5d_gaussian_prints_the_originals_lines(capsys):
    sampler = hmc.test_hmc()  # asserts the acceptance rate within 0.1 of 0.9 and the step size in bounds
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "****** TARGET VALUES ******"
    assert lines[1] == "target mean: [6.96469186 2.86139335 2.26851454 5.51314769 7.1946897 ]"
    assert lines[2:4] == ["target cov:", " [[1.         0.66197111 0.71141257 0.55766643 0.35753822]"]
    assert lines[8] == "****** EMPIRICAL MEAN/COV USING HMC ******"
    assert lines[9].startswith("empirical mean:  [")
    assert lines[10] == "empirical_cov:"
    assert lines[16] == "****** HMC INTERNALS ******"
    assert lines[17] == f"final stepsize {sampler.stepsize.get_value()}"
    assert lines[18] == f"final acceptance_rate {sampler.avg_acceptance_rate.get_value()}"
    assert len(lines) == 19
    # the empirical moments of 3000 (correlated) draws against the target's
    mean = np.array([float(s) for s in lines[9].split("[")[1].rstrip("]").split()])
    np.testing.assert_allclose(mean, [6.96469186, 2.86139335, 2.26851454, 5.51314769, 7.1946897], atol=0.15)
    cov = np.array([[float(s) for s in line.strip(" []").split()] for line in lines[11:16]])
    target = np.array([[float(s) for s in line.strip(" []").split()] for line in lines[3:8]])
    np.testing.assert_allclose(cov, target, atol=0.2)
