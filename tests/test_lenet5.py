"""lenet5: the layers against NumPy/SciPy references, the paper's parameter counts, clear errors, a short run."""

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
from scipy import signal as scipy_signal

from deeplearning_tutorial.datasets import read_dataset
from deeplearning_tutorial.lenet5 import C3_TABLES, LeNet5, train_lenet5
from deeplearning_tutorial.programs import load_best_model

floatX = pytensor.config.floatX
SCRIPT = str(REPO / "scripts" / "lenet5.py")
PAPER_COUNTS = {"input": 0, "C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164, "output": 850}


def squash(a):
    return 1.7159 * np.tanh(2.0 * a / 3.0)


def test_summary_prints_the_papers_parameter_counts():
    result = run_python(SCRIPT, "--summary", cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert {name: int(row[-1].replace(",", "")) for name, row in rows.items() if name != "total"} == PAPER_COUNTS
    assert rows["C1"][1] == "6x28x28" and rows["S2"][1] == "6x14x14" and rows["C3"][1] == "16x10x10"
    assert rows["S4"][1] == "16x5x5" and rows["C5"][1] == "120x1x1" and rows["F6"][1] == "84"
    assert rows["total"][-1] == f"{sum(PAPER_COUNTS.values()):,}"
    assert "... loading data" not in result.stdout  # it exits before anything else

    full = run_python(SCRIPT, "--summary", "--c3-table", "full", cwd=REPO)
    assert re.search(r"^C3\s+16x10x10\s+2,416$", full.stdout, re.M), full.stdout


@pytest.mark.parametrize("c3_table, subsampling", [("lecun", "lecun"), ("full", "max")])
def test_the_network_stores_the_parameters_the_summary_counts(c3_table, subsampling):
    network = LeNet5(np.random.RandomState(0), pt.matrix(), 4, c3_table=c3_table, subsampling=subsampling)
    for layer, row in zip(network.layers, network.summary[1:], strict=True):
        assert sum(p.get_value().size for p in layer.params) == row.params, row.name
    assert network.C3.W.get_value().shape == (sum(map(len, C3_TABLES[c3_table])), 5, 5)
    assert len(network.params) == len({id(p) for p in network.params})


def test_table_one_has_the_papers_connections():
    table = C3_TABLES["lecun"]
    assert [len(row) for row in table] == [3] * 6 + [4] * 9 + [6]
    assert table[0] == (0, 1, 2) and table[6] == (0, 1, 2, 3) and table[12:15] == ((0, 1, 3, 4), (1, 2, 4, 5),
                                                                                   (0, 2, 3, 5))


def test_c3_convolves_only_the_s2_maps_of_its_table():
    rng = np.random.RandomState(1)
    s2 = pt.tensor4()
    network = LeNet5(rng, pt.matrix(), 2)
    c3 = network.C3
    c3.b.set_value(rng.normal(size=16).astype(floatX))
    xv = rng.normal(size=(2, 6, 14, 14)).astype(floatX)
    filters, result = pytensor.function([s2], [c3.filters, c3(s2)], mode="CVM")(xv)
    W, b = c3.W.get_value(), c3.b.get_value()
    pairs = [(j, i) for j, row in enumerate(C3_TABLES["lecun"]) for i in row]  # W's order
    mask = np.zeros((16, 6), bool)
    mask[tuple(zip(*pairs))] = True
    assert np.all(filters[~mask] == 0) and np.array_equal(filters[tuple(zip(*pairs))], W)
    connection = 0
    sums = np.zeros((2, 16, 10, 10))
    for j, row in enumerate(C3_TABLES["lecun"]):
        for i in row:
            for n in range(2):
                sums[n, j] += scipy_signal.convolve2d(xv[n, i], W[connection], mode="valid")
            connection += 1
    expected = squash(sums + b[None, :, None, None])
    np.testing.assert_allclose(result, expected, rtol=2e-5, atol=2e-5)


def test_the_papers_subsampling_is_a_scaled_window_sum_plus_bias_then_squashed():
    rng = np.random.RandomState(2)
    network = LeNet5(rng, pt.matrix(), 2)
    s2 = network.S2
    s2.b.set_value(rng.normal(size=6).astype(floatX))
    xv = rng.normal(size=(2, 6, 28, 28)).astype(floatX)
    c1 = pt.tensor4()
    result = pytensor.function([c1], s2(c1, deterministic=True), mode="CVM")(xv)
    window_sums = xv.reshape(2, 6, 14, 2, 14, 2).sum(axis=(3, 5))
    coefficient, b = s2.coefficient.get_value(), s2.b.get_value()
    np.testing.assert_allclose(result, squash(window_sums * coefficient[None, :, None, None] + b[None, :, None, None]),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("scaling, background, ink", [("lecun", -0.1, 1.175), ("none", 0.0, 255 / 256)])
def test_the_input_is_padded_to_32x32_at_the_background_level(scaling, background, ink):
    x = pt.matrix()
    network = LeNet5(np.random.RandomState(3), x, 2, scaling=scaling)
    images = np.zeros((2, 784), floatX)
    images[1, 0] = 255 / 256  # full ink in the top left corner of image 1
    padded = pytensor.function([x], network.padded_input, mode="CVM")(images)
    assert padded.shape == (2, 1, 32, 32)
    expected = np.full((2, 1, 32, 32), background)
    expected[1, 0, 2, 2] = ink
    np.testing.assert_allclose(padded, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(c3_table="lenet"), "unknown c3_table 'lenet'; choose one of 'lecun', 'full'"),
    (dict(subsampling="median"), "unknown subsampling 'median'"),
    (dict(squashing="relu"), "unknown squashing 'relu'"),
    (dict(scaling="unit"), "unknown scaling 'unit'"),
    (dict(filter_sizes=(5, 5)), "three positive integers"),
    (dict(filter_sizes=(5, 9, 5)), "C5's 5x5 filters do not fit its 3x3 input"),
    (dict(filter_sizes=(33, 5, 5)), "C1's 33x33 filters do not fit its 32x32 input"),
    (dict(filter_sizes=(9, 12, 1)), "S4 cannot subsample C3's 1x1 maps"),
])
def test_bad_arguments_are_refused_before_loading_anything(kwargs, message, capsys):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_lenet5(dataset="no_such_file.pkl.gz", **kwargs)
    assert "loading data" not in capsys.readouterr().out


def test_short_run_prints_the_tutorials_lines_and_saves_a_best_model(small_mnist, tmp_path):
    result = run_python(SCRIPT, "--dataset", str(small_mnist), "--n-epochs", "1", cwd=tmp_path,
                        env={"PYTENSOR_FLAGS": "floatX=float32"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == ["... loading data", "... building the model", "... training", "training @ iter =  0"]
    validation = float(re.fullmatch(r"epoch 1, minibatch 20/20, validation error (\d+\.\d{6}) %", lines[4])[1])
    test = float(re.fullmatch(r"     epoch 1, minibatch 20/20, test error of best model (\d+\.\d{6}) %", lines[5])[1])
    assert lines[6:] == ["Optimization complete.",
                         "Best validation score of %f %% obtained at iteration 20, with test performance %f %%"
                         % (validation, test)]
    assert validation < 50.0  # 20 minibatches of 100 images learn something (chance: 90 %)
    assert re.search(r"^The code for file lenet5\.py ran for \d+\.\d{2}m$", result.stderr, re.M)
    model = load_best_model(tmp_path / "best_model_lenet5.npz")
    test_x, test_y = read_dataset(small_mnist)[2]
    assert np.mean(model.predict(test_x) != test_y) == pytest.approx(test / 100.0)
    assert (tmp_path / "lenet5.ckpt").exists()


@pytest.mark.slow  # a LeNet-5 with stochastic pooling compiles for most of a minute; its Ops are tested alone
def test_stochastic_subsampling_trains_and_evaluates_deterministically(small_mnist, tmp_path, capsys):
    with pytensor.config.change_flags(mode="CVM"):
        state = run_with_files("lenet5", tmp_path, dataset=str(small_mnist), n_epochs=1, subsampling="stochastic",
                               c3_table="full", squashing="tanh")
    assert state.best_validation_loss < 0.8  # 20 minibatches learn something (chance: 0.9; measured 0.638)
    model = load_best_model(tmp_path / "best_model_lenet5.npz")
    test_x, test_y = read_dataset(small_mnist)[2]
    first, again = model.predict(test_x[:100]), model.predict(test_x[:100])
    np.testing.assert_array_equal(first, again)  # the test-time average draws nothing


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(small_mnist, tmp_path):
    args = [SCRIPT, "--dataset", str(small_mnist), "--n-epochs", "4"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    uninterrupted = run_python(*args, cwd=tmp_path / "a")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, *args], cwd=tmp_path / "b", env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("epoch 2,"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=600)
    assert process.returncode == 130 and "Stopped by SIGINT" in err, err
    resumed = run_python(*args, "--resume", cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[-1] == uninterrupted.stdout.splitlines()[-1]
    body = [line for line in ("".join(seen) + out + resumed.stdout).splitlines() if "error" in line]
    assert body == [line for line in uninterrupted.stdout.splitlines() if "error" in line]


def test_module_runs_as_a_program():
    result = run_python("-m", "deeplearning_tutorial.lenet5", "--summary", "--c3-table", "full", cwd=REPO)
    assert result.returncode == 0 and "2,416" in result.stdout, result.stderr
