"""The reproduction tooling: weight tiles, results from the tutorials' recorded history, --seeds."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import REPO

from deeplearning_tutorial.training import LoopState, run_record
from deeplearning_tutorial.utils import tile_raster_images

sys.path.insert(0, str(REPO / "scripts"))
import reproduce  # noqa: E402


def test_tiles_are_laid_out_row_by_row_with_spacing_and_scaling():
    X = np.arange(3 * 4, dtype=float).reshape(3, 4)  # three 2x2 images
    grid = tile_raster_images(X, (2, 2), (2, 2), tile_spacing=(1, 1))
    assert grid.shape == (5, 5) and grid.dtype == np.uint8
    # each image scaled by 1 / (3 + 1e-8), times 255, truncated
    np.testing.assert_array_equal(grid[:2, :2], [[0, 84], [169, 254]])
    np.testing.assert_array_equal(grid[:2, 3:], [[0, 84], [169, 254]])
    assert not grid[2].any() and not grid[:, 2].any()  # the spacing is black
    assert not grid[3:, 3:].any()  # a missing fourth image stays black
    raw = tile_raster_images(X, (2, 2), (1, 3), scale_rows_to_unit_interval=False, output_pixel_vals=False)
    np.testing.assert_array_equal(raw[:, 4:6], [[8, 9], [10, 11]])
    with pytest.raises(ValueError, match="X must be"):
        tile_raster_images(X, (3, 3), (1, 3))


def test_results_come_from_the_recorded_history():
    state = LoopState(patience=400, epoch=3, best_validation_loss=0.051, best_iter=199, test_score=0.05,
                      done_looping=True, history=[(99, 0.0923, 0.098), (199, 0.051, 0.05), (299, 0.052, None)])
    record = json.loads(json.dumps(run_record(state)))  # as the history file holds it
    assert record["stopped_by"] == "patience"
    result = reproduce.result_of(record)
    assert result["validation"] == pytest.approx(5.1) and result["test"] == pytest.approx(5.0)
    assert result["best_iteration"] == 200 and result["epochs"] == 3  # counted from 1, as printed
    assert [i for i, _ in result["validation_curve"]] == [100, 200, 300]
    assert [e for _, e in result["validation_curve"]] == pytest.approx([9.23, 5.1, 5.2])
    assert [i for i, _ in result["test_curve"]] == [100, 200]


def test_time_ratios_compare_whole_runs_only():
    assert reproduce.time_ratio({"minutes": 380.28}, 104.16) == "3.7x faster"
    assert reproduce.time_ratio({"minutes": 1.0}, 4.0) == "4.0x slower"
    assert reproduce.time_ratio({"minutes": None}, 4.0) == "-"
    assert reproduce.time_ratio(reproduce.PUBLISHED["logistic_cg"], 4.92) == "-"  # the optimisation's time only


def test_seeds_repeat_a_run_with_the_next_seeds_and_report_their_spread(mnist_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTENSOR_FLAGS", "floatX=float32")  # the children get their own flags
    quick = ["--only", "mlp", "--floatX", "float32", "--seeds", "2", "--out", str(tmp_path),
             "--program-args", "--n-epochs 1 --n-hidden 20 --batch-size 100 --learning-rate 0.1"]
    assert reproduce.main(quick) == 0
    result = json.loads((tmp_path / "mlp.json").read_text())
    other = json.loads((tmp_path / "seeds" / "mlp_seed1235.json").read_text())
    assert result["seed"] == 1234 and other["seed"] == 1235
    assert result["arguments"] == ["--n-epochs", "1", "--n-hidden", "20", "--batch-size", "100",
                                   "--learning-rate", "0.1"]
    # another seed is another initialisation, hence another (sane) result
    assert result["validation_curve"] != other["validation_curve"]
    assert 3 < other["test"] < 30
    # the curve is the loop's own record, the same numbers the log prints
    log = (tmp_path / "logs" / "mlp.log").read_text().splitlines()
    printed = [float(line.split()[-2]) for line in log if "validation error" in line]
    assert [round(e, 6) for _, e in result["validation_curve"]] == printed
    summary = result["seed_summary"]
    assert summary["seeds"] == [1234, 1235] and summary["test"] == [result["test"], other["test"]]
    assert summary["test_mean"] == pytest.approx(np.mean(summary["test"]))
    assert summary["test_std"] == pytest.approx(np.std(summary["test"], ddof=1))
    table = (tmp_path / "RESULTS.md").read_text()
    assert "| mlp | 2 (1234, 1235) |" in table and "not the published configuration" in table
    # --resume keeps finished runs: nothing is run again
    log = tmp_path / "logs" / "mlp_seed1235.log"
    before = log.stat().st_mtime_ns
    assert reproduce.main([*quick, "--resume"]) == 0
    assert log.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "mlp.json").read_text())["seed_summary"] == summary


@pytest.mark.parametrize("program_args, message", [
    ("--n-epochs '1", "No closing quotation"),
    ("--n-epochs 1 --bogus 2", "does not suit mlp: unrecognized arguments: --bogus 2"),
    ("--n-epochs one", "argument --n-epochs: invalid int value: 'one'"),
    ("--resume", "sets --resume itself"),
    ("--se 7", "sets --seed itself"),  # an abbreviation, as the program would read it
    ("--history=h.json", "sets --history-file itself"),
])
def test_bad_program_args_are_refused_before_anything_runs(tmp_path, capsys, program_args, message):
    with pytest.raises(SystemExit) as exit:
        reproduce.main(["--only", "mlp", "--out", str(tmp_path), f"--program-args={program_args}"])
    assert exit.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "mlp").exists()


def test_stale_and_interrupted_checkpoints(tmp_path, capsys):
    import pytensor

    from deeplearning_tutorial.checkpoints import Checkpoint
    from deeplearning_tutorial.training import LoopState

    workdir = tmp_path / "mlp"
    workdir.mkdir()
    param = pytensor.shared(np.zeros(3))
    Checkpoint(workdir / "mlp.ckpt", "mlp", {"n_epochs": 1}).save(LoopState(patience=5), [param])
    record = dict(arguments=["--n-epochs", "1"], floatX="float32", mode="NUMBA")
    # without --resume: an interrupted run's checkpoint stops reproduce.py with a message
    with pytest.raises(RuntimeError, match=r"mlp.ckpt holds an interrupted run: continue it with --resume"):
        reproduce.refuse_interrupted_checkpoint(workdir, "mlp")
    # with --resume: continued when this configuration left it ...
    command = []
    assert reproduce.checkpoint_left(workdir, "mlp", record, {**record, "wall_seconds": 3.0}, command)
    assert command == ["--resume"]
    # ... discarded, with a note, when other arguments left it
    command = []
    assert not reproduce.checkpoint_left(workdir, "mlp", record, {**record, "arguments": []}, command)
    assert command == ["--discard-checkpoint"] and "starting over" in capsys.readouterr().err
    Checkpoint(workdir / "mlp.ckpt", "mlp", {"n_epochs": 1}).save(LoopState(patience=5), [param], finished=True)
    reproduce.refuse_interrupted_checkpoint(workdir, "mlp")  # a finished run's: no objection


def test_ctrl_c_while_a_tutorial_starts_reaches_it(small_mnist, tmp_path):
    """The child must not inherit an ignored SIGINT: Ctrl-C during its start-up stops it."""
    import os
    import signal
    import subprocess

    command = [sys.executable, str(REPO / "scripts" / "reproduce.py"), "--only", "logistic_sgd", "--out",
               str(tmp_path), "--program-args", f"--dataset {small_mnist} --n-epochs 1000"]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(REPO)}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert process.stdout.readline().startswith("running -m deeplearning_tutorial.logistic_sgd")
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "logistic_sgd was interrupted; continue with --resume" in err
    assert not (tmp_path / "logistic_sgd.json").exists()


def test_a_ctrl_c_before_the_tutorial_is_started_is_passed_on_to_it():
    """The race of the test above made certain: the signal comes between the 'running' line and the fork."""
    import signal
    import subprocess

    with reproduce.signals_for_the_child() as child:
        signal.raise_signal(signal.SIGINT)  # handled here: nothing to interrupt yet
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        child.started(process)
        process.wait(timeout=30)
    assert process.returncode in reproduce.INTERRUPTED


def test_tiles_scale_as_the_original_pictures():
    # the brightest pixel of a scaled float64 tile is 254: (max - min) / (max - min + 1e-8) * 255 truncated
    rng = np.random.RandomState(0)
    weights = rng.normal(size=(3, 784))
    grid = tile_raster_images(weights, (28, 28), (1, 3), (1, 1))
    assert grid.max() == 254 and grid.min() == 0
    first = weights[0] - weights[0].min()
    np.testing.assert_array_equal(grid[:, :28], (first * (1.0 / (first.max() + 1e-8)) * 255).astype(np.uint8)
                                  .reshape(28, 28))
    # float32 weights: the factor is computed in float64, then rounded to float32
    weights32 = weights.astype(np.float32)
    shifted = weights32[1] - weights32[1].min()
    factor = np.float32(1.0 / (float(shifted.max()) + 1e-8))
    grid32 = tile_raster_images(weights32, (28, 28), (1, 3), (1, 1))
    np.testing.assert_array_equal(grid32[:, 29:57], ((shifted * factor) * 255).astype(np.uint8).reshape(28, 28))
