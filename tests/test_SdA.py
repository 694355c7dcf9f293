"""SdA: the construction and its random-draw order, the pre-training functions' stream sets and
costs against NumPy with the MRG reference, the fine-tuning functions, test_SdA's lines, its
best model, and bad input."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytensor
import pytest
from conftest import run_with_files
from test_dA import N_STREAMS, numpy_step, reference_mask, reference_streams
from test_rng_mrg import RefStreams

from deeplearning_tutorial import SdA as SdA_module
from deeplearning_tutorial import datasets
from deeplearning_tutorial.programs import load_best_model
from deeplearning_tutorial.SdA import SdA


@pytest.fixture(autouse=True)
def float64():
    with pytensor.config.change_flags(floatX="float64"):
        yield


def sigmoid_layer_W(rng, n_in, n_out):
    bound = np.sqrt(6.0 / (n_in + n_out))
    return 4 * rng.uniform(-bound, bound, size=(n_in, n_out))


def test_construction_draws_the_generator_seed_then_each_layer_and_shares_W_and_b():
    sda = SdA(np.random.RandomState(89677), n_ins=12, hidden_layers_sizes=[6, 5], n_outs=3)
    rng = np.random.RandomState(89677)
    assert rng.randint(2 ** 30) == sda.dA_layers[0].theano_rng.default_instance_seed
    np.testing.assert_array_equal(sda.sigmoid_layers[0].W.get_value(), sigmoid_layer_W(rng, 12, 6))
    np.testing.assert_array_equal(sda.sigmoid_layers[1].W.get_value(), sigmoid_layer_W(rng, 6, 5))
    for layer, da in zip(sda.sigmoid_layers, sda.dA_layers):
        assert da.W is layer.W and da.b is layer.b and da.theano_rng is sda.dA_layers[0].theano_rng
    assert sda.dA_layers[1].x is sda.sigmoid_layers[0].output
    expected = [*sda.sigmoid_layers[0].params, *sda.sigmoid_layers[1].params, *sda.logLayer.params]
    assert len(sda.params) == 6 and all(p is q for p, q in zip(sda.params, expected))


def test_pretraining_functions_use_one_stream_set_per_layer_in_order():
    seed = 1054665268
    assert np.random.RandomState(89677).randint(2 ** 30) == seed
    data_rng = np.random.RandomState(0)
    train_x = data_rng.uniform(size=(8, 12))
    sda = SdA(np.random.RandomState(89677), n_ins=12, hidden_layers_sizes=[6, 5], n_outs=3)
    fns = sda.pretraining_functions(pytensor.shared(train_x), batch_size=4)
    references = RefStreams(seed)
    sets = [references.new_set(N_STREAMS), references.new_set(N_STREAMS)]
    assert copy.deepcopy(sets[0]) == reference_streams(seed)
    # layer 1's dA: its input is the sigmoid layer 0's output, its mask from stream set 1
    W0, b0 = sda.sigmoid_layers[0].W.get_value(), sda.sigmoid_layers[0].b.get_value()
    params = [p.get_value() for p in sda.dA_layers[1].params]
    for index in (1, 0):
        hidden = 1.0 / (1.0 + np.exp(-(train_x[index * 4 : index * 4 + 4] @ W0 + b0)))
        cost, params = numpy_step(hidden, reference_mask(sets[1], hidden.shape, 0.25), *params,
                                  learning_rate=0.05)
        np.testing.assert_allclose(fns[1](index=index, corruption=0.25, lr=0.05), cost, rtol=1e-12)
    for param, expected in zip(sda.dA_layers[1].params, params):
        np.testing.assert_allclose(param.get_value(), expected, rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(sda.sigmoid_layers[0].W.get_value(), W0)  # layer 0 untouched
    # the defaults: corruption 0.2, learning rate 0.1, layer 0's mask from set 0
    params = [p.get_value() for p in sda.dA_layers[0].params]
    cost, _ = numpy_step(train_x[:4], reference_mask(sets[0], (4, 12), 0.2), *params, learning_rate=0.1)
    np.testing.assert_allclose(fns[0](0), cost, rtol=1e-12)


def test_finetune_functions_score_every_whole_minibatch():
    rng = np.random.RandomState(1)

    def split(n):
        return (pytensor.shared(rng.uniform(size=(n, 12))),
                pytensor.tensor.cast(pytensor.shared(rng.randint(3, size=n).astype("float64")), "int32"))

    sda = SdA(np.random.RandomState(89677), n_ins=12, hidden_layers_sizes=[6], n_outs=3, corruption_levels=[0.1])
    data = [split(10), split(7), split(9)]
    train_fn, valid_score, test_score = sda.build_finetune_functions(data, batch_size=3, learning_rate=0.1)
    assert len(valid_score()) == 2 and len(test_score()) == 3
    # the logistic layer starts at zero: every class has probability 1/3
    assert train_fn(0) == pytest.approx(np.log(3), rel=1e-12)
    assert train_fn(0) < np.log(3)  # the step moved it towards the labels


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:30], train_y[:30]), (valid_x[:20], valid_y[:20]), (test_x[:20], test_y[:20]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz")


def test_test_SdA_prints_the_original_lines(tiny_mnist, mnist, tmp_path, capsys):
    state = run_with_files("SdA", tmp_path, pretraining_epochs=1, training_epochs=1, dataset=str(tiny_mnist))
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[:4] == ["... loading data", "... building the model", "... getting the pretraining functions",
                         "... pre-training the model"]
    for i in range(3):
        assert re.fullmatch(rf"Pre-training layer {i}, epoch 0, cost \d+\.\d{{6}}", lines[4 + i])
    assert lines[7:9] == ["... getting the finetuning functions", "... finetunning the model"]
    assert re.fullmatch(r"epoch 1, minibatch 30/30, validation error \d+\.\d{6} %", lines[9])
    assert re.fullmatch(r"     epoch 1, minibatch 30/30, test error of best model \d+\.\d{6} %", lines[10])
    assert re.fullmatch(r"Optimization complete with best validation score of \d+\.\d{6} %, on iteration 30, "
                        r"with test performance \d+\.\d{6} %", lines[11])
    assert len(lines) == 12 and state.best_iter + 1 == 30
    assert re.fullmatch(r"The pretraining code for file SdA\.py ran for \d+\.\d\dm\n"
                        r"The training code for file SdA\.py ran for \d+\.\d\dm\n", err)

    # layer 0's epoch cost in NumPy: 30 one-example steps, masks from stream set 0 of the original's seed
    rng = np.random.RandomState(89677)
    states = reference_streams(rng.randint(2 ** 30))
    params = (sigmoid_layer_W(rng, 784, 1000), np.zeros(1000), np.zeros(784))
    train_x = mnist[0][0][:30].astype("float64")
    costs = []
    for index in range(30):
        xv = train_x[index : index + 1]
        cost, params = numpy_step(xv, reference_mask(states, xv.shape, 0.1), *params, learning_rate=0.001)
        costs.append(cost)
    assert lines[4] == "Pre-training layer 0, epoch 0, cost %f" % np.mean(costs)

    model = load_best_model(tmp_path / "best_model_SdA.npz")
    predicted = model.predict(mnist[2][0][:20])
    assert predicted.shape == (20,) and set(predicted) <= set(range(10))
    assert np.mean(predicted != mnist[2][1][:20]) * 100 == pytest.approx(float(lines[10].split()[-2]))


@pytest.mark.parametrize(("sizes", "levels", "message"), [
    ([], [], "hidden_layers_sizes must list at least one layer size"),
    ([5, 0], [0.1, 0.1], "hidden_layers_sizes must be two positive integers"),
    ([5, 4], [0.1], r"corruption_levels must give one level per layer \(2\)"),
    ([5], [1.0], r"corruption_level must be in \[0, 1\)"),
])
def test_bad_layers_are_refused(sizes, levels, message):
    with pytest.raises(ValueError, match=message):
        SdA(np.random.RandomState(0), n_ins=4, hidden_layers_sizes=sizes, corruption_levels=levels)


def test_module_runs_as_the_original_names_it():
    assert SdA_module.test_SdA.__defaults__ == (0.1, 15, 0.001, 1000, "mnist.pkl.gz", 1)
