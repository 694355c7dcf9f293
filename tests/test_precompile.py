"""scripts/precompile.py fills PyTensor's cache with the very graphs `make run` compiles."""

from __future__ import annotations

import contextlib
import io
import sys

import numba
import pytest
from conftest import REPO
from pytensor.link.numba.dispatch.basic import numba_funcify_and_cache_key

from deeplearning_tutorial import convolutional_mlp
from deeplearning_tutorial.logistic_sgd import load_data

sys.path.insert(0, str(REPO / "scripts"))
import precompile  # noqa: E402

FUNCTIONS = ("train_model", "validate_model", "test_model")


def cache_keys(model) -> dict:
    """What PyTensor's NUMBA linker and Numba's cache index file each function's compiled graph
    under: the whole graph's key and the Numba types of its arguments."""
    keys = {}
    for name in FUNCTIONS:
        function = getattr(model, name)
        argument_types = tuple(numba.typeof(storage.data) for storage in function.input_storage)
        keys[name] = (numba_funcify_and_cache_key(function.maker.fgraph)[1], argument_types)
    return keys


def real_model(mnist_path, **overrides):
    arguments = precompile.run_arguments() | overrides
    with contextlib.redirect_stdout(io.StringIO()):
        return convolutional_mlp.build_model(load_data(mnist_path), **arguments)


class Built(Exception):
    pass


def test_the_arguments_are_those_evaluate_lenet5_builds_with(mnist_path, tmp_path, monkeypatch):
    calls = []

    def record(datasets, **arguments):
        calls.append(arguments)
        raise Built

    monkeypatch.setattr(convolutional_mlp, "build_model", record)
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(Built):
        convolutional_mlp.evaluate_lenet5(dataset=mnist_path)
    assert calls == [precompile.run_arguments()]


def test_placeholder_data_is_typed_as_load_datas(mnist_path):
    placeholders = precompile.placeholder_datasets(3)
    real = load_data(mnist_path)
    assert len(placeholders) == len(real) == 3
    for (x, y), (real_x, real_y) in zip(placeholders, real):
        assert x.type == real_x.type and y.type == real_y.type
        assert x.get_value().shape == (3, 784)


@pytest.fixture(scope="module")
def placeholder_keys():
    return cache_keys(precompile.build_placeholder_model())


def test_the_placeholder_graphs_are_cached_under_the_real_runs_keys(mnist_path, placeholder_keys):
    assert all(key is not None for key, _ in placeholder_keys.values())
    assert cache_keys(real_model(mnist_path)) == placeholder_keys
    # validation and test share one graph, compiled once
    assert placeholder_keys["validate_model"] == placeholder_keys["test_model"]


def test_another_batch_size_is_another_graph(mnist_path, placeholder_keys):
    keys = cache_keys(real_model(mnist_path, batch_size=250))
    assert all(keys[name][0] != placeholder_keys[name][0] for name in FUNCTIONS)
