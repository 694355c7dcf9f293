"""Importing the package and using its Ops changes nothing else in the process
(scripts/check_side_effects.py: BLAS and OpenMP thread counts, the environment, the bits
of a float32 tanh(dot(x, w)) graph in the default mode, freed memory returning to the system)."""

from __future__ import annotations

import json

from conftest import REPO, run_python


def test_importing_and_using_the_ops_changes_nothing_else():
    result = run_python(str(REPO / "scripts" / "check_side_effects.py"), cwd=REPO)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["differences"]
    assert report["differences"] == {}
    assert report["before"]["freed_memory_returns"]  # the measurement can see a change


def test_the_tutorial_programs_keep_freed_memory_in_their_main_only():
    code = ("import deeplearning_tutorial.convolutional_mlp as m, deeplearning_tutorial.speedups.process as p;"
            "import numpy as np, os;"
            "statm = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE');"
            "a = np.ones(256 << 20, np.uint8); held = statm(); del a; print(held - statm() > (200 << 20));"
            "p.keep_freed_memory();"
            "a = np.ones(256 << 20, np.uint8); held = statm(); del a; print(held - statm() > (200 << 20))")
    result = run_python("-c", code, cwd=REPO)
    assert result.stdout.split() == ["True", "False"], result.stderr
