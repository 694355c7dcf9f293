"""The patience loop against a plain transcription of the original's, its hooks, and resuming."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from deeplearning_tutorial import training
from deeplearning_tutorial.training import (
    CompiledModel,
    DivergenceError,
    Hook,
    LoopState,
    TrainingInterrupted,
    patience_loop,
)


class FakeModel:
    """Minibatch functions with scripted errors: validation error k of the run is ``errors[k]``."""

    def __init__(self, errors, n_train=7, n_valid=3, n_test=2, costs=None):
        self.errors = list(errors)
        self.validations = 0
        self.trained = []
        self.costs = costs or {}
        self.n = n_train, n_valid, n_test

    def train_model(self, i):
        self.trained.append(i)
        return self.costs.get(len(self.trained) - 1, 0.5)

    def validate_model(self, i):
        # each full pass over the validation set (n_valid calls) is one scripted error
        error = self.errors[min(self.validations // self.n[1], len(self.errors) - 1)]
        self.validations += 1
        return error

    def test_model(self, i):
        return 0.1 + 0.01 * i

    def compiled(self) -> CompiledModel:
        return CompiledModel(None, [], self.train_model, self.validate_model, self.test_model, *self.n)


def reference_loop(errors, n_train, n_test, n_epochs, patience):
    """The original loop, transcribed from the tutorial's description (the deeplearning.net logistic_sgd.py)."""
    lines, validations = [], errors + [errors[-1]] * 10_000
    patience_increase, improvement_threshold = 2, 0.995
    validation_frequency = min(n_train, patience // 2)
    best_validation_loss, best_iter, test_score = np.inf, 0, 0.0
    epoch, done_looping = 0, False
    while epoch < n_epochs and not done_looping:
        epoch = epoch + 1
        for minibatch_index in range(n_train):
            iter = (epoch - 1) * n_train + minibatch_index
            if (iter + 1) % validation_frequency == 0:
                this_validation_loss = float(np.mean([validations.pop(0)] * 3))
                lines.append("epoch %i, minibatch %i/%i, validation error %f %%"
                             % (epoch, minibatch_index + 1, n_train, this_validation_loss * 100.0))
                if this_validation_loss < best_validation_loss:
                    if this_validation_loss < best_validation_loss * improvement_threshold:
                        patience = max(patience, iter * patience_increase)
                    best_validation_loss, best_iter = this_validation_loss, iter
                    test_score = float(np.mean([0.1 + 0.01 * i for i in range(n_test)]))
                    lines.append("     epoch %i, minibatch %i/%i, test error of best model %f %%"
                                 % (epoch, minibatch_index + 1, n_train, test_score * 100.0))
            if patience <= iter:
                done_looping = True
                break
    return lines, (best_validation_loss, best_iter, test_score, epoch)


ERRORS = [0.5, 0.4, 0.399, 0.3, 0.3, 0.31, 0.2995, 0.29, 0.35, 0.36, 0.37, 0.38, 0.39, 0.4]


@pytest.mark.parametrize("n_epochs, patience", [(30, 20), (30, 6), (3, 1000), (50, 9)])
def test_loop_matches_the_original(capsys, n_epochs, patience):
    fake = FakeModel(ERRORS)
    state = patience_loop(fake.compiled(), n_epochs=n_epochs, patience=patience)
    lines, (best, best_iter, test_score, epoch) = reference_loop(ERRORS, 7, 2, n_epochs, patience)
    assert capsys.readouterr().out.splitlines() == lines
    assert (state.best_validation_loss, state.best_iter, state.test_score, state.epoch) == (
        best, best_iter, test_score, epoch)
    # one history entry per validation line, with the test error on the new bests
    n_validations = sum("validation" in line for line in lines)
    assert [h[1] for h in state.history] == [float(np.mean([e] * 3)) for e in
                                             (ERRORS + [ERRORS[-1]] * 100)[:n_validations]]
    assert sum(h[2] is not None for h in state.history) == len(lines) - n_validations


def test_the_patience_constants_are_the_originals():
    parameters = inspect.signature(training.patience_loop).parameters
    assert parameters["patience_increase"].default == 2 and parameters["improvement_threshold"].default == 0.995


class StopAt(Hook):
    def __init__(self, at):
        self.at = at

    def minibatch_done(self, state, iter):
        if iter == self.at:
            raise TrainingInterrupted(2)


@pytest.mark.parametrize("stop_at", [0, 5, 6, 13, 20])
def test_a_run_stopped_between_minibatches_resumes_exactly(capsys, stop_at):
    whole = FakeModel(ERRORS)
    expected = patience_loop(whole.compiled(), n_epochs=30, patience=20)
    expected_out = capsys.readouterr().out

    first = FakeModel(ERRORS)
    state = LoopState(patience=20)
    with pytest.raises(TrainingInterrupted):
        patience_loop(first.compiled(), n_epochs=30, patience=20, state=state, hooks=[StopAt(stop_at)])
    second = FakeModel(ERRORS)
    second.validations = first.validations  # the scripted errors continue where they were
    resumed = patience_loop(second.compiled(), n_epochs=30, patience=20, state=state)
    assert capsys.readouterr().out == expected_out
    assert first.trained + second.trained == whole.trained
    assert resumed == expected


def test_hooks_are_called_at_their_four_points(capsys):
    calls = []

    class Record(Hook):
        def minibatch_started(self, state, iter):
            calls.append(("started", iter))

        def minibatch_trained(self, state, iter, cost):
            calls.append(("trained", iter))

        def validated(self, state):
            calls.append(("validated", state.history[-1][0]))

        def minibatch_done(self, state, iter):
            calls.append(("done", iter))

    patience_loop(FakeModel([0.5]).compiled(), n_epochs=1, patience=1000, hooks=[Record()])
    expected = [(point, i) for i in range(7) for point in ("started", "trained", "done")]
    expected.insert(expected.index(("done", 6)), ("validated", 6))
    assert calls == expected


def test_report_iterations_prints_before_training(capsys):
    fake = FakeModel([0.5], n_train=5)
    patience_loop(fake.compiled(), n_epochs=2, patience=1000, hooks=[training.ReportIterations(4)])
    lines = capsys.readouterr().out.splitlines()
    # iteration 4 is the last minibatch of epoch 1: its line comes before that epoch's validation
    assert lines[:2] == ["training @ iter =  0", "training @ iter =  4"]
    assert lines[2].startswith("epoch 1, minibatch 5/5, validation") and lines[4] == "training @ iter =  8"


def test_divergence_stops_at_the_first_bad_cost(capsys):
    fake = FakeModel([0.5], costs={9: math.nan})
    with pytest.raises(DivergenceError, match=r"became nan at iteration 9 \(epoch 2, minibatch 3/7\).*smaller"):
        patience_loop(fake.compiled(), n_epochs=5, patience=1000, hooks=[training.DivergenceCheck(7)])
    assert len(fake.trained) == 10


def test_train_returns_the_signal_that_stopped_it(capsys, monkeypatch):
    """train() attaches StopOnSignal: a SIGINT/SIGTERM ends the run after the current minibatch."""
    import os
    import signal

    fake = FakeModel(ERRORS)

    class SendSignal(Hook):
        def minibatch_trained(self, state, iter, cost):
            if iter == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(training, "warm_up", lambda *functions: None)  # the fakes have nothing to compile
    state = training.train(fake.compiled(), n_epochs=30, patience=20, hooks=[SendSignal()])
    assert state.stopped_by == signal.SIGTERM and len(fake.trained) == 4 and state.next_minibatch == 4
    out, err = capsys.readouterr()
    assert "Stopped by SIGTERM at epoch 1" in err and "--resume" not in err  # no checkpoint to resume
    # stopped before the first validation: no model to report, no "inf %"
    assert out == "Interrupted by SIGTERM in epoch 1 after 4 iterations: no validation yet, so no model to report\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_an_interrupted_run_reports_its_best_model_so_far(capsys, monkeypatch):
    import os
    import signal

    class SendSignal(Hook):
        def minibatch_trained(self, state, iter, cost):
            if iter == 9:
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(training, "warm_up", lambda *functions: None)
    state = training.train(FakeModel(ERRORS).compiled(), n_epochs=30, patience=20, hooks=[SendSignal()])
    assert state.stopped_by == signal.SIGINT
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == ("Interrupted by SIGINT in epoch 2 after 10 iterations: best validation score so far "
                    "50.000000 % obtained at iteration 7, with test performance 10.500000 %")


def test_epoch_loop_reports_each_epoch_and_stops_after_the_minibatch_a_signal_interrupts(capsys):
    import os
    import signal

    calls = []

    def train_fn(index):
        calls.append(index)
        if len(calls) == 7:  # epoch 2 (from 0), minibatch 1
            os.kill(os.getpid(), signal.SIGINT)
        return float(index)

    def report(epoch, outputs):
        training.say(f"epoch {epoch}: {outputs}")
        return sum(outputs)

    before = signal.getsignal(signal.SIGINT)
    state = training.EpochLoopState()
    training.epoch_loop(train_fn, 3, 2, report, state, "first")
    assert calls == [0, 1, 2] * 2 and state.curves == {"first": [3.0, 3.0]} and state.stopped_by is None
    training.epoch_loop(train_fn, 3, 5, report, state, "second")
    assert calls[6:] == [0] and state.curves["second"] == [] and state.stopped_by == signal.SIGINT
    out, err = capsys.readouterr()
    assert out == "epoch 0: [0.0, 1.0, 2.0]\nepoch 1: [0.0, 1.0, 2.0]\n"
    assert "Stopped by SIGINT in epoch 0 of second" in err
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    record = training.run_record(state)
    assert record["stopped_by"] == "SIGINT" and record["curves"] == {"first": [3.0, 3.0], "second": []}
