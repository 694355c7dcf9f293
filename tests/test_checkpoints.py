"""Checkpoints and best models: safe files (no code runs from them), no clobbering, clear refusals."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from deeplearning_tutorial import checkpoints, files, mlp
from deeplearning_tutorial.checkpoints import (
    Checkpoint,
    RunFileError,
    RunFiles,
    save_best_model,
)
from deeplearning_tutorial.programs import load_best_model
from deeplearning_tutorial.training import CompiledModel, Hook, LoopState, TrainingInterrupted, train
from deeplearning_tutorial.validation import check_hyperparameters

floatX = pytensor.config.floatX
CONFIG = dict(learning_rate=0.1, n_epochs=3, n_hidden=7, seed=1, floatX=floatX)


def run_files(folder):
    """An MLP run's checkpoint and best-model files in ``folder``."""
    return RunFiles("mlp", CONFIG, folder / "mlp.ckpt", folder / "best.npz")


class Malicious:
    """A pickle that, when loaded, creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def malicious_file(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "state": {}, "params": [Malicious(marker)]}, f)
    return path


def small_mlp():
    x = pt.matrix("x")
    classifier, y_pred, params, _ = mlp.rebuild_classifier(x, CONFIG)
    rng = np.random.default_rng(0)
    for p in params:
        p.set_value(rng.normal(size=p.get_value().shape).astype(floatX))
    return x, classifier, y_pred, params


def test_a_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = malicious_file(tmp_path / "model.npz", marker)
    with pytest.raises(RunFileError, match=r"is not a best model .*nothing in it was run"):
        load_best_model(path)
    checkpoint = Checkpoint(malicious_file(tmp_path / "mlp.ckpt", marker), "mlp", CONFIG)
    with pytest.raises(RunFileError, match="is not a checkpoint"):
        checkpoint.check_start(resume=True, discard=False)
    with pytest.raises(RunFileError, match="is not a checkpoint"):
        checkpoint.load([], n_train_batches=1)
    # a new run refuses to overwrite it, unless told to
    with pytest.raises(RunFileError, match="--discard-checkpoint"):
        checkpoint.check_start(resume=False, discard=False)
    assert not marker.exists()


def test_best_model_round_trip_predicts_like_numpy(tmp_path):
    x, classifier, y_pred, params = small_mlp()
    save_best_model(tmp_path / "best.npz", "mlp", CONFIG, params)
    model = load_best_model(tmp_path / "best.npz")
    assert model.program == "mlp" and model.config == CONFIG and "n_hidden=7" in repr(model)
    images = np.random.default_rng(1).uniform(size=(13, 784)).astype(floatX)
    W1, b1, W2, b2 = (p.get_value() for p in params)
    expected = (np.tanh(images @ W1 + b1) @ W2 + b2).argmax(axis=1)
    np.testing.assert_array_equal(model.predict(images), expected)
    np.testing.assert_array_equal(model.predict(images.reshape(13, 28, 28)), expected)


@pytest.mark.parametrize("images, message", [
    (np.zeros((0, 784)), "images is empty"),
    (np.zeros((3, 783)), r"shape \(n, 784\) or \(n, 28, 28\), got \(3, 783\)"),
    (np.zeros(784), r"got \(784,\)"),
    (np.where(np.arange(2 * 784).reshape(2, 784) % 500 == 7, np.inf, 0.5), "contain 4 NaN or infinite values"),
    (np.full((1, 28, 28), np.nan), "contain 784 NaN or infinite values"),
    (np.array([["a"] * 784]), "array of numbers"),
])
def test_predict_refuses_bad_images(tmp_path, images, message):
    _, _, _, params = small_mlp()
    save_best_model(tmp_path / "best.npz", "mlp", CONFIG, params)
    with pytest.raises(ValueError, match=message):
        load_best_model(tmp_path / "best.npz").predict(images)


def test_predict_warns_about_0_to_255_images(tmp_path):
    _, _, _, params = small_mlp()
    save_best_model(tmp_path / "best.npz", "mlp", CONFIG, params)
    model = load_best_model(tmp_path / "best.npz")
    with pytest.warns(UserWarning, match=r"outside \[0, 1\].*divide 0..255 images by 256"):
        model.predict(np.full((2, 784), 255.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(np.full((2, 784), 0.99609375))


def test_tampered_best_models_are_refused(tmp_path):
    _, _, _, params = small_mlp()
    checkpoints.write_archive(tmp_path / "os.npz", {"kind": "best model", "program": "os", "config": {}}, [])
    with pytest.raises(RunFileError, match="names the program 'os'"):
        load_best_model(tmp_path / "os.npz")
    save_best_model(tmp_path / "big.npz", "mlp", {**CONFIG, "n_hidden": 8}, params)  # 7 units saved
    with pytest.raises(RunFileError, match="not written for this model"):
        load_best_model(tmp_path / "big.npz")
    save_best_model(tmp_path / "bad.npz", "mlp", {**CONFIG, "n_hidden": -1}, params)
    with pytest.raises(RunFileError, match="n_hidden must be a positive integer"):
        load_best_model(tmp_path / "bad.npz")
    Checkpoint(tmp_path / "c.npz", "mlp", CONFIG).save(LoopState(patience=5), params)
    with pytest.raises(RunFileError, match="'checkpoint' file of version 1, not a best model"):
        load_best_model(tmp_path / "c.npz")
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(RunFileError, match="is a folder"):
        load_best_model(tmp_path / "folder.npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(RunFileError, match="not an archive"):
        load_best_model(tmp_path / "array.npy")
    with pytest.raises(FileNotFoundError):
        load_best_model(tmp_path / "missing.npz")


def test_checkpoint_round_trip_and_its_refusals(tmp_path, capsys):
    _, _, _, params = small_mlp()
    saved = [p.get_value() for p in params]
    state = LoopState(patience=40, epoch=2, next_minibatch=3, best_validation_loss=0.25, best_iter=9,
                      test_score=0.3, elapsed=1.5, history=[(9, 0.25, 0.3), (19, 0.3, None)])
    path = tmp_path / "mlp.ckpt"
    Checkpoint(path, "mlp", CONFIG).save(state, params)
    for p in params:
        p.set_value(np.zeros_like(p.get_value()))
    checkpoint = Checkpoint(path, "mlp", CONFIG)
    checkpoint.check_start(resume=True, discard=False)
    assert "Resuming" in capsys.readouterr().err
    assert checkpoint.load(params, n_train_batches=5) == state
    with pytest.raises(RunFileError, match="stopped at minibatch 4 .* has 3 minibatches: the data are not"):
        checkpoint.load(params, n_train_batches=3)  # the data changed under the checkpoint
    for p, value in zip(params, saved):
        np.testing.assert_array_equal(p.get_value(), value)

    other = Checkpoint(path, "mlp", {**CONFIG, "n_epochs": 4})
    with pytest.raises(RunFileError, match=r"other arguments \(n_epochs: 3 there, 4 here\)"):
        other.check_start(resume=True, discard=False)
    with pytest.raises(RunFileError, match=r"holds an interrupted run .*--resume.*--discard-checkpoint"):
        other.check_start(resume=False, discard=False)
    other.check_start(resume=False, discard=True)  # told to: allowed
    assert "Replacing the interrupted run in" in capsys.readouterr().err
    Checkpoint(path, "mlp", CONFIG).save(state, params, finished=True)
    other.check_start(resume=False, discard=False)  # a finished run's checkpoint may be replaced, with a note
    err = capsys.readouterr().err
    assert "Replacing the finished run in" in err and "n_hidden=7" in err
    with pytest.raises(RunFileError, match="no checkpoint at"):
        Checkpoint(tmp_path / "none.ckpt", "mlp", CONFIG).check_start(resume=True, discard=False)
    with pytest.raises(RunFileError, match="not written for this model"):
        checkpoint.load(params[:2], n_train_batches=5)


def test_a_tampered_loop_state_is_refused(tmp_path):
    _, _, _, params = small_mlp()
    description = {"kind": "checkpoint", "program": "mlp", "config": CONFIG, "finished": False,
                   "state": {"patience": "os.system('x')"}}
    checkpoints.write_archive(tmp_path / "mlp.ckpt", description, [p.get_value() for p in params])
    with pytest.raises(RunFileError, match="damaged or altered loop state"):
        Checkpoint(tmp_path / "mlp.ckpt", "mlp", CONFIG).load(params, n_train_batches=5)


def test_a_full_disk_names_the_real_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "mlp.ckpt"
    checkpoints.write_archive(path, {"kind": "checkpoint"}, [np.ones(2)])
    before = path.read_bytes()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints.np, "savez", full)
    with pytest.raises(RunFileError, match=rf"could not write {path}: No space left on device"):
        checkpoints.write_archive(path, {"kind": "checkpoint"}, [np.zeros(2)])
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["mlp.ckpt"]


def test_two_runs_cannot_write_the_same_files(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "mlp.ckpt.lock").write_text(str(other.pid))
        busy = rf"another run \(process {other.pid}\) is writing .*mlp.ckpt"
        with pytest.raises(RunFileError, match=busy), run_files(tmp_path):
            pass
        assert not (tmp_path / "best.npz.lock").exists()  # nothing claimed
    finally:
        other.kill()
        other.wait()
    # its process is gone: the lock is stale and taken over, then released
    with run_files(tmp_path):
        assert (tmp_path / "mlp.ckpt.lock").read_text() == str(os.getpid())
    assert not (tmp_path / "mlp.ckpt.lock").exists() and not (tmp_path / "best.npz.lock").exists()


def test_a_lock_appears_with_its_pid_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    created = []
    real_link = os.link

    def link(source, destination):  # the lock's content when its name appears
        created.append(Path(source).read_text())
        real_link(source, destination)

    monkeypatch.setattr(files.os, "link", link)
    with run_files(tmp_path):
        assert created == [str(os.getpid())] * 2
        assert sorted(os.listdir(tmp_path)) == ["best.npz.lock", "mlp.ckpt.lock"]
    (tmp_path / "mlp.ckpt.lock").write_text("")  # left empty by a crash: taken over
    with run_files(tmp_path):
        assert (tmp_path / "mlp.ckpt.lock").read_text() == str(os.getpid())


def test_a_filesystem_without_hard_links_still_gets_locks(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(files.os, "link", no_links)
    with run_files(tmp_path):
        assert (tmp_path / "mlp.ckpt.lock").read_text() == str(os.getpid())
        assert sorted(os.listdir(tmp_path)) == ["best.npz.lock", "mlp.ckpt.lock"]
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "mlp.ckpt.lock").write_text(str(other.pid))
        with pytest.raises(RunFileError, match=rf"another run \(process {other.pid}\)"), run_files(tmp_path):
            pass
    finally:
        other.kill()
        other.wait()


def test_an_unwritable_folder_is_refused_before_building_even_for_root(tmp_path, monkeypatch):
    # the folder's permission denied as the kernel would deny it to a user (root is never denied)
    def denied(path, flags, mode=0o777):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(files.os, "open", denied)
    with pytest.raises(RunFileError, match="cannot write in .*permission denied"), run_files(tmp_path):
        pass
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_an_unwritable_folder_is_refused_before_building(tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(RunFileError, match="cannot write in .*permission denied"), run_files(folder):
            pass
    finally:
        folder.chmod(0o700)


def test_negative_penalties_are_refused():
    for name in ("L1_reg", "L2_reg"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
            check_hyperparameters(0.1, 1, 10, [100], penalties={"L1_reg": 0.0, "L2_reg": 0.0, name: -1e-4})
    check_hyperparameters(0.1, 1, 10, [100], penalties={"L1_reg": 0.0, "L2_reg": 1e-4})



class StopAt(Hook):
    """Leave the loop after iteration ``at``, as Ctrl-C would."""

    def __init__(self, at):
        self.at = at

    def minibatch_done(self, state, iter):
        if iter == self.at:
            raise TrainingInterrupted(signal.SIGINT)


def noisy_model(data):
    """A model whose training draws from a random generator: w follows each minibatch's mean plus noise."""
    from pytensor.tensor.random.utils import RandomStream

    x, w, index = pytensor.shared(data), pytensor.shared(np.zeros(3)), pt.lscalar()
    target = x[index * 2:(index + 1) * 2].mean(axis=0) + RandomStream(seed=5).normal(size=(3,))
    train_model = pytensor.function([index], ((target - w) ** 2).sum(), updates=[(w, w + 0.1 * (target - w))],
                                    mode="FAST_COMPILE")
    error = pytensor.function([index], ((x[index * 2:(index + 1) * 2].mean(axis=0) - w) ** 2).sum(),
                              mode="FAST_COMPILE")
    n_batches = len(data) // 2
    return CompiledModel(None, [w], train_model, error, error, n_batches, n_batches, n_batches)


