"""The command line: options from the registry, and one-line errors instead of tracebacks."""

from __future__ import annotations

import pytest
from conftest import REPO, run_python

from deeplearning_tutorial import cli
from deeplearning_tutorial.programs import PROGRAMS


def test_every_program_offers_its_run_file_options():
    for program in PROGRAMS.values():
        options = {action.dest for action in cli.program_parser(program)._actions}
        assert {"history_file", "mode"} <= options
        assert ("resume" in options) == (program.checkpoint_file is not None)
        assert ("best_model_file" in options) == (program.best_model_file is not None)


def test_abbreviated_options_count_as_the_program_reads_them():
    assert cli.changed_options(PROGRAMS["mlp"], ["--se", "7"]) == {"seed": 7}
    with pytest.raises(ValueError, match="unrecognized arguments"):
        cli.changed_options(PROGRAMS["mlp"], ["--bogus"])


def test_a_network_too_large_for_memory_is_one_line(small_mnist, tmp_path):
    result = run_python(str(REPO / "scripts" / "mlp.py"), "--dataset", str(small_mnist), "--n-hidden", "1000000000",
                        cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not enough memory for this run of mlp with " in result.stderr and "--n-hidden 1000000000" in result.stderr
    assert not list(tmp_path.glob("*.lock"))


def test_a_floatx_the_tutorials_do_not_support_is_refused(tmp_path):
    result = run_python(str(REPO / "scripts" / "mlp.py"), "--n-epochs", "1", cwd=tmp_path,
                        env={"PYTENSOR_FLAGS": "floatX=float16"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "floatX=float16 is not supported" in result.stderr
