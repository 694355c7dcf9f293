"""mlp: the layers' maths and initialisation, the original short run, determinism, divergence, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import REPO, run_python, run_with_files

from deeplearning_tutorial import mlp
from deeplearning_tutorial.training import DivergenceError

floatX = pytensor.config.floatX


def test_hidden_layer_initialisation_follows_the_random_stream():
    layer = mlp.HiddenLayer(np.random.RandomState(1234), pt.matrix(), n_in=784, n_out=500)
    bound = np.sqrt(6.0 / (784 + 500))
    expected = np.random.RandomState(1234).uniform(low=-bound, high=bound, size=(784, 500))
    np.testing.assert_array_equal(layer.W.get_value(), expected.astype(floatX))
    assert not layer.b.get_value().any() and layer.b.get_value().shape == (500,)
    sigmoid = mlp.HiddenLayer(np.random.RandomState(1234), pt.matrix(), 784, 500, activation=pt.sigmoid)
    np.testing.assert_allclose(sigmoid.W.get_value(), 4 * expected.astype(floatX))


def test_hidden_layer_and_penalties_match_numpy():
    rng = np.random.RandomState(0)
    x = pt.matrix("x")
    model = mlp.MLP(rng, x, n_in=6, n_hidden=4, n_out=3)
    model.logRegressionLayer.W.set_value(rng.normal(size=(4, 3)).astype(floatX))
    xv = rng.normal(size=(5, 6)).astype(floatX)
    hidden, l1, l2 = pytensor.function([x], [model.hiddenLayer.output, model.L1, model.L2_sqr])(xv)
    W1, b1 = model.hiddenLayer.W.get_value(), model.hiddenLayer.b.get_value()
    W2 = model.logRegressionLayer.W.get_value()
    np.testing.assert_allclose(hidden, np.tanh(xv @ W1 + b1), rtol=1e-5)
    np.testing.assert_allclose(l1, np.abs(W1).sum() + np.abs(W2).sum(), rtol=1e-5)
    np.testing.assert_allclose(l2, (W1 ** 2).sum() + (W2 ** 2).sum(), rtol=1e-5)
    linear = mlp.HiddenLayer(rng, x, 6, 2, activation=None)
    np.testing.assert_allclose(pytensor.function([x], linear.output)(xv), xv @ linear.W.get_value(), rtol=1e-5)
    assert [p.name for p in model.params] == ["W", "b", "W", "b"]


VALID = r"epoch 1, minibatch 2500/2500, validation error (\d+\.\d{6}) %"
TEST = r"     epoch 1, minibatch 2500/2500, test error of best model (\d+\.\d{6}) %"
FINAL = (r"Optimization complete\. Best validation score of (\d+\.\d{6}) % obtained at iteration 2500, "
         r"with test performance (\d+\.\d{6}) %")


def test_original_short_run(mnist_path, tmp_path):
    """The original test suite's test_mlp(n_epochs=1), as a command."""
    result = run_python(str(REPO / "scripts" / "mlp.py"), "--n-epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["... loading data", "... building the model", "... training"]
    validation = float(re.fullmatch(VALID, lines[3]).group(1))
    test = float(re.fullmatch(TEST, lines[4]).group(1))
    final = re.fullmatch(FINAL, lines[5])
    assert float(final.group(1)) == validation and float(final.group(2)) == test
    assert 2.0 < validation < 12.0 and 2.0 < test < 12.0  # one epoch of SGD: a few per cent
    assert re.search(r"^The code for file mlp\.py ran for \d+\.\d{2}m$", result.stderr, re.M)
    assert (tmp_path / "best_model_mlp.npz").exists() and (tmp_path / "mlp.ckpt").exists()
    assert not list(tmp_path.glob("*.lock"))  # the run's locks are released


def run_in_process(capsys, tmp_path, **kwargs):
    state = run_with_files("mlp", tmp_path, **kwargs)
    return state, capsys.readouterr().out


def test_two_runs_print_identical_lines(small_mnist, tmp_path, capsys):
    _, first = run_in_process(capsys, tmp_path, dataset=str(small_mnist), n_epochs=3)
    _, second = run_in_process(capsys, tmp_path, dataset=str(small_mnist), n_epochs=3)
    assert first == second and first.count("validation error") == 3


def test_a_diverging_run_stops_with_a_clear_message(small_mnist, tmp_path, capsys):
    with pytest.raises(DivergenceError, match=r"at iteration \d+ .*try a smaller one"):
        run_in_process(capsys, tmp_path, dataset=str(small_mnist), n_epochs=3, learning_rate=1e4, L2_reg=1.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(batch_size=501), "batch_size 501 is larger than the smallest data split"),
    (dict(learning_rate=0.0), "learning_rate must be > 0"),
    (dict(n_epochs=0), "n_epochs must be an integer >= 1"),
    (dict(n_hidden=0), "n_hidden must be a positive integer"),
    (dict(L1_reg=-0.01), "L1_reg must be a finite number >= 0"),
    (dict(L2_reg=-1e-4), "L2_reg must be a finite number >= 0"),
])
def test_bad_hyperparameters_fail_before_compiling(small_mnist, tmp_path, capsys, kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_in_process(capsys, tmp_path, dataset=str(small_mnist), **kwargs)
    assert "building the model" not in capsys.readouterr().out


SMALL = ["--n-hidden", "20", "--batch-size", "100", "--n-epochs", "30"]


def start(small_mnist, tmp_path, *args):
    """The program in a child process with Ctrl-C's default action, as a terminal starts it
    (a test run started in the background of a shell ignores SIGINT, and its children would too)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "mlp.py"), "--dataset", str(small_mnist),
                             *SMALL, *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes_to_the_same_result(small_mnist, tmp_path):
    process = start(small_mnist, tmp_path)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 2,"):
            process.send_signal(signal.SIGTERM)
            break
    out, err = process.communicate(timeout=300)
    stdout = "".join(seen) + out
    assert process.returncode == 143, err  # 128 + SIGTERM
    assert "Optimization complete" not in stdout and "inf %" not in stdout
    assert stdout.splitlines()[-1].startswith("Interrupted by SIGTERM in epoch ")
    assert "Stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err

    # a new run refuses to start over the interrupted one, before building anything
    again = run_python(str(REPO / "scripts" / "mlp.py"), "--dataset", str(small_mnist), *SMALL, cwd=tmp_path)
    assert again.returncode == 1 and "mlp.ckpt holds an interrupted run" in again.stderr
    assert "--resume" in again.stderr and "--discard-checkpoint" in again.stderr
    assert "building the model" not in again.stdout
    resumed = run_python(str(REPO / "scripts" / "mlp.py"), "--dataset", str(small_mnist), *SMALL, "--resume",
                         cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming mlp.ckpt" in resumed.stderr and "Optimization complete." in resumed.stdout
    # the two parts print exactly the lines of a run that was never stopped
    (tmp_path / "whole").mkdir()
    whole = run_python(str(REPO / "scripts" / "mlp.py"), "--dataset", str(small_mnist), *SMALL,
                       cwd=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert resumed.stdout.splitlines()[-1] == whole.stdout.splitlines()[-1]
    parts = [line for line in (stdout + resumed.stdout).splitlines() if "error" in line and "Interrupted" not in line]
    assert parts == [line for line in whole.stdout.splitlines() if "error" in line]


def test_ctrl_c_before_training_exits_130_without_a_traceback(small_mnist, tmp_path):
    process = start(small_mnist, tmp_path)
    assert process.stdout.readline() == "... loading data\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "before training started" in err and "Traceback" not in err
    assert not list(tmp_path.glob("*.lock"))