def test_a_resumed_run_draws_on_as_the_interrupted_one_and_refuses_other_data(tmp_path, capsys):
    data = np.random.default_rng(0).normal(size=(6, 3))
    with RunFiles("mlp", CONFIG, tmp_path / "whole.ckpt"):
        whole = noisy_model(data)
        train(whole, n_epochs=4, patience=1000)
    with RunFiles("mlp", CONFIG, tmp_path / "parts.ckpt"):
        first = noisy_model(data)
        assert train(first, n_epochs=4, patience=1000, hooks=[StopAt(4)]).stopped_by == signal.SIGINT
    with RunFiles("mlp", CONFIG, tmp_path / "parts.ckpt", resume=True):
        second = noisy_model(data)  # its generator starts from its seed: the checkpoint puts it where it was
        train(second, n_epochs=4, patience=1000)
    np.testing.assert_array_equal(second.params[0].get_value(), whole.params[0].get_value())
    # the same shapes, other numbers: not the interrupted run's data
    with RunFiles("mlp", CONFIG, tmp_path / "other.ckpt"):
        train(noisy_model(data), n_epochs=4, patience=1000, hooks=[StopAt(4)])
    with (pytest.raises(RunFileError, match="written by a run on other data"),
          RunFiles("mlp", CONFIG, tmp_path / "other.ckpt", resume=True)):
        train(noisy_model(data + 1.0), n_epochs=4, patience=1000)


def test_a_deeply_nested_description_is_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.ckpt"
    with open(path, "wb") as handle:
        np.savez(handle, description=np.array("[" * 200_000 + "]" * 200_000))
    with pytest.raises(RunFileError, match="is not a checkpoint written by deeplearning_tutorial"):
        Checkpoint(path, "mlp", CONFIG).check_start(resume=True, discard=False)


def test_a_history_file_that_cannot_be_written_stops_the_run_before_it_starts(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    history = tmp_path / "history.json"
    with RunFiles("mlp", CONFIG, history_file=history) as run:  # written at once, then at the end
        assert json.loads(history.read_text()) == {"arguments": CONFIG, "running": True}
        run.write_history({"arguments": CONFIG, "validation": 5.0})
    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(RunFileError, match="could not write the history file .*No space left on device"), \
            RunFiles("mlp", CONFIG, tmp_path / "mlp.ckpt", history_file=history):
        pytest.fail("the run started")
    assert json.loads(history.read_text()) == {"arguments": CONFIG, "validation": 5.0}  # the earlier one kept
    assert not list(tmp_path.glob("*.lock"))
