"""LeNet-5 trained as published: RBF codes, the MAP loss, the back-propagated curvature and SDLM,
each against a NumPy reference."""

from __future__ import annotations

import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import jacobian, verify_grad

from deeplearning_tutorial import lenet5_published as lp
from deeplearning_tutorial.lenet5 import LeNet5

MODE = "CVM"  # compiles in seconds; the programs use the default (NUMBA) mode


def numpy_map_loss(y, labels, j):
    """Eq. 9 per example, straight from its definition, in float64."""
    return y[np.arange(len(y)), labels] + np.log(np.exp(-j) + np.exp(-y).sum(axis=1))


def test_codes_are_the_digit_bitmaps():
    codes = lp.rbf_codes()
    assert codes.shape == (10, 84)
    assert set(np.unique(codes)) == {-1.0, 1.0}
    # row 5 of the "7" (index 4*7 + 3) is ink, the first row of every digit is paper
    assert codes[7].reshape(12, 7)[4, 4] == 1 and (codes[:, :7] == -1).all()
    distances = ((codes[:, None] - codes[None]) ** 2).sum(axis=2)
    assert distances[~np.eye(10, dtype=bool)].min() > 0  # ten different codes


@pytest.mark.parametrize("bitmaps, message", [
    (lp.DIGIT_BITMAPS[:9], "10 in all, got 9"),
    ((lp.DIGIT_BITMAPS[0][:11],) + lp.DIGIT_BITMAPS[1:], "digit 0 must be 12 rows of 7 characters"),
    (lp.DIGIT_BITMAPS[:3] + ((lp.DIGIT_BITMAPS[3][0] + ".",) + lp.DIGIT_BITMAPS[3][1:],) + lp.DIGIT_BITMAPS[4:],
     "digit 3 must be 12 rows of 7 characters"),
    (lp.DIGIT_BITMAPS[:9] + (("..x....",) + lp.DIGIT_BITMAPS[9][1:],), "only '#' (ink) and '.'"),
])
def test_wrong_bitmaps_are_refused(bitmaps, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        lp.rbf_codes(bitmaps)


def test_penalties_loss_and_gradient_against_numpy():
    rng = np.random.default_rng(0)
    codes = lp.rbf_codes()
    xv = rng.uniform(-1.7, 1.7, size=(5, 84))
    labels_v = rng.integers(0, 10, 5).astype("int32")
    x = pt.dmatrix("x")
    labels = pt.ivector("labels")
    y = lp.rbf_penalties(x, pt.constant(codes))
    loss = lp.map_loss(y, labels, 3.0)
    f = pytensor.function([x, labels], [y, loss, pt.grad(loss.sum(), x)], mode=MODE)
    y_v, loss_v, grad_v = f(xv, labels_v)
    y_ref = ((xv[:, None, :] - codes[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(y_v, y_ref, rtol=1e-12)
    np.testing.assert_allclose(loss_v, numpy_map_loss(y_ref, labels_v, 3.0), rtol=1e-12)
    # dE/dy_i = [i == D] - q_i, q_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k)); dy_i/dx = 2 (x - w_i)
    q = np.exp(-y_ref) / (np.exp(-3.0) + np.exp(-y_ref).sum(axis=1, keepdims=True))
    dy = np.eye(10)[labels_v] - q
    grad_ref = 2 * (dy[:, :, None] * (xv[:, None, :] - codes[None])).sum(axis=1)
    np.testing.assert_allclose(grad_v, grad_ref, rtol=1e-9, atol=1e-12)


def test_map_loss_is_finite_for_large_penalties_and_verify_grad():
    y = pt.dmatrix("y")
    loss = lp.map_loss(y, pt.constant(np.array([2, 0], dtype="int32")), 5.0)
    big = np.array([[900.0, 950.0, 1000.0], [1200.0, 1300.0, 1250.0]])
    value = pytensor.function([y], loss, mode=MODE)(big)
    # every exp underflows: the loss is y_D - min(j, min y) + log(...) computed shifted
    np.testing.assert_allclose(value, [1000.0 - 5.0, 1200.0 - 5.0], rtol=1e-12)
    verify_grad(lambda y: lp.map_loss(y, pt.constant(np.array([1, 2], dtype="int32")), 2.0).sum(),
                   [np.random.default_rng(1).uniform(0, 6, size=(2, 4))], rng=np.random.default_rng(2), mode=MODE)


def test_output_curvature_is_the_gauss_newton_diagonal():
    """diag(J^T H J) for the outputs (x - w_D, y_0..9): J = [I; 2 (x - w_i)^T], H = blockdiag(2 I, diag(q) - q q^T)."""
    rng = np.random.default_rng(3)
    codes = lp.rbf_codes()
    xv = 0.6 * codes[[3, 5, 8]] + rng.normal(0, 0.1, size=(3, 84))  # near a code: q neither 0 nor 1
    j = 14.0
    x = pt.dmatrix("x")
    h = pytensor.function([x], lp.output_curvature(x, pt.constant(codes), j), mode=MODE)(xv)
    for n in range(3):
        y = ((xv[n] - codes) ** 2).sum(axis=1)
        q = np.exp(-y - np.log(np.exp(-j) + np.exp(-y).sum()))
        assert 0.05 < q.max() < 0.95
        jac = 2 * (xv[n] - codes)  # (10, 84)
        gauss_newton = 2 * np.eye(84) + jac.T @ (np.diag(q) - np.outer(q, q)) @ jac
        np.testing.assert_allclose(h[n], np.diag(gauss_newton), rtol=1e-10)


@pytest.fixture(scope="module")
def small_network():
    """LeNet-5 with 17x17, 3x3, 3x3 filters (maps of 16, 8, 6, 3, 1 pixels), float64, two images."""
    with pytensor.config.change_flags(floatX="float64"):
        x = pt.dmatrix("x")
        network = LeNet5(np.random.RandomState(4), x, 2, filter_sizes=(17, 3, 3))
        lp.initialise_as_published(network, np.random.RandomState(5))
        for p in lp.published_params(network):  # weights large enough for non-linear units
            p.set_value(p.get_value() * 20)
    images = np.random.default_rng(6).uniform(0, 1, size=(2, 784))
    return network, x, images


@pytest.mark.slow  # about a minute: the Jacobian of 94 outputs, row by row
def test_curvature_of_f6_is_exactly_the_gauss_newton_diagonal(small_network):
    """F6 feeds the RBF units directly: the back-propagated curvature of its weights is diag(J^T H J)."""
    network, x, images = small_network
    codes = lp.rbf_codes()
    j = 2.0
    features = network.F6.output
    curvature = lp.gauss_newton_diagonal(network, lp.output_curvature(features, pt.constant(codes), j))
    f6 = network.F6
    got = pytensor.function([x], [curvature[f6.W], curvature[f6.b]], mode=MODE)(images)
    expected = [np.zeros_like(got[0]), np.zeros_like(got[1])]
    for n in range(2):
        y = lp.rbf_penalties(features[n:n + 1], pt.constant(codes))[0]
        # (x - w_D) for any label (its Jacobian does not depend on D), then the ten penalties
        outputs = pt.concatenate([features[n] - codes[0], y])
        jac_w, jac_b, y_v = pytensor.function([x], [*jacobian(outputs, [f6.W, f6.b]), y], mode=MODE)(images)
        q = np.exp(-y_v) / (np.exp(-j) + np.exp(-y_v).sum())
        hessian = np.zeros((94, 94))
        hessian[:84, :84] = 2 * np.eye(84)
        hessian[84:, 84:] = np.diag(q) - np.outer(q, q)
        for k, jac in enumerate((jac_w.reshape(94, -1), jac_b)):
            expected[k] += np.einsum("ok,op,pk->k", jac, hessian, jac).reshape(expected[k].shape) / 2
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-9)


@pytest.mark.slow  # minutes: a Jacobian per layer, row by row, for thousands of outputs
def test_curvature_of_every_layer_follows_the_diagonal_recursion(small_network):
    """Below F6, each layer's curvature is sum_p (d out_p / d v)^2 h_out[p] for each of its inputs
    and parameters v, from the full Jacobian of the layer's output (the paper's appendix C)."""
    network, x, images = small_network
    codes = pt.constant(lp.rbf_codes())
    out_curv = lp.output_curvature(network.F6.output, codes, 2.0)
    curvature = lp.gauss_newton_diagonal(network, out_curv)
    params = lp.published_params(network)
    got = pytensor.function([x], [curvature[p] for p in params], mode=MODE)(images)
    h_top = pytensor.function([x], out_curv, mode=MODE)(images)
    layers = network.layers[:6]
    expected = {p: np.zeros(p.get_value().shape) for p in params}
    for n in range(2):
        h_out = h_top[n]
        for layer in reversed(layers):
            output = layer.output[n].flatten()
            wrt = [layer.input, *layer.params]
            jacs = pytensor.function([x], jacobian(output, wrt), mode=MODE)(images)
            for p, jac in zip(layer.params, jacs[1:]):
                expected[p] += ((jac.reshape(len(output.eval({x: images})), -1) ** 2).T @ h_out).reshape(
                    expected[p].shape) / 2
            jac_in = jacs[0][:, n].reshape(len(h_out), -1) if layer.input.ndim > 1 else jacs[0]
            h_out = (jac_in ** 2).T @ h_out
    for p, value in zip(params, got):
        np.testing.assert_allclose(value, expected[p], rtol=1e-8, atol=1e-14 * np.abs(expected[p]).max())


def test_eta_schedule_is_the_papers():
    assert lp.eta_schedule(20) == [0.0005] * 2 + [0.0002] * 3 + [0.0001] * 3 + [0.00005] * 4 + [0.00001] * 8
    assert lp.eta_schedule(3) == [0.0005, 0.0005, 0.0002]


@pytest.mark.parametrize("changes, message", [
    (dict(mu=0.0), "mu must be positive"),
    (dict(mu=-1.0), "mu must be positive"),
    (dict(etas=[0.001] * 5), "the eta schedule gives 5 rates for 20 passes; give one rate per pass "
                             "(the paper's schedule, the default, keeps 1e-05 after pass 12)"),
    (dict(etas=[0.001] * 19 + [0.0]), "every eta must be positive, got 0.0"),
    (dict(j=0.0), "j must be positive"),
    (dict(n_epochs=0), "n_epochs must be a positive number of passes"),
    (dict(hessian_examples=0), "hessian_examples must be a positive number"),
    (dict(block=0), "block must be a positive number of images"),
])
def test_bad_settings_are_refused(changes, message):
    settings = dict(n_epochs=20, mu=0.02, etas=lp.eta_schedule(20), j=5.0, hessian_examples=500, block=500)
    settings.update(changes)
    with pytest.raises(ValueError, match=re.escape(message)):
        lp.check_settings(**settings)


def test_command_line_refuses_a_short_schedule_in_one_line(capsys):
    with pytest.raises(SystemExit) as stopped:
        lp.main(["--n-epochs", "3", "--eta", "0.001", "0.001"])
    assert str(stopped.value) == ("error: the eta schedule gives 2 rates for 3 passes; give one rate per pass "
                                  "(the paper's schedule, the default, keeps 1e-05 after pass 12)")


@pytest.mark.slow  # the scan compiles for about a minute
def test_a_block_applies_the_updates_one_image_after_another():
    """train_block over 3 images equals three successive one-image SDLM steps computed apart."""
    with pytensor.config.change_flags(floatX="float64"):
        rng = np.random.default_rng(7)
        images = rng.uniform(0, 1, size=(3, 784))
        labels = np.array([4, 1, 9], dtype="int32")
        data = (pytensor.shared(images), pytensor.shared(labels))
        net, penalties, losses, curvature = lp.build_network(seed=11, j=5.0)
        trainer = lp.Trainer(net, penalties, losses, curvature, data, data, block=3, mode=MODE)
        h = trainer.curvature(np.arange(3))
        trainer.set_steps(h, 0.01, 0.02)
        start = [p.get_value().copy() for p in net.params]
        loss_sum, errors = trainer.train_block(0)
        after_block = [p.get_value().copy() for p in net.params]
        step = pytensor.function([net.x, net.y], [losses.sum(), *pt.grad(losses.sum(), net.params)], mode=MODE)
        for p, value in zip(net.params, start):
            p.set_value(value.copy())
        total = 0.0
        for n in range(3):
            loss, *grads = step(images[n:n + 1], labels[n:n + 1])
            total += loss
            for p, g, hh in zip(net.params, grads, h):
                p.set_value(p.get_value() - 0.01 / (0.02 + hh) * g)
    np.testing.assert_allclose(loss_sum, total, rtol=1e-10)
    for p, value in zip(net.params, after_block):
        np.testing.assert_allclose(value, p.get_value(), rtol=1e-10, atol=1e-14)
    assert 0 <= errors <= 3


def test_checkpoint_round_trip(tmp_path):
    with pytensor.config.change_flags(floatX="float64"):
        net, *_ = lp.build_network(seed=3)
        config = dict(mu=0.02, seed=3, n_epochs=2)
        curvatures = [np.full(p.get_value().shape, 0.5) for p in net.params]
        progress = lp.Progress(1, 1500, 12.5, 7, 3.25, curvatures, [(1, 0.1, 0.2, 30.0)])
        saved = [p.get_value().copy() for p in net.params]
        lp.save_checkpoint(tmp_path / "run.npz", config, net, progress)
        for p in net.params:
            p.set_value(np.zeros_like(p.get_value()))
        restored = lp.load_checkpoint(tmp_path / "run.npz", dict(config, n_epochs=20), net)
        with pytest.raises(ValueError, match=r"other settings \(mu: 0.02 there, 0.2 here\)"):
            lp.load_checkpoint(tmp_path / "run.npz", dict(config, mu=0.2), net)
    assert (restored.epoch, restored.position, restored.loss, restored.errors, restored.seconds) == (
        1, 1500, 12.5, 7, 3.25)
    assert restored.history == [(1, 0.1, 0.2, 30.0)]
    for p, value in zip(net.params, saved):
        np.testing.assert_array_equal(p.get_value(), value)
    for h, h0 in zip(restored.curvatures, curvatures):
        np.testing.assert_array_equal(h, h0)


def test_pass_line_format():
    assert lp.format_pass(3, 0.0123, 0.0098, 61.25) == "pass  3: training error 1.23 %, test error 0.98 %, 61.2 s"
