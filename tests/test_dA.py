"""dA: initialisation and random-draw order, the cost and its gradient against NumPy with the
corruption masks of the plain-Python MRG reference, verify_grad, test_dA's lines and pictures
against a NumPy re-run, and bad input."""

from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from PIL import Image
from test_rng_mrg import RefStreams, ref_draw

from deeplearning_tutorial import cli, datasets
from deeplearning_tutorial import dA as dA_module
from deeplearning_tutorial.dA import dA
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.utils import tile_raster_images

N_STREAMS = 15360  # a draw of symbolic size (x.shape) uses this many streams


@pytest.fixture(autouse=True)
def float64():
    """Theano's default floatX while a test builds its graphs."""
    with pytensor.config.change_flags(floatX="float64"):
        yield


@functools.cache
def _stream_set(seed):
    return RefStreams(seed).new_set(N_STREAMS)


def reference_streams(seed):
    """The first stream set of an MRG_RandomStreams(seed) whose draws have a symbolic size."""
    return copy.deepcopy(_stream_set(seed))


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_step(x, mask, W, b, b_prime, learning_rate):
    """The dA's cost on minibatch ``x`` corrupted by ``mask``, and its parameters after one SGD step,
    with the gradient derived by hand."""
    tilde_x = mask * x
    y = sigmoid(tilde_x @ W + b)
    z = sigmoid(y @ W.T + b_prime)
    cost = np.mean(-np.sum(x * np.log(z) + (1 - x) * np.log(1 - z), axis=1))
    d_a2 = (z - x) / len(x)  # d cost / d (y W^T + b')
    d_a1 = d_a2 @ W * y * (1 - y)  # d cost / d (tilde_x W + b)
    grad_W = d_a2.T @ y + tilde_x.T @ d_a1
    return cost, (W - learning_rate * grad_W, b - learning_rate * d_a1.sum(0),
                  b_prime - learning_rate * d_a2.sum(0))


def reference_mask(states, shape, corruption_level):
    u = ref_draw(states, int(np.prod(shape)), "float64").reshape(shape)
    return (u < 1 - corruption_level).astype("float64")


def test_initialisation_draws_the_generator_seed_then_W():
    x = pt.matrix("x")
    da = dA(np.random.RandomState(123), input=x, n_visible=784, n_hidden=500)
    rng = np.random.RandomState(123)
    assert rng.randint(2 ** 30) == 843828734 == da.theano_rng.default_instance_seed
    bound = 4 * np.sqrt(6.0 / (500 + 784))
    assert bound == pytest.approx(0.27343437080986527, abs=1e-17)
    np.testing.assert_array_equal(da.W.get_value(), rng.uniform(-bound, bound, size=(784, 500)))
    assert not da.b.get_value().any() and da.b.get_value().shape == (500,)
    assert not da.b_prime.get_value().any() and da.b_prime.get_value().shape == (784,)
    assert [p.name for p in da.params] == ["W", "b", None] and da.params[0] is da.W
    assert da.x is x
    default = dA(np.random.RandomState(0), n_visible=3, n_hidden=2)
    assert default.x.name == "input" and default.x.dtype == "float64"
    # given generator and parameters are kept; nothing is drawn for them
    rng = np.random.RandomState(5)
    shared = dA(rng, theano_rng=MRG_RandomStreams(7), n_visible=3, n_hidden=2, W=da.W, bhid=da.b,
                bvis=da.b_prime)
    assert shared.W is da.W and shared.b is da.b and shared.b_prime is da.b_prime
    assert rng.randint(2 ** 30) == np.random.RandomState(5).randint(2 ** 30)


@pytest.mark.parametrize("corruption_level", [0.0, 0.3])
def test_cost_and_sgd_step_match_numpy_with_the_reference_masks(corruption_level):
    data_rng = np.random.RandomState(42)
    n_visible, n_hidden, batch = 20, 7, 5
    x = pt.matrix("x")
    da = dA(np.random.RandomState(123), input=x, n_visible=n_visible, n_hidden=n_hidden)
    da.b.set_value(data_rng.normal(size=n_hidden))
    da.b_prime.set_value(data_rng.normal(size=n_visible))
    cost, updates = da.get_cost_updates(corruption_level=corruption_level, learning_rate=0.1)
    train = pytensor.function([x], cost, updates=updates)
    states = reference_streams(843828734)
    params = [p.get_value() for p in da.params]
    for _ in range(3):  # each call draws the next numbers of the streams
        xv = data_rng.uniform(size=(batch, n_visible))
        expected_cost, params = numpy_step(xv, reference_mask(states, xv.shape, corruption_level), *params,
                                           learning_rate=0.1)
        np.testing.assert_allclose(train(xv), expected_cost, rtol=1e-12)
        for param, expected in zip(da.params, params):
            np.testing.assert_allclose(param.get_value(), expected, rtol=1e-10, atol=1e-14)


