"""logistic_cg: theta and its views, the objective against NumPy, the printed lines, Ctrl-C.

Facts about the original program (Theano tutorial ``logistic_cg.py``) the
tests rely on: ``cg_optimization_mnist(n_epochs=50, mnist_pkl_gz='mnist.pkl.gz')``
prints ``... loading data``, ``... building the model``,
``Optimizing using scipy.optimize.fmin_cg...``, one ``validation error %f %%``
line per CG iteration, then
``Optimization complete with best validation score of %f %%, with test performance %f %%``;
on stderr ``The code for file logistic_cg.py ran for %.1fs``.  The original
code, run on Theano 1.0.5 in float64, ends its 50 iterations with
7.312500 % / 7.416667 %.  The original's own test ran 10 iterations.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import REPO, run_python

from deeplearning_tutorial.logistic_cg import FINAL_LINE, LogisticRegression, build_cg_model

FLOATX = pytensor.config.floatX
RTOL = 1e-10 if FLOATX == "float64" else 1e-4


def shared_splits(rng, sizes, n_in, n_out):
    """Random images and labels as load_data returns them: shared floatX x, int32-cast y."""
    splits = []
    for size in sizes:
        x = rng.integers(0, 256, size=(size, n_in)) / 256.0
        y = rng.integers(0, n_out, size=size)
        splits.append((pytensor.shared(x.astype(FLOATX)), pt.cast(pytensor.shared(y.astype(FLOATX)), "int32")))
    return splits


def numpy_softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_theta_holds_all_parameters_and_W_b_are_views_of_it():
    x = pt.matrix("x")
    layer = LogisticRegression(x, n_in=6, n_out=4)
    theta = layer.theta.get_value(borrow=True)
    assert layer.theta.name == "theta" and theta.dtype == FLOATX
    assert theta.shape == (6 * 4 + 4,) and not theta.any()
    assert layer.params == [layer.theta] and layer.input is x

    layer.theta.set_value(np.arange(28, dtype=FLOATX))
    views = pytensor.function([], [pytensor.Out(layer.W, borrow=True), pytensor.Out(layer.b, borrow=True)])
    W, b = views()
    theta = layer.theta.get_value(borrow=True)
    np.testing.assert_array_equal(W, np.arange(24).reshape(6, 4))  # row-major: W[i, j] = theta[4 i + j]
    np.testing.assert_array_equal(b, np.arange(24, 28))
    assert np.shares_memory(W, theta) and np.shares_memory(b, theta)


def test_the_layer_computes_logistic_regression():
    rng = np.random.default_rng(0)
    x, y = pt.matrix("x"), pt.ivector("y")
    layer = LogisticRegression(x, n_in=6, n_out=4)
    theta = rng.normal(size=28).astype(FLOATX)
    layer.theta.set_value(theta)
    xv = rng.normal(size=(5, 6)).astype(FLOATX)
    yv = np.array([0, 3, 1, 1, 2], dtype=np.int32)
    p, pred, nll, err = pytensor.function(
        [x, y], [layer.p_y_given_x, layer.y_pred, layer.negative_log_likelihood(y), layer.errors(y)])(xv, yv)
    p_ref = numpy_softmax(xv @ theta[:24].reshape(6, 4) + theta[24:])
    np.testing.assert_allclose(p, p_ref, rtol=1e-5)
    np.testing.assert_array_equal(pred, p_ref.argmax(axis=1))
    np.testing.assert_allclose(nll, -np.mean(np.log(p_ref[np.arange(5), yv])), rtol=1e-5)
    assert err == pytest.approx(np.mean(p_ref.argmax(axis=1) != yv))


def test_objective_and_gradient_match_numpy():
    rng = np.random.default_rng(1)
    n_in, n_out, batch_size = 20, 5, 30
    splits = shared_splits(rng, (100, 40, 35), n_in, n_out)  # 3 training chunks, 10 examples left out
    model = build_cg_model(splits, batch_size=batch_size, n_in=n_in, n_out=n_out)
    assert (model.n_train_batches, model.n_valid_batches, model.n_test_batches) == (3, 1, 1)
    theta = rng.normal(scale=0.3, size=n_in * n_out + n_out)

    x = splits[0][0].get_value()
    y = splits[0][1].owner.inputs[0].get_value().astype(int)
    W, b = theta[: n_in * n_out].reshape(n_in, n_out), theta[n_in * n_out :]
    costs, grads = [], []
    for start in range(0, 90, batch_size):
        xc, yc = x[start : start + batch_size].astype(np.float64), y[start : start + batch_size]
        p = numpy_softmax(xc @ W + b)
        costs.append(-np.mean(np.log(p[np.arange(batch_size), yc])))
        delta = (p - np.eye(n_out)[yc]) / batch_size  # d(mean NLL) / d(logits)
        grads.append(np.concatenate([(xc.T @ delta).ravel(), delta.sum(axis=0)]))

    cost = model.train_fn(theta)
    grad = model.train_fn_grad(theta)
    assert isinstance(cost, float) and grad.dtype == np.float64 and grad.shape == theta.shape
    np.testing.assert_allclose(cost, np.mean(costs), rtol=RTOL)
    np.testing.assert_allclose(grad, np.mean(grads, axis=0), rtol=RTOL, atol=1e-7)


def test_cost_and_gradient_in_one_pass_equal_two_separate_functions_to_the_bit():
    """The original compiled the chunk cost and its gradient as two functions."""
    rng = np.random.default_rng(2)
    splits = shared_splits(rng, (120, 40, 40), 20, 5)
    model = build_cg_model(splits, batch_size=40, n_in=20, n_out=5)
    classifier = model.classifier
    offset, labels = pt.lscalar(), pt.ivector("labels")
    train_x, train_y = splits[0]
    cost = classifier.negative_log_likelihood(labels)
    givens = {classifier.input: train_x[offset : offset + 40], labels: train_y[offset : offset + 40]}
    batch_cost = pytensor.function([offset], cost, givens=givens)
    batch_grad = pytensor.function([offset], pt.grad(cost, classifier.theta), givens=givens)
    classifier.theta.set_value(rng.normal(scale=0.1, size=105).astype(FLOATX))
    for start in model.offsets(model.n_train_batches):
        together_cost, together_grad = model.batch_cost_and_grad(start)
        np.testing.assert_array_equal(together_cost, batch_cost(start))
        np.testing.assert_array_equal(together_grad, batch_grad(start))


def test_objective_and_gradient_at_one_point_take_one_pass():
    rng = np.random.default_rng(3)
    model = build_cg_model(shared_splits(rng, (60, 20, 20), 8, 3), batch_size=20, n_in=8, n_out=3)
    passes = []
    compiled = model.batch_cost_and_grad
    model.batch_cost_and_grad = lambda offset: passes.append(offset) or compiled(offset)
    theta = rng.normal(size=27)
    cost = model.train_fn(theta)
    grad = model.train_fn_grad(theta.copy())
    assert passes == [0, 20, 40]
    grad[:] = 0  # the caller's array is its own
    np.testing.assert_array_equal(model.train_fn_grad(theta), model.cost_and_grad(theta)[1])
    assert model.train_fn(theta) == cost and len(passes) == 3
    model.train_fn(theta + 1e-3)
    assert len(passes) == 6


def test_a_split_smaller_than_a_chunk_is_refused():
    splits = shared_splits(np.random.default_rng(4), (100, 20, 40), 8, 3)
    with pytest.raises(ValueError, match="validation split has 20 examples, fewer than one chunk of 40"):
        build_cg_model(splits, batch_size=40, n_in=8, n_out=3)


def test_final_line_format():
    # the space after the comma is the original's (logistic_sgd has none)
    assert FINAL_LINE % (7.3125, 7.416667) == (
        "Optimization complete with best validation score of 7.312500 %, with test performance 7.416667 %")


# The first ten validation lines of our float64 run, measured here; that run's 50th iteration ends
# with the original's final line (test_fifty_iterations_end_as_the_original below).
FIRST_TEN_FLOAT64 = [29.989583, 24.656250, 20.833333, 16.979167, 14.291667,
                     14.239583, 13.166667, 12.281250, 11.739583, 11.531250]
VALIDATION = re.compile(r"validation error (\d+\.\d{6}) %")
FINAL = re.compile(r"Optimization complete with best validation score of (\d+\.\d{6}) %, "
                   r"with test performance (\d+\.\d{6}) %")


def run_cg(tmp_path, floatX, *args):
    return run_python(str(REPO / "scripts" / "logistic_cg.py"), *args, cwd=tmp_path,
                      env={"PYTENSOR_FLAGS": f"floatX={floatX}"})


def check_printed_lines(result, n_iterations):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["... loading data", "... building the model", "Optimizing using scipy.optimize.fmin_cg..."]
    assert len(lines) == 3 + n_iterations + 1
    errors = [float(VALIDATION.fullmatch(line)[1]) for line in lines[3:-1]]
    final = FINAL.fullmatch(lines[-1])
    assert final, lines[-1]
    assert float(final[1]) == min(errors)
    assert re.search(r"^The code for file logistic_cg\.py ran for \d+\.\ds$", result.stderr, re.M)
    return errors, float(final[1]), float(final[2])


@pytest.mark.parametrize("floatX", ["float64", "float32"])
def test_ten_iterations(floatX, mnist_path, tmp_path):
    """The original's test: ``cg_optimization_mnist(n_epochs=10)``; float32 too (the original crashed there)."""
    errors, best, test = check_printed_lines(run_cg(tmp_path, floatX, "--n-epochs", "10"), 10)
    if floatX == "float64":
        assert errors == FIRST_TEN_FLOAT64
    else:  # another rounding, the same descent: within a quarter point of float64 at every iteration
        np.testing.assert_allclose(errors, FIRST_TEN_FLOAT64, atol=0.25)
    assert 10 < test < 13


