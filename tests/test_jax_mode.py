"""The JAX mode: DynamicSlice, the rewrites that let JAX compile the tutorials' graphs,
``--mode``, and each program giving NUMBA's results in JAX mode on tiny data."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import REPO, run_python, run_with_files
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.gradient import verify_grad
from pytensor.graph.traversal import graph_inputs

from deeplearning_tutorial import (
    backend,
    cli,
    datasets,
    logistic_cg,
    logistic_sgd,
    speedups,
)
from deeplearning_tutorial.ops import DynamicSlice
from deeplearning_tutorial.ops.jax_rewriting import constant_difference
from deeplearning_tutorial.programs import PROGRAMS as PROGRAM_ENTRIES

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")


# ----------------------------------------------------------------------------
# The Op and the rewrites
# ----------------------------------------------------------------------------


def test_constant_difference_reads_affine_bounds():
    i, j = pt.lscalar("i"), pt.lscalar("j")
    assert constant_difference((i + 1) * 100, i * 100) == 100
    assert constant_difference(i + 7, i) == 7
    assert constant_difference(3 * (i - 2) + j, j + 3 * i) == -6
    assert constant_difference(-i + 4, 1 - i) == 3
    assert constant_difference(i * 2, i) is None  # depends on i
    assert constant_difference(j + 1, i) is None
    product = i * j
    assert constant_difference(product + 1, product) == 1  # a product of variables is one leaf
    assert constant_difference(i * (j + 1), i * j) is None  # the product is not expanded


@pytest.mark.parametrize("mode", ["FAST_COMPILE", "JAX"])
def test_dynamic_slice_is_numpy_slicing_inside_the_array(mode):
    x, start = pt.tensor3("x"), pt.lscalar("start")
    f = pytensor.function([x, start], DynamicSlice(1, 3)(x, start), mode=mode)
    value = np.arange(2 * 7 * 2, dtype=float).reshape(2, 7, 2)
    for s in range(5):
        np.testing.assert_array_equal(f(value, s), value[:, s:s + 3])
    assert f.maker.fgraph.outputs[0].type.shape == (None, 3, None)


def test_dynamic_slice_outside_the_array_is_an_index_error_in_python():
    x, start = pt.vector("x"), pt.lscalar("start")
    f = pytensor.function([x, start], DynamicSlice(0, 3)(x, start), mode="FAST_COMPILE")
    for bad in (-1, 5):
        with pytest.raises(IndexError, match="not inside its length 7"):
            f(np.zeros(7), bad)


def test_dynamic_slice_gradient():
    verify_grad(lambda x: DynamicSlice(0, 2)(x, 1) ** 2, [np.random.default_rng(0).normal(size=(5, 3))],
                rng=np.random.default_rng(1))


def minibatch_cost(b=4):
    """The tutorials' minibatch of a shared dataset with ``givens`` and its negative log-likelihood."""
    rng = np.random.default_rng(0)
    data_x = pytensor.shared(rng.normal(size=(12, 3)))
    data_y = pytensor.shared(rng.integers(0, 2, 12).astype("int32"))
    w = pytensor.shared(rng.normal(size=(3, 2)), name="w")
    index, x, y = pt.lscalar("index"), pt.matrix("x"), pt.ivector("y")
    p = pt.special.softmax(x @ w, axis=-1)
    cost = -pt.mean(pt.log(p)[pt.arange(y.shape[0]), y])
    givens = {x: data_x[index * b:(index + 1) * b], y: data_y[index * b:(index + 1) * b]}
    return index, cost, w, givens


@pytest.mark.parametrize("mode", ["NUMBA", "JAX"])
def test_minibatch_slices_become_dynamic_slices_in_jax_mode_only(mode):
    index, cost, w, givens = minibatch_cost()
    f = pytensor.function([index], [cost, pt.grad(cost, w)], givens=givens, mode=mode)
    ops = {type(node.op) for node in f.maker.fgraph.apply_nodes}
    assert (DynamicSlice in ops) == (mode == "JAX")


def test_minibatch_cost_and_gradient_in_jax_equal_python():
    index, cost, w, givens = minibatch_cost()
    results = [pytensor.function([index], [cost, pt.grad(cost, w)], givens=givens, mode=mode)
               for mode in ("FAST_COMPILE", "JAX")]
    for i in range(3):
        for jax_value, numba_value in zip(results[1](i), results[0](i)):
            np.testing.assert_allclose(jax_value, numba_value, rtol=1e-12)


