"""convolutional_mlp: LeNetConvPoolLayer, the original short run, interrupt and resume, the best model."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import REPO, run_python, run_with_files
from scipy import signal as scipy_signal

from deeplearning_tutorial import convolutional_mlp
from deeplearning_tutorial.convolutional_mlp import LeNetConvPoolLayer
from deeplearning_tutorial.datasets import read_dataset
from deeplearning_tutorial.logistic_sgd import LogisticRegression
from deeplearning_tutorial.programs import load_best_model

floatX = pytensor.config.floatX
SCRIPT = str(REPO / "scripts" / "convolutional_mlp.py")


def test_first_layer_initialisation_follows_the_random_stream():
    layer = LeNetConvPoolLayer(np.random.RandomState(23455), pt.tensor4(), filter_shape=(20, 1, 5, 5),
                               image_shape=(500, 1, 28, 28))
    fan_in, fan_out = 1 * 5 * 5, 20 * 5 * 5 // 4
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    expected = np.random.RandomState(23455).uniform(low=-bound, high=bound, size=(20, 1, 5, 5))
    np.testing.assert_array_equal(layer.W.get_value(), expected.astype(floatX))
    assert not layer.b.get_value().any() and layer.b.get_value().shape == (20,)


def test_layer_output_matches_scipy():
    rng = np.random.RandomState(7)
    x = pt.tensor4("x")
    layer = LeNetConvPoolLayer(rng, x, filter_shape=(3, 2, 3, 3), image_shape=(2, 2, 9, 9), poolsize=(2, 2))
    layer.b.set_value(rng.normal(size=3).astype(floatX))
    xv = rng.normal(size=(2, 2, 9, 9)).astype(floatX)
    result = pytensor.function([x], layer.output)(xv)
    W, b = layer.W.get_value(), layer.b.get_value()
    conv = np.array([[sum(scipy_signal.convolve2d(xv[n, c], W[f, c], mode="valid") for c in range(2))
                      for f in range(3)] for n in range(2)])  # (2, 3, 7, 7)
    pooled = conv[:, :, :6, :6].reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5))  # ignore_border
    np.testing.assert_allclose(result, np.tanh(pooled + b[None, :, None, None]), rtol=1e-5, atol=1e-6)
    assert layer.params == [layer.W, layer.b] and layer.input is x


def test_sgd_updates_keep_the_filters_c_contiguous():
    """The tutorial's update of two stacked layers: the filters must stay C-contiguous.

    A negatively strided filter gradient (a flipped view) used to be updated in
    place, leaving the second layer's filters strided after the first step, and
    the NUMBA backend compiled the whole training function again for that layout.
    """
    rng = np.random.RandomState(0)
    batch = 4
    x, y = pt.matrix("x"), pt.ivector("y")
    layer0 = LeNetConvPoolLayer(rng, x.reshape((batch, 1, 12, 12)), filter_shape=(2, 1, 3, 3),
                                image_shape=(batch, 1, 12, 12))
    layer1 = LeNetConvPoolLayer(rng, layer0.output, filter_shape=(3, 2, 3, 3), image_shape=(batch, 2, 5, 5))
    layer2 = LogisticRegression(input=layer1.output.flatten(2), n_in=3, n_out=10)
    params = layer2.params + layer1.params + layer0.params
    cost = layer2.negative_log_likelihood(y)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, pt.grad(cost, params))]
    train = pytensor.function([x, y], cost, updates=updates, mode="NUMBA")
    for _ in range(2):
        train(rng.uniform(size=(batch, 144)).astype(floatX), np.arange(batch, dtype="int32"))
        assert all(p.get_value(borrow=True).flags.c_contiguous for p in params)


def test_layer_checks_the_map_counts():
    with pytest.raises(AssertionError):
        LeNetConvPoolLayer(np.random.RandomState(0), pt.tensor4(), (3, 2, 3, 3), (1, 4, 9, 9))


def test_original_short_run(mnist_path, tmp_path):
    """The original test suite's evaluate_lenet5(n_epochs=1, nkerns=[5, 5]), as a command."""
    result = run_python(SCRIPT, "--n-epochs", "1", "--nkerns", "5", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:5] == ["... loading data", "... building the model", "... training",
                         "training @ iter =  0", "epoch 1, minibatch 100/100, validation error "
                         + lines[4].rsplit(" ", 2)[1] + " %"]
    validation = float(re.fullmatch(r"epoch 1, minibatch 100/100, validation error (\d+\.\d{6}) %",
                                    lines[4]).group(1))
    test = float(re.fullmatch(r"     epoch 1, minibatch 100/100, test error of best model (\d+\.\d{6}) %",
                              lines[5]).group(1))
    assert lines[6] == "Optimization complete."
    assert lines[7] == ("Best validation score of %f %% obtained at iteration 100, with test performance %f %%"
                        % (validation, test))
    assert 2.0 < validation < 20.0 and 2.0 < test < 20.0
    assert re.search(r"^The code for file convolutional_mlp\.py ran for \d+\.\d{2}m$", result.stderr, re.M)


