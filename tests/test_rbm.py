"""The RBM against NumPy: the free energy and its gradient, Gibbs steps driven by the uniforms
of test_rng_mrg's plain-Python MRG31k3p, a PCD and a CD update with their monitoring costs,
and test_rbm's printed lines and pictures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from PIL import Image
from test_rng_mrg import RefStreams, ref_draw

from deeplearning_tutorial import rbm as rbm_module
from deeplearning_tutorial.rbm import RBM
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams


@pytest.fixture(autouse=True)
def float64_by_default():
    """Theano's default floatX, float64, whatever the process was started with."""
    with pytensor.config.change_flags(floatX="float64"):
        yield


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def numpy_free_energy(v, W, hbias, vbias):
    return -v @ vbias - np.logaddexp(0.0, v @ W + hbias).sum(axis=1)


def small_rbm(n_visible=7, n_hidden=5, seed=42, x=None):
    """An RBM with random (not zero) biases, and its parameters' values."""
    rng = np.random.RandomState(seed)
    model = RBM(input=x, n_visible=n_visible, n_hidden=n_hidden, numpy_rng=rng,
                theano_rng=MRG_RandomStreams(seed))
    model.hbias.set_value(rng.uniform(-1, 1, n_hidden))
    model.vbias.set_value(rng.uniform(-1, 1, n_visible))
    return model, [p.get_value() for p in model.params]


def test_initial_parameters_are_the_originals():
    # RandomState(1234) draws the MRG seed, then W uniform in +-4 sqrt(6 / (n_hidden + n_visible))
    model = RBM(n_visible=6, n_hidden=3)
    rng = np.random.RandomState(1234)
    rng.randint(2**30)
    bound = 4 * np.sqrt(6.0 / 9)
    np.testing.assert_array_equal(model.W.get_value(), rng.uniform(-bound, bound, (6, 3)))
    assert [p.name for p in model.params] == ["W", "hbias", "vbias"]
    assert not model.hbias.get_value().any() and not model.vbias.get_value().any()


def test_free_energy_and_its_gradient_match_numpy():
    model, (W, hbias, vbias) = small_rbm()
    v = pt.matrix("v")
    v_value = np.random.RandomState(0).rand(4, 7)
    fe = pytensor.function([v], model.free_energy(v))(v_value)
    np.testing.assert_allclose(fe, numpy_free_energy(v_value, W, hbias, vbias), rtol=1e-13)
    # dF/dW = -v' sigm(vW + c), dF/dc = -sigm(vW + c), dF/db = -v (summed over rows)
    grads = pytensor.function([v], pytensor.grad(model.free_energy(v).sum(), model.params))(v_value)
    p = sigmoid(v_value @ W + hbias)
    for got, want in zip(grads, [-v_value.T @ p, -p.sum(axis=0), -v_value.sum(axis=0)]):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # and PyTensor's numeric check, with respect to the weights and the visible vector
    def free_energy_of_weights(w):
        return RBM(n_visible=7, n_hidden=5, W=w, hbias=model.hbias, vbias=model.vbias).free_energy(
            pt.as_tensor(v_value))

    pytensor.gradient.verify_grad(free_energy_of_weights, [W], rng=np.random.RandomState(1), mode="FAST_COMPILE")
    pytensor.gradient.verify_grad(model.free_energy, [v_value], rng=np.random.RandomState(2), mode="FAST_COMPILE")


def test_free_energy_is_finite_for_large_activations():
    model, _ = small_rbm()
    model.W.set_value(model.W.get_value() * 1e3)
    v = np.ones((2, 7))
    fe = pytensor.function([], model.free_energy(pt.as_tensor(v)))()
    assert np.isfinite(fe).all()
    np.testing.assert_allclose(fe, numpy_free_energy(v, *[p.get_value() for p in model.params]), rtol=1e-13)


