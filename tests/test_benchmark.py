"""scripts/benchmark.py times the tutorials' own compiled functions, built by their build_model."""

from __future__ import annotations

import sys

import numpy as np
import pytensor
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


def test_profile_nodes_runs_the_training_graph_node_by_node(mnist_path):
    import profile_nodes

    model = benchmark.build("logistic")
    model.train_model(0)  # weights away from zero
    before = [param.get_value() for param in model.params]
    rows, whole, outputs = profile_nodes.profile(model.train_model, "NUMBA", repeats=2)
    assert len(rows) == len(model.train_model.maker.fgraph.apply_nodes) and whole > 0
    assert all(row["seconds"] > 0 for row in rows)
    assert any("Dot" in row["op"] for row in rows)
    # node by node, from the weights before the timed calls: the cost and the updated weights of one call
    for param, value in zip(model.params, before):
        param.set_value(value)
    cost = model.train_model(0)
    np.testing.assert_allclose(outputs[0], cost, rtol=1e-6)
    fgraph = model.train_model.maker.fgraph
    by_input = {fgraph.inputs[i]: outputs[o] for o, i in fgraph.update_mapping.items()}
    for variable, container in zip(fgraph.inputs, model.train_model.input_storage):
        if variable in by_input:
            np.testing.assert_allclose(by_input[variable], container.data, rtol=1e-6, atol=1e-7)
    assert len(by_input) == len(model.params)


def test_profile_compile_splits_a_first_call_into_the_graph_and_its_nodes():
    import profile_compile

    graph = profile_compile.GRAPH_FUNCTION
    # (depth, name, seconds, own seconds) in order of start: a cache wrapper, the graph, two kinds of node
    events = [(0, graph, 10.0, 2.0), (1, graph, 8.0, 3.0), (2, "elemwise", 2.0, 1.5), (3, "impl", 0.5, 0.5),
              (2, "elemwise", 1.0, 1.0), (2, "careduce_add", 2.0, 2.0)]
    summary = profile_compile.summarize(events)
    assert summary["compilations"] == 6
    assert summary["graph_own_s"] == 5.0
    assert summary["nodes"] == {"elemwise": (2, 3.0), "careduce_add": (1, 2.0)}
    # a graph inside a node (an OpFromGraph's) is that node's, not the graph's own
    nested = profile_compile.summarize(events + [(2, "opfromgraph", 1.0, 0.2), (3, graph, 0.8, 0.8)])
    assert nested["graph_own_s"] == 5.0
    assert nested["nodes"]["opfromgraph"] == (1, 1.0)
    text = profile_compile.report("lenet", {"train_model": {"first_call_s": 10.0, **summary}}, top=1)
    assert text.splitlines() == [
        "lenet train_model: first call 10.00 s, 6 Numba compilations; the whole graph's own 5.00 s, its nodes 5.00 s",
        "      3.00 s    2 x  elemwise"]


def test_profile_compile_refuses_a_cache_dir_that_is_not_empty(tmp_path, capsys):
    import profile_compile

    (tmp_path / "old").write_text("x")
    with pytest.raises(SystemExit):
        profile_compile.main(["logistic", "--cache-dir", str(tmp_path)])
    assert "not empty" in capsys.readouterr().err


def test_benchmark_mrg_times_the_noise_against_the_training_call(capsys):
    import benchmark_mrg

    assert benchmark_mrg.main(["--repeats", "2", "--mode", "FAST_COMPILE"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"mode FAST_COMPILE, floatX {pytensor.config.floatX}, 2 calls each (microseconds)"
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["noise", "train", "train without noise"]
    assert lines[4].startswith("   min: noise / train = ") and lines[5].startswith("median: noise / train = ")
