"""scripts/benchmark.py times the tutorials' own compiled functions, built by their build_model."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import REPO

from deeplearning_tutorial.training import CompiledModel

sys.path.insert(0, str(REPO / "scripts"))
import benchmark  # noqa: E402


def test_build_uses_the_tutorials_builder(mnist_path, capsys):
    model = benchmark.build("logistic")
    assert isinstance(model, CompiledModel)
    assert (model.n_train_batches, model.n_valid_batches, model.n_test_batches) == (83, 16, 16)
    # the tutorial's model: zero weights, so the first minibatch's cost is log(10); then it learns
    cost = float(model.train_model(0))
    assert cost == pytest.approx(np.log(10), rel=1e-6)
    assert float(model.train_model(0)) < cost
    assert 0.0 <= float(model.validate_model(0)) <= 1.0
    assert "... building the model" in capsys.readouterr().out