SMALL = ["--nkerns", "5", "5", "--batch-size", "100", "--n-epochs", "12"]


def final_lines(stdout: str) -> list[str]:
    return stdout.splitlines()[-2:]


@pytest.mark.slow  # three LeNet compiles; test_mlp checks the same on the MLP in the default suite
def test_interrupted_run_resumes_to_the_same_result(small_mnist, tmp_path):
    args = [SCRIPT, "--dataset", str(small_mnist), *SMALL]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    uninterrupted = run_python(*args, cwd=tmp_path / "a")
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    import os
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, *args], cwd=tmp_path / "b", env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 2,"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=300)
    interrupted = "".join(seen) + out
    assert process.returncode == 130, err  # 128 + SIGINT, as a shell reports it
    assert "Stopped by SIGINT" in err and "--resume" in err
    assert interrupted.count("validation error") < uninterrupted.stdout.count("validation error")
    # the best model so far is reported, as an interrupted run's
    assert "Optimization complete." not in interrupted
    assert re.fullmatch(r"Interrupted by SIGINT in epoch 2 after \d+ iterations: best validation score so far "
                        r"\d+\.\d{6} % obtained at iteration \d+, with test performance \d+\.\d{6} %",
                        interrupted.splitlines()[-1])

    resumed = run_python(*args, "--resume", cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert final_lines(resumed.stdout) == final_lines(uninterrupted.stdout)
    # together, the two parts printed exactly the lines of the uninterrupted run
    body = [line for line in (interrupted + resumed.stdout).splitlines() if "error" in line]
    assert body == [line for line in uninterrupted.stdout.splitlines() if "error" in line]


def test_best_model_is_saved_and_predicts(small_mnist, tmp_path, capsys):
    state = run_with_files("convolutional_mlp", tmp_path, dataset=str(small_mnist), nkerns=[5, 5],
                           batch_size=100, n_epochs=2)
    model = load_best_model(tmp_path / "best_model_lenet.npz")
    assert model.program == "convolutional_mlp" and model.config["nkerns"] == [5, 5]
    test_x, test_y = read_dataset(small_mnist)[2]
    predictions = model.predict(test_x.astype(floatX))
    assert predictions.shape == (500,) and set(np.unique(predictions)) <= set(range(10))
    assert np.mean(predictions != test_y) == pytest.approx(state.test_score)
    assert len(model.predict(test_x[:10].astype(floatX))) == 10  # a partial minibatch is padded


def test_resume_refuses_a_checkpoint_of_other_arguments(small_mnist, tmp_path):
    args = [SCRIPT, "--dataset", str(small_mnist), "--nkerns", "5", "5", "--batch-size", "100", "--n-epochs", "1"]
    assert run_python(*args, cwd=tmp_path).returncode == 0
    other = run_python(*args[:-1], "2", "--resume", cwd=tmp_path)
    assert other.returncode == 1 and "resume with the same arguments" in other.stderr
    assert "n_epochs: 1 there, 2 here" in other.stderr and "building the model" not in other.stdout
    missing = run_python(*args, "--resume", "--checkpoint-file", "none.ckpt", cwd=tmp_path)
    assert missing.returncode == 1 and "no checkpoint" in missing.stderr


@pytest.mark.parametrize("kwargs, message", [
    (dict(nkerns=[5]), "nkerns must be two positive integers"),
    (dict(nkerns=[5, 0]), "nkerns must be two positive integers"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size=1000), "larger than the smallest data split"),
    (dict(learning_rate=-0.1), "learning_rate must be > 0"),
    (dict(n_epochs=0), "n_epochs must be an integer >= 1"),
])
def test_bad_hyperparameters_fail_before_compiling(small_mnist, tmp_path, capsys, kwargs, message):
    with pytest.raises(ValueError, match=message):
        convolutional_mlp.evaluate_lenet5(dataset=str(small_mnist), **kwargs)
    assert "building the model" not in capsys.readouterr().out


def test_help_lists_every_parameter(tmp_path):
    result = run_python("-m", "deeplearning_tutorial.convolutional_mlp", "--help", cwd=tmp_path)
    for option in ("--learning-rate", "--n-epochs", "--dataset", "--nkerns", "--batch-size", "--resume"):
        assert option in result.stdout
