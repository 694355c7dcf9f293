"""DBN: the construction and its random-draw order, CD-1 pre-training steps of both layers
against NumPy driven by the MRG reference uniforms, the fine-tuning functions against NumPy,
test_DBN's lines and best model, and bad input."""

from __future__ import annotations

import re

import numpy as np
import pytensor
import pytest
from conftest import run_with_files
from test_rbm import numpy_cd_gradients, numpy_gibbs_hvh, sigmoid
from test_rng_mrg import REF_J134, RefStreams, ref_draw, ref_jump

from deeplearning_tutorial import DBN as DBN_module
from deeplearning_tutorial import datasets
from deeplearning_tutorial.DBN import DBN
from deeplearning_tutorial.programs import load_best_model

N_STREAMS = 15360  # a draw of symbolic size (x.shape) uses this many streams
SEED = 843828734  # RandomState(123).randint(2**30), the Gibbs sampler's seed


@pytest.fixture(autouse=True)
def float64():
    with pytensor.config.change_flags(floatX="float64"):
        yield


def sigmoid_layer_W(rng, n_in, n_out):
    bound = np.sqrt(6.0 / (n_in + n_out))
    return 4 * rng.uniform(-bound, bound, size=(n_in, n_out))


def layer_stream_sets(seed, layer):
    """The stream sets of an RBM's data hidden sample and its chain's visible sample: 3 layer and 3 layer + 1."""
    reference = RefStreams(seed)
    for _ in range(3 * layer):
        reference.base = ref_jump(reference.base, REF_J134)
    return reference.new_set(N_STREAMS), reference.new_set(N_STREAMS)


def numpy_cd1_step(x, W, hbias, vbias, positive_states, v_states, learning_rate):
    """A CD-1 update of an RBM on the minibatch x: its reconstruction cost and new parameters."""
    h0 = (ref_draw(positive_states, W.shape[1] * len(x), "float64").reshape(len(x), -1)
          < sigmoid(x @ W + hbias)).astype("float64")
    # the chain's hidden sample is not used with k = 1 (it has a stream set of its own, never drawn)
    pre_v, v, _ = numpy_gibbs_hvh(h0, W, hbias, vbias, v_states, RefStreams(1).new_set(1))
    cost = np.mean(np.sum(x * np.log(sigmoid(pre_v)) + (1 - x) * np.log(1 - sigmoid(pre_v)), axis=1))
    gradients = numpy_cd_gradients(x, v, W, hbias)
    return cost, [p - learning_rate * g for p, g in zip((W, hbias, vbias), gradients)]


def test_construction_draws_the_generator_seed_then_each_layer_and_shares_W_and_b():
    dbn = DBN(np.random.RandomState(123), n_ins=12, hidden_layers_sizes=[6, 5], n_outs=3)
    rng = np.random.RandomState(123)
    assert rng.randint(2 ** 30) == SEED == dbn.rbm_layers[0].theano_rng.default_instance_seed
    np.testing.assert_array_equal(dbn.sigmoid_layers[0].W.get_value(), sigmoid_layer_W(rng, 12, 6))
    np.testing.assert_array_equal(dbn.sigmoid_layers[1].W.get_value(), sigmoid_layer_W(rng, 6, 5))
    for layer, rbm in zip(dbn.sigmoid_layers, dbn.rbm_layers):
        assert rbm.W is layer.W and rbm.hbias is layer.b and rbm.theano_rng is dbn.rbm_layers[0].theano_rng
        assert rbm.vbias.name == "vbias" and not rbm.vbias.get_value().any()
    assert dbn.rbm_layers[0].input is dbn.x and dbn.rbm_layers[1].input is dbn.sigmoid_layers[0].output
    expected = [*dbn.sigmoid_layers[0].params, *dbn.sigmoid_layers[1].params, *dbn.logLayer.params]
    assert len(dbn.params) == 6 and all(p is q for p, q in zip(dbn.params, expected))