def test_slices_beside_other_indices_compile_in_jax():
    x, i, j = pt.matrix("x"), pt.lscalar("i"), pt.lscalar("j")
    outputs = [x[i:i + 2, j], x[1, i * 3:(i + 1) * 3], x[i:i + 2, j * 2:j * 2 + 3]]
    f = pytensor.function([x, i, j], outputs, mode="JAX")
    value = np.arange(42.0).reshape(6, 7)
    for result, expected in zip(f(value, 1, 2), [value[1:3, 2], value[1, 3:6], value[1:3, 4:7]]):
        np.testing.assert_array_equal(result, expected)


def test_the_speedups_jax_mode_puts_the_shared_data_on_the_device_once():
    import jax

    index, cost, w, givens = minibatch_cost()
    data = [variable for variable in graph_inputs(givens.values()) if isinstance(variable, SharedVariable)]
    reference = pytensor.function([index], cost, givens=givens, mode="FAST_COMPILE")
    f = pytensor.function([index], cost, givens=givens, mode=speedups.mode("JAX"))
    assert len(data) == 2 and all(isinstance(d.get_value(borrow=True), jax.Array) for d in data)
    for i in range(3):
        np.testing.assert_allclose(f(i), reference(i), rtol=1e-12)


def test_a_slice_of_variable_length_is_left_alone():
    """x[i:j] has no static length: the rewrite leaves it, and JAX refuses it, as before."""
    x, i, j = pt.vector("x"), pt.lscalar("i"), pt.lscalar("j")
    f = pytensor.function([x, i, j], x[i:j] * 2, mode="JAX")
    assert DynamicSlice not in {type(node.op) for node in f.maker.fgraph.apply_nodes}
    with pytest.raises(IndexError, match="static start/stop/step"):
        f(np.arange(6.0), 1, 4)


def test_gradient_through_a_reshaped_view_of_a_flat_vector_compiles_in_jax():
    """logistic_cg's parameters: W and b are slices of one vector theta, W reshaped."""
    theta = pytensor.shared(np.linspace(-1, 1, 8), name="theta")
    x = pt.matrix("x", shape=(4, 3))
    w, b = theta[0:6].reshape((3, 2)), theta[6:8]
    cost = pt.sum(pt.tanh(x @ w + b) ** 2)
    value = np.random.default_rng(0).normal(size=(4, 3))
    jax_grad, python_grad = (pytensor.function([x], pt.grad(cost, theta), mode=mode)(value)
                             for mode in ("JAX", "FAST_COMPILE"))
    np.testing.assert_allclose(jax_grad, python_grad, rtol=1e-12)


# ----------------------------------------------------------------------------
# --mode and its errors
# ----------------------------------------------------------------------------


def test_the_jax_mode_without_jax_names_the_extra(monkeypatch):
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r'pip install "\.\[jax\]"'):
        backend.check_mode("JAX")
    backend.check_mode("NUMBA")  # other modes need no JAX


def test_a_missing_jax_device_is_an_error_not_the_cpu(monkeypatch):
    import jax

    def no_gpu():
        raise RuntimeError("Unknown backend: 'gpu' requested, but no platforms that are instances of gpu are present")

    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    monkeypatch.setattr(jax, "devices", no_gpu)
    with pytest.raises(ValueError, match=r"JAX_PLATFORMS=cuda asks JAX for a device it cannot start.*\.\[gpu\]"):
        backend.check_mode("JAX")
    monkeypatch.delenv("JAX_PLATFORMS")
    backend.check_mode("JAX")  # no platform asked for: JAX's choice