@pytest.mark.slow
def test_fifty_iterations_end_as_the_original(mnist_path, tmp_path):
    errors, best, test = check_printed_lines(run_cg(tmp_path, "float64"), 50)
    assert errors[:10] == FIRST_TEN_FLOAT64
    assert (best, test) == (7.3125, 7.416667)


def test_ctrl_c_stops_after_the_iteration_with_the_best_so_far(mnist_path, tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "logistic_cg.py")], cwd=tmp_path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTENSOR_FLAGS": "floatX=float64"},
    )
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("validation error"):
            process.send_signal(signal.SIGINT)
            break
    rest, stderr = process.communicate(timeout=120)
    lines += rest.splitlines()
    assert process.returncode == 130, stderr
    errors = [float(VALIDATION.fullmatch(line)[1]) for line in lines if line.startswith("validation error")]
    assert 1 <= len(errors) < 50 and errors == FIRST_TEN_FLOAT64[: len(errors)]
    assert "Interrupted by SIGINT: finishing this iteration" in stderr
    final = re.fullmatch(r"Optimization interrupted after (\d+) iterations, with best validation score of "
                         r"(\d+\.\d{6}) %, with test performance (\d+\.\d{6}) %", lines[-1])
    assert final, lines[-1]
    assert int(final[1]) == len(errors) and float(final[2]) == min(errors)
    assert not any(line.startswith("Optimization complete") for line in lines)


