"""The reproduction tooling: weight tiles, the parsing of the tutorials' printed lines, --seeds."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import REPO
from deeplearning_tutorial.utils import tile_raster_images

sys.path.insert(0, str(REPO / "scripts"))
import reproduce  # noqa: E402


def test_tiles_are_laid_out_row_by_row_with_spacing_and_scaling():
    X = np.arange(3 * 4, dtype=float).reshape(3, 4)  # three 2x2 images
    grid = tile_raster_images(X, (2, 2), (2, 2), tile_spacing=(1, 1))
    assert grid.shape == (5, 5) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:2, :2], [[0, 85], [170, 255]])  # each image scaled to 0..255
    np.testing.assert_array_equal(grid[:2, 3:], [[0, 85], [170, 255]])
    assert not grid[2].any() and not grid[:, 2].any()  # the spacing is black
    assert not grid[3:, 3:].any()  # a missing fourth image stays black
    raw = tile_raster_images(X, (2, 2), (1, 3), scale_rows_to_unit_interval=False, output_pixel_vals=False)
    np.testing.assert_array_equal(raw[:, 4:6], [[8, 9], [10, 11]])
    with pytest.raises(ValueError, match="X must be"):
        tile_raster_images(X, (3, 3), (1, 3))


LENET_LOG = """... loading data
... building the model
... training
training @ iter =  0
epoch 1, minibatch 100/100, validation error 9.230000 %
     epoch 1, minibatch 100/100, test error of best model 9.800000 %
epoch 2, minibatch 100/100, validation error 5.100000 %
     epoch 2, minibatch 100/100, test error of best model 5.000000 %
epoch 3, minibatch 100/100, validation error 5.200000 %
Optimization complete.
Best validation score of 5.100000 % obtained at iteration 200, with test performance 5.000000 %
"""


def test_parse_log_reads_curves_and_the_final_result():
    parsed = reproduce.parse_log(LENET_LOG)
    assert parsed["validation"] == 5.1 and parsed["test"] == 5.0 and parsed["best_iteration"] == 200
    assert parsed["epochs"] == 3
    assert parsed["validation_curve"] == [(100, 9.23), (200, 5.1), (300, 5.2)]
    assert parsed["test_curve"] == [(100, 9.8), (200, 5.0)]
    logistic = ("epoch 1, minibatch 83/83, validation error 12.458333 %\n"
                "Optimization complete with best validation score of 12.458333 %,with test performance 12.375000 %\n"
                "The code run for 2 epochs, with 20.000000 epochs/sec\n")
    parsed = reproduce.parse_log(logistic)
    assert parsed["epochs"] == 2 and parsed["best_iteration"] == 83 and parsed["test"] == 12.375
    with pytest.raises(ValueError, match="did not finish"):
        reproduce.parse_log(LENET_LOG.rsplit("Optimization", 1)[0])


def test_seeds_repeat_a_run_with_the_next_seeds_and_report_their_spread(mnist_path, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTENSOR_FLAGS", "floatX=float32")  # the children get their own flags
    quick = ["--only", "mlp", "--floatX", "float32", "--seeds", "2", "--out", str(tmp_path),
             "--program-args", "--n-epochs 1 --n-hidden 20 --batch-size 100 --learning-rate 0.1"]
    assert reproduce.main(quick) == 0
    result = json.loads((tmp_path / "mlp.json").read_text())
    other = json.loads((tmp_path / "seeds" / "mlp_seed1235.json").read_text())
    assert result["seed"] == 1234 and other["seed"] == 1235
    assert result["arguments"] == ["--n-epochs", "1", "--n-hidden", "20", "--batch-size", "100", "--learning-rate", "0.1"]
    # another seed is another initialisation, hence another (sane) result
    assert result["validation_curve"] != other["validation_curve"]
    assert 3 < other["test"] < 30
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