def test_a_gibbs_step_matches_numpy_with_the_same_uniforms():
    model, (W, hbias, vbias) = small_rbm()
    v0 = pt.matrix("v0")
    f = pytensor.function([v0], model.gibbs_vhv(v0))  # h's draw owns stream set 0, v's set 1
    reference = RefStreams(42)
    h_states, v_states = reference.new_set(15360), reference.new_set(15360)
    v = (np.random.RandomState(3).rand(3, 7) > 0.5).astype("float64")
    for _ in range(2):  # the second call continues the streams
        pre_h, h_mean, h_sample, pre_v, v_mean, v_sample = f(v)
        want_h_mean = sigmoid(v @ W + hbias)
        want_h = (ref_draw(h_states, 15, "float64").reshape(3, 5) < want_h_mean).astype("float64")
        want_v_mean = sigmoid(want_h @ W.T + vbias)
        want_v = (ref_draw(v_states, 21, "float64").reshape(3, 7) < want_v_mean).astype("float64")
        np.testing.assert_allclose(pre_h, v @ W + hbias, rtol=1e-14)
        np.testing.assert_allclose(h_mean, want_h_mean, rtol=1e-14)
        np.testing.assert_array_equal(h_sample, want_h)
        np.testing.assert_allclose(v_mean, want_v_mean, rtol=1e-14)
        np.testing.assert_array_equal(v_sample, want_v)
        assert h_sample.dtype == v_sample.dtype == "float64"
        v = v_sample


def numpy_gibbs_hvh(h, W, hbias, vbias, v_states, h_states):
    """One Gibbs step from h with the reference streams: returns pre-sigmoid v, v and h samples."""
    batch = len(h)
    pre_v = h @ W.T + vbias
    v = (ref_draw(v_states, batch * W.shape[0], "float64").reshape(batch, -1) < sigmoid(pre_v)).astype("float64")
    h = (ref_draw(h_states, batch * W.shape[1], "float64").reshape(batch, -1) < sigmoid(v @ W + hbias))
    return pre_v, v, h.astype("float64")


def numpy_cd_gradients(x, chain_end, W, hbias):
    """The gradient of mean F(x) - mean F(chain end), the chain end held constant."""
    batch = len(x)
    p_data, p_model = sigmoid(x @ W + hbias), sigmoid(chain_end @ W + hbias)
    return [(-x.T @ p_data + chain_end.T @ p_model) / batch, (-p_data + p_model).mean(axis=0),
            -x.mean(axis=0) + chain_end.mean(axis=0)]


def test_a_pcd_update_and_its_pseudo_likelihood_match_numpy():
    x = pt.matrix("x")
    model, (W, hbias, vbias) = small_rbm(x=x)
    chains = pytensor.shared(np.zeros((3, 5)))
    cost, updates = model.get_cost_updates(lr=0.1, persistent=chains, k=2)
    train = pytensor.function([x], cost, updates=updates)
    # stream sets: 0 the positive phase's h (never drawn under PCD), 1 the chain's v, 2 its h
    reference = RefStreams(42)
    reference.new_set(15360)
    v_states, h_states = reference.new_set(15360), reference.new_set(15360)
    data = np.random.RandomState(4).rand(2, 3, 7)
    h = np.zeros((3, 5))
    for step, x_value in enumerate(data):
        got_cost = train(x_value)
        for _ in range(2):
            _, v, h = numpy_gibbs_hvh(h, W, hbias, vbias, v_states, h_states)
        # the pseudo-likelihood at bit `step`, with the parameters before the update
        xi = np.round(x_value)
        flipped = xi.copy()
        flipped[:, step] = 1 - flipped[:, step]
        delta = numpy_free_energy(flipped, W, hbias, vbias) - numpy_free_energy(xi, W, hbias, vbias)
        assert got_cost == pytest.approx(np.mean(7 * -np.logaddexp(0.0, -delta)), rel=1e-12)
        gW, ghbias, gvbias = numpy_cd_gradients(x_value, v, W, hbias)
        W, hbias, vbias = W - 0.1 * gW, hbias - 0.1 * ghbias, vbias - 0.1 * gvbias
        for param, want in zip(model.params, [W, hbias, vbias]):
            np.testing.assert_allclose(param.get_value(), want, rtol=1e-12)
        np.testing.assert_array_equal(chains.get_value(), h)