def test_pretraining_steps_of_both_layers_match_numpy_cd1():
    train_x = np.random.RandomState(0).uniform(size=(8, 12))
    dbn = DBN(np.random.RandomState(123), n_ins=12, hidden_layers_sizes=[6, 5], n_outs=3)
    fns = dbn.pretraining_functions(pytensor.shared(train_x), batch_size=4, k=1)
    # layer 0, learning rate 0.1 by default, minibatch 1 then 0: stream sets 0 and 1, continued
    params = [p.get_value() for p in dbn.rbm_layers[0].params]
    states = layer_stream_sets(SEED, 0)
    for index in (1, 0):
        cost, params = numpy_cd1_step(train_x[index * 4 : index * 4 + 4], *params, *states, learning_rate=0.1)
        assert fns[0](index) == pytest.approx(cost, rel=1e-12)
    for param, expected in zip(dbn.rbm_layers[0].params, params):
        np.testing.assert_allclose(param.get_value(), expected, rtol=1e-12, atol=1e-15)
    # layer 1 sees layer 0's means, with layer 0's new (shared) parameters; stream sets 3 and 4
    W0, b0 = (p.get_value() for p in dbn.sigmoid_layers[0].params)
    params = [p.get_value() for p in dbn.rbm_layers[1].params]
    hidden = sigmoid(train_x[4:] @ W0 + b0)
    cost, params = numpy_cd1_step(hidden, *params, *layer_stream_sets(SEED, 1), learning_rate=0.05)
    assert fns[1](index=1, lr=0.05) == pytest.approx(cost, rel=1e-12)
    for param, expected in zip(dbn.rbm_layers[1].params, params):
        np.testing.assert_allclose(param.get_value(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(dbn.sigmoid_layers[0].W.get_value(), W0)  # layer 0 untouched by layer 1's step


def test_finetune_functions_match_numpy():
    rng = np.random.RandomState(1)
    splits = [(rng.uniform(size=(n, 12)), rng.randint(3, size=n)) for n in (10, 7, 9)]
    data = [(pytensor.shared(x), pytensor.tensor.cast(pytensor.shared(y.astype("float64")), "int32"))
            for x, y in splits]
    dbn = DBN(np.random.RandomState(123), n_ins=12, hidden_layers_sizes=[6], n_outs=3)
    dbn.logLayer.W.set_value(rng.normal(size=(6, 3)))
    dbn.logLayer.b.set_value(rng.normal(size=3))
    W0, b0, W, b = (p.get_value() for p in dbn.params)
    train_fn, valid_score, test_score = dbn.build_finetune_functions(data, batch_size=3, learning_rate=0.1)

    def numpy_model(x):
        hidden = sigmoid(x @ W0 + b0)
        scores = hidden @ W + b
        return hidden, np.exp(scores - scores.max(axis=1, keepdims=True))

    for score, (x, y) in [(valid_score, splits[1]), (test_score, splits[2])]:
        predicted = np.argmax(numpy_model(x)[1], axis=1)
        want = [np.mean(predicted[i : i + 3] != y[i : i + 3]) for i in range(0, len(x) - 2, 3)]
        np.testing.assert_array_equal(score(), want)  # every whole minibatch, none partial
    x, y = splits[0][0][3:6], splits[0][1][3:6]
    hidden, unnormalised = numpy_model(x)
    p = unnormalised / unnormalised.sum(axis=1, keepdims=True)
    assert train_fn(1) == pytest.approx(-np.mean(np.log(p[np.arange(3), y])), rel=1e-12)
    # the logistic layer's step: W - 0.1 * hidden' (p - onehot(y)) / batch
    np.testing.assert_allclose(dbn.logLayer.W.get_value(), W - 0.1 * hidden.T @ (p - np.eye(3)[y]) / 3, rtol=1e-12)


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    """30 training images (three minibatches of 10), 20 validation and 20 test images."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:30], train_y[:30]), (valid_x[:20], valid_y[:20]), (test_x[:20], test_y[:20]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz")


def test_test_DBN_prints_the_original_lines(tiny_mnist, mnist, tmp_path, capsys):
    state = run_with_files("DBN", tmp_path, pretraining_epochs=1, training_epochs=1, dataset=str(tiny_mnist))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:4] == ["... loading data", "... building the model", "... getting the pretraining functions",
                         "... pre-training the model"]
    for i in range(3):  # the mean as Python prints a float, after two spaces
        assert re.fullmatch(rf"Pre-training layer {i}, epoch 0, cost  -\d+\.\d+(e[+-]\d+)?", lines[4 + i])
    assert lines[7:9] == ["... getting the finetuning functions", "... finetuning the model"]
    assert re.fullmatch(r"epoch 1, minibatch 3/3, validation error \d+\.\d{6} %", lines[9])
    assert re.fullmatch(r"     epoch 1, minibatch 3/3, test error of best model \d+\.\d{6} %", lines[10])
    assert re.fullmatch(r"Optimization complete with best validation score of \d+\.\d{6} %, obtained at "
                        r"iteration 3, with test performance \d+\.\d{6} %", lines[11])
    assert len(lines) == 12 and state.best_iter + 1 == 3
    assert re.fullmatch(r"The pretraining code for file DBN\.py ran for \d+\.\d\dm\n"
                        r"The fine tuning code for file DBN\.py ran for \d+\.\d\dm\n", err)

    # layer 0's epoch cost in NumPy: three CD-1 steps on minibatches of 10, stream sets 0 and 1 of the seed
    rng = np.random.RandomState(123)
    assert rng.randint(2 ** 30) == SEED
    params = [sigmoid_layer_W(rng, 784, 1000), np.zeros(1000), np.zeros(784)]
    states = layer_stream_sets(SEED, 0)
    costs = []
    for index in range(3):
        cost, params = numpy_cd1_step(mnist[0][0][index * 10 : index * 10 + 10].astype("float64"), *params,
                                      *states, learning_rate=0.01)
        costs.append(cost)
    assert float(lines[4].split()[-1]) == pytest.approx(np.mean(costs), rel=1e-12)

    model = load_best_model(tmp_path / "best_model_DBN.npz")
    predicted = model.predict(mnist[2][0][:20])
    assert predicted.shape == (20,) and set(predicted) <= set(range(10))
    assert np.mean(predicted != mnist[2][1][:20]) * 100 == pytest.approx(float(lines[10].split()[-2]))


@pytest.mark.parametrize("sizes", [[], [5, 0], [5, -1], [2.5]])
def test_bad_layer_sizes_are_refused(sizes):
    with pytest.raises(ValueError, match="hidden_layers_sizes must ") as error:
        DBN(np.random.RandomState(0), n_ins=4, hidden_layers_sizes=sizes)
    assert "\n" not in str(error.value)


def test_k_below_one_is_refused(tiny_mnist):
    dbn = DBN(np.random.RandomState(0), n_ins=4, hidden_layers_sizes=[3])
    with pytest.raises(ValueError, match="k=0 must be a positive integer"):
        dbn.pretraining_functions(pytensor.shared(np.zeros((4, 4))), batch_size=2, k=0)
    with pytest.raises(ValueError, match=r"^k must be a positive integer; got 0$"):
        DBN_module.test_DBN(k=0, dataset=str(tiny_mnist))


def test_module_has_the_originals_defaults():
    assert DBN_module.test_DBN.__defaults__ == (0.1, 100, 0.01, 1, 1000, "mnist.pkl.gz", 10)
