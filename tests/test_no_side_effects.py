"""Importing the package and using its Ops changes nothing else in the process
(scripts/check_side_effects.py: BLAS and OpenMP thread counts, the environment, the bits
of a float32 tanh(dot(x, w)) graph in the default mode, freed memory returning to the system)."""

from __future__ import annotations

import json

from conftest import REPO, run_python


def test_importing_and_using_the_ops_changes_nothing_else():
    result = run_python(str(REPO / "scripts" / "check_side_effects.py"), cwd=REPO, all_cores=True)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["differences"]
    assert report["differences"] == {}
    assert report["before"]["freed_memory_returns"]  # the measurement can see a change


def test_the_tutorial_programs_keep_freed_memory_in_their_main_only():
    code = ("import sys; sys.path.insert(0, 'scripts'); from check_side_effects import freed_memory_returns;"
            "import deeplearning_tutorial.convolutional_mlp, deeplearning_tutorial.speedups.process as process;"
            "print(freed_memory_returns(), process.keep_freed_memory(), freed_memory_returns())")
    result = run_python("-c", code, cwd=REPO)
    assert result.stdout.split() == ["True", "True", "False"], result.stderr