def test_a_cd_update_and_its_reconstruction_cost_match_numpy():
    x = pt.matrix("x")
    model, (W, hbias, vbias) = small_rbm(x=x)
    cost, updates = model.get_cost_updates(lr=0.05, k=1)
    train = pytensor.function([x], cost, updates=updates)
    reference = RefStreams(42)
    positive_states, v_states, h_states = (reference.new_set(15360) for _ in range(3))
    x_value = np.random.RandomState(5).rand(3, 7)
    got_cost = train(x_value)
    h0 = (ref_draw(positive_states, 15, "float64").reshape(3, 5) < sigmoid(x_value @ W + hbias)).astype("float64")
    pre_v, v, _ = numpy_gibbs_hvh(h0, W, hbias, vbias, v_states, h_states)
    want_cost = np.mean(np.sum(x_value * np.log(sigmoid(pre_v)) + (1 - x_value) * np.log(1 - sigmoid(pre_v)),
                               axis=1))
    assert got_cost == pytest.approx(want_cost, rel=1e-12)
    gW, _, _ = numpy_cd_gradients(x_value, v, W, hbias)
    np.testing.assert_allclose(model.W.get_value(), W - 0.05 * gW, rtol=1e-12)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"k": 0}, "k=0 must be a positive integer"),
    ({"persistent": pytensor.shared(np.zeros((3, 4)))}, r"persistent chains have shape \(3, 4\)"),
])
def test_bad_chains_are_refused(arguments, message):
    model, _ = small_rbm()
    with pytest.raises(ValueError, match=message):
        model.get_cost_updates(**arguments)


def test_test_rbm_prints_the_originals_lines_and_writes_its_pictures(small_mnist, tmp_path, capsys):
    # through the command line, as scripts/rbm.py runs it (the original smoke test's sizes, smaller data)
    from deeplearning_tutorial.cli import run

    folder = tmp_path / "plots"
    state = run("rbm", ["--training-epochs", "1", "--dataset", str(small_mnist), "--batch-size", "300",
                        "--n-chains", "3", "--n-samples", "2", "--output-folder", str(folder), "--n-hidden", "20",
                        "--history-file", str(tmp_path / "history.json")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "... loading data"
    match = re.fullmatch(r"Training epoch 0, cost is  (\S+)", lines[1])
    assert match and -np.inf < float(match.group(1)) < 0  # n_visible log(a probability)
    assert re.fullmatch(r"Training took \d+\.\d{6} minutes", lines[2])
    assert lines[3:] == [" ... plotting sample 0", " ... plotting sample 1"]
    assert state.epoch == 1 and state.elapsed > 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["arguments"]["n_hidden"] == 20 and history["epochs"] == 1
    assert Image.open(folder / "filters_at_epoch_0.png").size == (289, 289)
    assert Image.open(folder / "samples.png").size == (29 * 3 - 1, 29 * 2 + 1)  # (width, height)


@pytest.mark.parametrize(("arguments", "message"), [
    ({"n_chains": 0}, "n_chains=0 must be a positive integer"),
    ({"n_samples": -1}, "n_samples=-1 must be a positive integer"),
    ({"n_chains": 500}, "n_chains=500 must be below the number of test images"),
])
def test_test_rbm_refuses_bad_sizes(small_mnist, tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        rbm_module.test_rbm(dataset=str(small_mnist), output_folder=str(tmp_path), **arguments)


def test_the_command_line_has_test_rbms_parameters():
    from deeplearning_tutorial.cli import program_parser
    from deeplearning_tutorial.programs import PROGRAMS

    parser = program_parser(PROGRAMS["rbm"])
    defaults = vars(parser.parse_args([]))
    assert {name: defaults[name] for name in PROGRAMS["rbm"].defaults()} == {
        "learning_rate": 0.1, "training_epochs": 15, "dataset": "mnist.pkl.gz", "batch_size": 20, "n_chains": 20,
        "n_samples": 10, "output_folder": "rbm_plots", "n_hidden": 500}
    given = vars(parser.parse_args(["--training-epochs", "1", "--n-samples", "1"]))
    assert (given["training_epochs"], given["n_samples"]) == (1, 1)
