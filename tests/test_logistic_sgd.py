"""logistic_sgd: the layer's maths, and the published result reproduced exactly."""

from __future__ import annotations

import os
import pickle
import re
import types

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import REPO, run_python

from deeplearning_tutorial import logistic_sgd
from deeplearning_tutorial.logistic_sgd import LogisticRegression


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_logistic_regression_matches_numpy():
    rng = np.random.default_rng(0)
    x = pt.matrix("x")
    y = pt.ivector("y")
    layer = LogisticRegression(x, n_in=6, n_out=4)
    W = rng.normal(size=(6, 4)).astype(pytensor.config.floatX)
    b = rng.normal(size=4).astype(pytensor.config.floatX)
    layer.W.set_value(W)
    layer.b.set_value(b)
    xv = rng.normal(size=(5, 6)).astype(pytensor.config.floatX)
    yv = np.array([0, 3, 1, 1, 2], dtype=np.int32)
    f = pytensor.function([x, y], [layer.p_y_given_x, layer.y_pred,
                                   layer.negative_log_likelihood(y), layer.errors(y)])
    p, pred, nll, err = f(xv, yv)
    p_ref = numpy_softmax(xv @ W + b)
    np.testing.assert_allclose(p, p_ref, rtol=1e-6)
    assert p.shape == (5, 4) and pred.shape == (5,)
    np.testing.assert_array_equal(pred, p_ref.argmax(axis=1))
    np.testing.assert_allclose(nll, -np.mean(np.log(p_ref[np.arange(5), yv])), rtol=1e-6)
    assert err == pytest.approx(np.mean(p_ref.argmax(axis=1) != yv))
    assert [p.name for p in layer.params] == ["W", "b"] and layer.input is x


def test_initial_parameters_are_zero():
    layer = LogisticRegression(pt.matrix(), n_in=784, n_out=10)
    assert layer.W.get_value().shape == (784, 10) and not layer.W.get_value().any()
    assert layer.b.get_value().shape == (10,) and not layer.b.get_value().any()
    assert layer.W.dtype == pytensor.config.floatX


def test_errors_checks_the_label_type():
    layer = LogisticRegression(pt.matrix(), n_in=3, n_out=2)
    with pytest.raises(TypeError):
        layer.errors(pt.imatrix())
    with pytest.raises(NotImplementedError):
        layer.errors(pt.vector())


FINAL_LINES = [
    "Optimization complete with best validation score of 7.500000 %,with test performance 7.489583 %",
]


def test_first_epoch_prints_the_published_digits(mnist_path, tmp_path, monkeypatch, capsys):
    """The full run's first lines, digit for digit (the whole run is the slow test below)."""
    monkeypatch.chdir(tmp_path)
    logistic_sgd.sgd_optimization_mnist(n_epochs=1, dataset=str(mnist_path))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:5] == ["... loading data", "... building the model", "... training the model",
                         "epoch 1, minibatch 83/83, validation error 12.458333 %",
                         "     epoch 1, minibatch 83/83, test error of best model 12.375000 %"]


@pytest.mark.slow  # 74 epochs and a second process; the first epoch's digits are checked above
@pytest.mark.parametrize("floatX", ["float64", "float32"])
def test_full_run_reproduces_the_published_result(floatX, mnist_path, tmp_path):
    result = run_python(str(REPO / "scripts" / "logistic_sgd.py"), cwd=tmp_path,
                        env={"PYTENSOR_FLAGS": f"floatX={floatX}"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["... loading data", "... building the model", "... training the model"]
    assert lines[3] == "epoch 1, minibatch 83/83, validation error 12.458333 %"
    assert lines[4] == "     epoch 1, minibatch 83/83, test error of best model 12.375000 %"
    assert lines[-2] == FINAL_LINES[0]
    assert re.fullmatch(r"The code run for 74 epochs, with \d+\.\d{6} epochs/sec", lines[-1])
    assert re.search(r"^The code for file logistic_sgd\.py ran for \d+\.\ds$", result.stderr, re.M)

    # predict() reloads best_model.pkl and prints its predictions for 10 test images
    predicted = run_python("-c", "from deeplearning_tutorial.logistic_sgd import predict; predict()",
                           cwd=tmp_path, env={"PYTENSOR_FLAGS": f"floatX={floatX}"})
    assert predicted.returncode == 0, predicted.stderr
    out = predicted.stdout.splitlines()
    assert out[-2] == "Predicted values for the first 10 examples in test set:"
    printed = [int(v) for v in re.findall(r"\d+", out[-1])]
    with open(tmp_path / "best_model.pkl", "rb") as f:
        classifier = pickle.load(f)
    from deeplearning_tutorial.datasets import read_dataset
    test_x = read_dataset(mnist_path)[2][0][:10]
    expected = (test_x @ classifier.W.get_value() + classifier.b.get_value()).argmax(axis=1)
    assert printed == expected.tolist()
    # the same model in the safe format, beside the pickle
    from deeplearning_tutorial.programs import load_best_model
    if floatX == pytensor.config.floatX:
        safe = load_best_model(tmp_path / "best_model_logistic.npz")
    else:
        with pytest.warns(UserWarning, match=f"was trained in {floatX}"):
            safe = load_best_model(tmp_path / "best_model_logistic.npz")
    assert safe.program == "logistic_sgd" and safe.config["n_epochs"] == 1000
    assert safe.predict(test_x).tolist() == expected.tolist()


def test_bad_hyperparameters_fail_before_compiling(mnist_path, tmp_path):
    result = run_python(str(REPO / "scripts" / "logistic_sgd.py"), "--batch-size", "20000", cwd=tmp_path)
    assert result.returncode == 1
    assert "batch_size 20000 is larger than the smallest data split" in result.stderr
    assert "building the model" not in result.stdout


def test_help_lists_every_parameter(tmp_path):
    result = run_python("-m", "deeplearning_tutorial.logistic_sgd", "--help", cwd=tmp_path)
    for option in ("--learning-rate", "--n-epochs", "--dataset", "--batch-size"):
        assert option in result.stdout


def test_a_full_disk_while_pickling_the_best_model_names_the_real_file(small_mnist, tmp_path, monkeypatch):
    from deeplearning_tutorial.checkpoints import RunFileError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "best_model.pkl").write_bytes(b"an earlier model")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(logistic_sgd, "pickle", types.SimpleNamespace(dump=full))  # only the tutorial's pickle
    with pytest.raises(RunFileError) as error:
        logistic_sgd.sgd_optimization_mnist(n_epochs=1, dataset=str(small_mnist), batch_size=100)
    assert str(error.value).startswith("could not write best_model.pkl: No space left on device; "
                                       "the earlier file (if any) is unchanged")
    assert (tmp_path / "best_model.pkl").read_bytes() == b"an earlier model"
    assert not [name for name in os.listdir(tmp_path) if name.endswith((".tmp", ".lock"))]