def test_mode_option_selects_the_mode_for_the_run(small_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(logistic_sgd.speedups, "mode", lambda base=None: seen.append(pytensor.config.mode)
                        or pytensor.compile.mode.get_mode(base))
    cli.run("logistic_sgd", ["--mode", "JAX", "--n-epochs", "1", "--dataset", str(small_mnist), "--batch-size", "250"])
    assert seen == ["JAX"] and pytensor.config.mode != "JAX"  # the default is back after the run
    assert "validation error" in capsys.readouterr().out


# ----------------------------------------------------------------------------
# Each program: the same results in JAX as in NUMBA
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory):
    """600 images per split: logistic_cg's chunk of 600 fits once in each."""
    subset = tuple((x[:600], y[:600]) for x, y in mnist)
    return str(datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz"))


def run_logistic_sgd(dataset, folder):
    state = logistic_sgd.sgd_optimization_mnist(n_epochs=1, dataset=dataset, batch_size=100)
    with open(folder / "best_model.pkl", "rb") as f:
        classifier = pickle.load(f)
    return state, [p.get_value() for p in classifier.params]


def run_with_best_model_file(name, **kwargs):
    def run(dataset, folder):
        state = run_with_files(name, folder, n_epochs=1, dataset=dataset, **kwargs)
        with np.load(folder / PROGRAM_ENTRIES[name].best_model_file) as arrays:
            return state, [arrays[name] for name in sorted(arrays.files) if name.startswith("array_")]
    return run


def run_logistic_cg(dataset, folder):
    return logistic_cg.cg_optimization_mnist(n_epochs=2, mnist_pkl_gz=dataset), []


PROGRAMS = {
    "logistic_sgd": run_logistic_sgd,
    "logistic_cg": run_logistic_cg,
    "mlp": run_with_best_model_file("mlp", batch_size=50, n_hidden=20),
    "convolutional_mlp": run_with_best_model_file("convolutional_mlp", nkerns=[3, 4], batch_size=100, n_hidden=20),
    "lenet5": run_with_best_model_file("lenet5", batch_size=100),
}


@pytest.mark.parametrize("program", PROGRAMS)
def test_each_program_gives_numba_results_in_jax(program, tiny_mnist, tmp_path, monkeypatch, capsys):
    """One epoch in each mode from the same initial weights: the same validation and test
    errors (the same images misclassified; the rates may differ in their last bit, as XLA
    computes the mean differently), and final weights equal to within float64 rounding.
    XLA sums in another order than NUMBA's BLAS and loops and fuses other operations, so
    each step differs by a few ulps, which one epoch of SGD carries along without
    amplifying much (measured in float64: 1e-16 absolute, 3e-13 relative at most; rtol
    1e-9 allowed); an error count would change only if an image's two best classes were
    that close, which none of these is."""
    results = {}
    for mode in ("NUMBA", "JAX"):
        folder = tmp_path / mode
        folder.mkdir()
        monkeypatch.chdir(folder)
        with pytensor.config.change_flags(mode=mode):
            results[mode] = PROGRAMS[program](tiny_mnist, folder)
    (numba_state, numba_params), (jax_state, jax_params) = results["NUMBA"], results["JAX"]
    assert [step[0] for step in jax_state.history] == [step[0] for step in numba_state.history]
    np.testing.assert_allclose([step[1:] for step in jax_state.history], [step[1:] for step in numba_state.history],
                               rtol=1e-12)
    np.testing.assert_allclose([jax_state.best_validation_loss, jax_state.test_score],
                               [numba_state.best_validation_loss, numba_state.test_score], rtol=1e-12)
    assert len(jax_params) == len(numba_params)
    for jax_value, numba_value in zip(jax_params, numba_params):
        np.testing.assert_allclose(jax_value, numba_value, rtol=1e-9, atol=1e-12)
    capsys.readouterr()


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu(small_mnist, tmp_path):
    """scripts/gpu_check.sh end to end, with JAX on the CPU standing in for the GPU."""
    env = {**os.environ, "PLATFORM": "cpu", "PYTHON": sys.executable, "DATASET": str(small_mnist),
           "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--installed"], env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for program in ("lenet", "mlp"):
        assert f"{program}: the GPU's errors equal the CPU's at every validation" in result.stdout


def test_a_program_drawing_mrg_noise_prints_numbas_lines_in_jax(tiny_mnist, tmp_path):
    """dA's corruption is an MRG draw of the minibatch's shape: in a fresh process, whose JAX backend is
    imported only once the first function is linked, the draw's size must still be known when JAX traces."""
    lines = {}
    for mode in ("NUMBA", "JAX"):
        result = run_python(str(REPO / "scripts" / "dA.py"), "--mode", mode, "--training-epochs", "1",
                            "--dataset", tiny_mnist, "--output-folder", str(tmp_path / mode), cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        lines[mode] = [line for line in result.stdout.splitlines() if line.startswith("Training epoch")]
    assert len(lines["NUMBA"]) == 2
    for numba_line, jax_line in zip(lines["NUMBA"], lines["JAX"], strict=True):
        assert float(jax_line.split()[-1]) == pytest.approx(float(numba_line.split()[-1]), rel=1e-12)