def test_symbolic_corruption_level_in_float32():
    # the SdA's corruption level is a floatX scalar: 1 - c is computed in floatX
    with pytensor.config.change_flags(floatX="float32"):
        x = pt.matrix("x")
        level = pt.scalar("corruption")
        da = dA(np.random.RandomState(1), theano_rng=MRG_RandomStreams(1234), input=x, n_visible=9,
                n_hidden=3)
        corrupt = pytensor.function([x, level], da.get_corrupted_input(x, level))
        xv = np.ones((4, 9), dtype="float32")
        got = corrupt(xv, np.float32(0.3))
    u = ref_draw(reference_streams(1234), 36, "float32").reshape(4, 9)
    assert got.dtype == "float32"
    np.testing.assert_array_equal(got, (u < np.float32(1) - np.float32(0.3)).astype("float32"))


def test_gradient_passes_verify_grad():
    rng = np.random.RandomState(3)
    xv = rng.uniform(size=(4, 6))

    def cost(W, b, b_prime):
        da = dA(np.random.RandomState(0), theano_rng=MRG_RandomStreams(1), input=pt.constant(xv),
                n_visible=6, n_hidden=3, W=W, bhid=b, bvis=b_prime)
        return da.get_cost_updates(corruption_level=0.0, learning_rate=0.1)[0]

    pytensor.gradient.verify_grad(cost, [rng.normal(size=(6, 3)), rng.normal(size=3), rng.normal(size=6)],
                                  rng=rng, mode="FAST_COMPILE")


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    """60 training images (three minibatches of 20), 20 validation and 20 test images."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:60], train_y[:60]), (valid_x[:20], valid_y[:20]), (test_x[:20], test_y[:20]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz")


EPOCH_LINE = re.compile(r"Training epoch (\d+), cost  (\S+)")


def test_test_dA_prints_the_original_lines_and_numpy_numbers(tiny_mnist, mnist, tmp_path, capsys):
    state = dA_module.test_dA(training_epochs=2, dataset=str(tiny_mnist), output_folder=str(tmp_path / "plots"))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "... loading data"
    epoch_lines = [EPOCH_LINE.fullmatch(line) for line in lines[1:]]
    assert len(lines) == 5 and all(epoch_lines)
    assert [int(m.group(1)) for m in epoch_lines] == [0, 1, 0, 1]
    assert re.fullmatch(r"The no corruption code for file dA\.py ran for \d+\.\d\dm\n"
                        r"The 30% corruption code for file dA\.py ran for \d+\.\d\dm\n", err)
    printed = [float(m.group(2)) for m in epoch_lines]
    assert [str(np.float64(v)) for v in printed] == [m.group(2) for m in epoch_lines]  # str of a float64
    assert state.curves == {"corruption 0%": printed[:2], "corruption 30%": printed[2:]}

    # both runs again in NumPy: same initial W, masks from the reference generator
    train_x = mnist[0][0][:60].astype("float64")
    for run, corruption_level, picture in ((0, 0.0, "filters_corruption_0.png"),
                                           (1, 0.3, "filters_corruption_30.png")):
        rng = np.random.RandomState(123)
        states = reference_streams(rng.randint(2 ** 30))
        bound = 4 * np.sqrt(6.0 / (500 + 784))
        params = (rng.uniform(-bound, bound, size=(784, 500)), np.zeros(500), np.zeros(784))
        for epoch in range(2):
            costs = []
            for index in range(3):
                xv = train_x[index * 20 : (index + 1) * 20]
                cost, params = numpy_step(xv, reference_mask(states, xv.shape, corruption_level), *params,
                                          learning_rate=0.1)
                costs.append(cost)
            assert printed[2 * run + epoch] == pytest.approx(np.mean(costs), rel=1e-12)
        image = Image.open(tmp_path / "plots" / picture)
        assert image.mode == "L" and image.size == (289, 289)
        expected = tile_raster_images(params[0].T, (28, 28), (10, 10), (1, 1)).astype(int)
        assert np.abs(np.asarray(image).astype(int) - expected).max() <= 1  # truncation of equal-to-ULPs values


@pytest.mark.parametrize("corruption_level", [1.0, -0.1, 1.5])
def test_corruption_outside_zero_one_is_refused(corruption_level):
    da = dA(np.random.RandomState(0), n_visible=4, n_hidden=2)
    with pytest.raises(ValueError, match=r"corruption_level must be in \[0, 1\)"):
        da.get_cost_updates(corruption_level=corruption_level, learning_rate=0.1)


@pytest.mark.parametrize("n_hidden", [0, -3, 2.5])
def test_hidden_size_must_be_positive(n_hidden):
    with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
        dA(np.random.RandomState(0), n_visible=4, n_hidden=n_hidden)


def test_command_line_refuses_bad_arguments_in_one_line(tiny_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.run("dA", ["--learning-rate", "0", "--dataset", str(tiny_mnist)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: learning_rate must be > 0, got 0.0\n"
