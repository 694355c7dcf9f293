"""convolutional_mlp's tunable network: filter sizes, pooling windows, strides and modes, hidden units."""

from __future__ import annotations

import re

import pytest
from conftest import REPO, run_python

from deeplearning_tutorial.convolutional_mlp import evaluate_lenet5, feature_map_sizes

SCRIPT = str(REPO / "scripts" / "convolutional_mlp.py")


@pytest.mark.parametrize("filter_sizes, poolsizes, strides, expected", [
    ([(5, 5), (5, 5)], [(2, 2), (2, 2)], [(2, 2), (2, 2)], [(12, 12), (4, 4)]),  # the tutorial's
    ([(7, 7), (3, 3)], [(2, 2), (2, 2)], [(2, 2), (2, 2)], [(11, 11), (4, 4)]),  # 7x7 filters, then 3x3 ones
    ([(5, 5), (5, 5)], [(3, 3), (3, 3)], [(2, 2), (2, 2)], [(11, 11), (3, 3)]),  # overlapping pooling
    ([(5, 3), (3, 5)], [(2, 1), (1, 2)], [(2, 1), (1, 2)], [(12, 26), (10, 11)]),
])
def test_feature_map_sizes(filter_sizes, poolsizes, strides, expected):
    assert feature_map_sizes(filter_sizes, poolsizes, strides) == expected


@pytest.mark.parametrize("kwargs, message", [
    (dict(filter_sizes=(25, 5)), "layer1: 5x5 filters do not fit its 2x2 input"),
    (dict(filter_sizes=(29, 5)), "layer0: 29x29 filters do not fit its 28x28 input"),
    (dict(poolsizes=(2, 9)), "layer1: the 9x9 pooling window does not fit its 8x8 convolution output"),
    (dict(filter_sizes=(7,)), "filter_sizes needs 2 entries"),
    (dict(poolsizes=((2, 0), 2)), "poolsizes must be positive integers"),
    (dict(pool_strides=(1, 1.5)), "pool_strides must be positive integers"),
    (dict(pool_mode="median"), "pool_mode must be one of max, sum, average_inc_pad, average_exc_pad, l2"),
    (dict(pool_mode="stochastic"), "lenet5 --subsampling stochastic"),
    (dict(n_hidden=0), "n_hidden must be a positive integer"),
])
def test_impossible_networks_are_refused_before_loading_anything(kwargs, message, capsys):
    with pytest.raises(ValueError, match=re.escape(message)):
        evaluate_lenet5(dataset="no_such_file.pkl.gz", **kwargs)
    assert "loading data" not in capsys.readouterr().out


def test_the_command_line_sets_every_knob(small_mnist, tmp_path):
    result = run_python(SCRIPT, "--dataset", str(small_mnist), "--n-epochs", "1", "--nkerns", "5", "5",
                        "--filter-sizes", "7", "3", "--pool-mode", "average_exc_pad", "--poolsizes", "3", "2",
                        "--pool-strides", "2", "2", "--n-hidden", "50", "--batch-size", "100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"epoch 1, minibatch 20/20, validation error \d+\.\d{6} %", lines[4])
    assert lines[-2] == "Optimization complete."
    # the network really changed: its best model has 7x7 filters, then 3x3 ones, and 50 hidden units
    from deeplearning_tutorial.programs import load_best_model

    layers = load_best_model(tmp_path / "best_model_lenet.npz").classifier
    assert layers[0].W.get_value().shape == (5, 1, 7, 7) and layers[1].W.get_value().shape == (5, 5, 3, 3)
    # 28 -> conv 22 -> pool 3x3 stride 2: 10 -> conv 8 -> pool 2x2 stride 2: 4
    assert layers[2].W.get_value().shape == (5 * 4 * 4, 50)