def test_bad_arguments_and_datasets_fail_clearly(small_mnist, tmp_path):
    result = run_cg(tmp_path, "float64", "--n-epochs", "0")
    assert result.returncode == 1
    assert "error: n_epochs must be an integer >= 1, got 0" in result.stderr
    assert "loading data" not in result.stdout

    (tmp_path / "broken.pkl.gz").write_bytes(b"not a dataset")
    result = run_cg(tmp_path, "float64", "--mnist-pkl-gz", str(tmp_path / "broken.pkl.gz"))
    assert result.returncode == 1 and "error:" in result.stderr and "broken.pkl.gz" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_cg(tmp_path, "float64", "--mnist-pkl-gz", str(small_mnist))  # 500 validation images
    assert result.returncode == 1
    assert "the validation split has 500 examples, fewer than one chunk of 600" in result.stderr
    assert "Optimizing" not in result.stdout


def test_help_lists_every_parameter(tmp_path):
    result = run_python("-m", "deeplearning_tutorial.logistic_cg", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for option in ("--n-epochs", "--mnist-pkl-gz"):
        assert option in result.stdout


def test_history_file_matches_the_printed_lines_and_reproduce_reads_it(mnist_path, tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import reproduce

    result = run_cg(tmp_path, "float64", "--n-epochs", "3",
                    "--history-file", "history.json")
    assert result.returncode == 0, result.stderr
    printed = [float(VALIDATION.fullmatch(line)[1]) for line in result.stdout.splitlines()
               if line.startswith("validation error")]
    final = re.fullmatch(r"Optimization complete with best validation score of (\d+\.\d{6}) %, "
                         r"with test performance (\d+\.\d{6}) %", result.stdout.splitlines()[-1])
    parsed = reproduce.result_of(json.loads((tmp_path / "history.json").read_text()))
    assert [i for i, _ in parsed["validation_curve"]] == list(range(1, len(printed) + 1))
    assert [round(e, 6) for _, e in parsed["validation_curve"]] == printed  # one entry per CG iteration
    assert (round(parsed["validation"], 6), round(parsed["test"], 6)) == (float(final[1]), float(final[2]))
    assert parsed["validation"] == min(e for _, e in parsed["validation_curve"])
    assert parsed["best_iteration"] == 1 + printed.index(min(printed)) and parsed["epochs"] == len(printed)
