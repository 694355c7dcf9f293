"""cA: initialisation, the Jacobian and the cost against NumPy, the floor-divided penalty's zero
gradient, verify_grad, test_cA's lines (with the original's first-rows quirk) and picture against
a NumPy re-run, and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from PIL import Image

from deeplearning_tutorial import cA as cA_module
from deeplearning_tutorial import datasets
from deeplearning_tutorial.cA import cA
from deeplearning_tutorial.utils import tile_raster_images


@pytest.fixture(autouse=True)
def float64():
    with pytensor.config.change_flags(floatX="float64"):
        yield


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_step(x, W, b, b_prime, learning_rate, contraction_level):
    """The cA's outputs ``[mean(L_rec), L_jacob]`` on ``x`` and its parameters after one SGD step
    (the floor-divided penalty contributes no gradient)."""
    h = sigmoid(x @ W + b)
    z = sigmoid(h @ W.T + b_prime)
    L_rec = -np.sum(x * np.log(z) + (1 - x) * np.log(1 - z), axis=1)
    J = (h * (1 - h))[:, None, :] * W[None, :, :]
    L_jacob = np.floor(np.sum(J ** 2) / len(x))
    d_a2 = (z - x) / len(x)
    d_a1 = d_a2 @ W * h * (1 - h)
    grad_W = d_a2.T @ h + x.T @ d_a1
    new = (W - learning_rate * grad_W, b - learning_rate * d_a1.sum(0), b_prime - learning_rate * d_a2.sum(0))
    return np.mean(L_rec), L_jacob, new


def test_initialisation_draws_W_first():
    ca = cA(np.random.RandomState(123), n_visible=784, n_hidden=500, n_batchsize=10)
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    np.testing.assert_array_equal(ca.W.get_value(),
                                  np.random.RandomState(123).uniform(-bound, bound, size=(784, 500)))
    assert [p.name for p in ca.params] == ["W", "b", None]
    assert not ca.b.get_value().any() and not ca.b_prime.get_value().any()
    assert ca.x.name == "input" and ca.x.dtype == "float64"


def test_jacobian_cost_and_step_match_numpy():
    rng = np.random.RandomState(0)
    x = pt.matrix("x")
    ca = cA(np.random.RandomState(1), input=x, n_visible=12, n_hidden=5, n_batchsize=4)
    ca.b.set_value(rng.normal(size=5))
    xv = rng.uniform(size=(4, 12))
    h = pytensor.function([x], ca.get_hidden_values(x))(xv)
    W = ca.W.get_value()
    J = pytensor.function([x], ca.get_jacobian(ca.get_hidden_values(x), ca.W))(xv)
    np.testing.assert_allclose(J, np.einsum("nj,ij->nij", h * (1 - h), W), rtol=1e-13)
    cost, updates = ca.get_cost_updates(contraction_level=0.1, learning_rate=0.05)
    train = pytensor.function([x], [pt.mean(ca.L_rec), ca.L_jacob, cost], updates=updates)
    params = [p.get_value() for p in ca.params]
    for _ in range(2):
        rec, jacob, params_next = numpy_step(xv, *params, learning_rate=0.05, contraction_level=0.1)
        got_rec, got_jacob, got_cost = train(xv)
        np.testing.assert_allclose(got_rec, rec, rtol=1e-12)
        assert got_jacob == jacob and jacob == int(jacob) and jacob > 0  # a whole number
        np.testing.assert_allclose(got_cost, rec + 0.1 * jacob, rtol=1e-12)
        params = params_next
        for param, expected in zip(ca.params, params):
            np.testing.assert_allclose(param.get_value(), expected, rtol=1e-10, atol=1e-14)


def test_contraction_does_not_change_training():
    # the floor division's gradient is zero: the same steps with contraction 0.1 and 0
    x = pt.matrix("x")
    xv = np.random.RandomState(2).uniform(size=(3, 8))
    weights = []
    for level in (0.1, 0.0):
        ca = cA(np.random.RandomState(3), input=x, n_visible=8, n_hidden=4, n_batchsize=3)
        pytensor.function([x], [], updates=ca.get_cost_updates(level, 0.5)[1])(xv)
        weights.append(ca.W.get_value())
    np.testing.assert_array_equal(*weights)


def test_gradient_passes_verify_grad():
    rng = np.random.RandomState(4)
    xv = rng.uniform(size=(3, 6))

    def cost(W, b, b_prime):
        ca = cA(np.random.RandomState(0), input=pt.constant(xv), n_visible=6, n_hidden=4, n_batchsize=3,
                W=W, bhid=b, bvis=b_prime)
        return ca.get_cost_updates(contraction_level=0.1, learning_rate=0.1)[0]

    pytensor.gradient.verify_grad(cost, [rng.normal(size=(6, 4)), rng.normal(size=4), rng.normal(size=6)],
                                  rng=rng, mode="FAST_COMPILE")


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    """60 training images (six minibatches of 10), 20 validation and 20 test images."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:60], train_y[:60]), (valid_x[:20], valid_y[:20]), (test_x[:20], test_y[:20]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz")


EPOCH_LINE = re.compile(r"Training epoch (\d+), reconstruction cost  (\S+)  jacobian norm  (\S+)")


def test_test_cA_prints_the_original_lines_and_numpy_numbers(tiny_mnist, mnist, tmp_path, capsys):
    state = cA_module.test_cA(training_epochs=2, dataset=str(tiny_mnist), output_folder=str(tmp_path / "cA"))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "... loading data" and len(lines) == 3
    matches = [EPOCH_LINE.fullmatch(line) for line in lines[1:]]
    assert all(matches) and [int(m.group(1)) for m in matches] == [0, 1]
    assert re.fullmatch(r"The code for file cA\.py ran for \d+\.\d\dm\n", err)

    train_x = mnist[0][0][:60].astype("float64")
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    params = (np.random.RandomState(123).uniform(-bound, bound, size=(784, 500)), np.zeros(500), np.zeros(784))
    for epoch, match in enumerate(matches):
        outputs = []
        for index in range(6):
            rec, jacob, params = numpy_step(train_x[index * 10 : (index + 1) * 10], *params, learning_rate=0.01,
                                            contraction_level=0.1)
            outputs.append((rec, jacob))
        # the original prints row 0 and row 1 of the stacked outputs: the first two minibatches
        assert float(match.group(2)) == pytest.approx((outputs[0][0] + outputs[0][1]) / 2, rel=1e-12)
        assert float(match.group(3)) == pytest.approx((np.sqrt(outputs[1][0]) + np.sqrt(outputs[1][1])) / 2,
                                                      rel=1e-12)
        assert state.curves["cA"][epoch] == pytest.approx(np.mean([o[0] for o in outputs]), rel=1e-12)
    image = Image.open(tmp_path / "cA" / "cae_filters.png")
    assert image.mode == "L" and image.size == (289, 289)
    expected = tile_raster_images(params[0].T, (28, 28), (10, 10), (1, 1)).astype(int)
    assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("level", [-0.1, float("inf"), float("nan")])
def test_bad_contraction_level_is_refused(level):
    ca = cA(np.random.RandomState(0), n_visible=4, n_hidden=2)
    with pytest.raises(ValueError, match="contraction_level must be a finite number >= 0"):
        ca.get_cost_updates(contraction_level=level, learning_rate=0.1)


def test_hidden_size_must_be_positive():
    with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
        cA(np.random.RandomState(0), n_visible=4, n_hidden=0)
