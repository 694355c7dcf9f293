"""The tutorials' early-stopping ("patience") loop, written once for all three.

The loop is the original one, line for line in spirit::

    while epoch < n_epochs and not done_looping:
        epoch += 1
        for minibatch_index in range(n_train_batches):
            cost = train_model(minibatch_index)
            iter = (epoch - 1) * n_train_batches + minibatch_index
            if (iter + 1) % validation_frequency == 0:
                validate; on a new best maybe extend patience, then test
            if patience <= iter: done_looping = True; break

Beyond the original it can stop cleanly on Ctrl-C (the first press finishes
the current minibatch, the second one aborts), save a checkpoint from which
a resumed run continues exactly as an uninterrupted one would, detect a
diverging cost, and show a progress line on a terminal's stderr.
"""

from __future__ import annotations

import math
import pickle
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deeplearning_tutorial.datasets import atomic_write

VALIDATION_LINE = "epoch %i, minibatch %i/%i, validation error %f %%"
TEST_LINE = "     epoch %i, minibatch %i/%i, test error of best model %f %%"


class DivergenceError(FloatingPointError):
    """The training cost became NaN or infinite."""


@dataclass
class LoopState:
    """Everything the patience loop needs to continue where it stopped."""

    patience: int
    epoch: int = 0
    next_minibatch: int = 0  # first minibatch of ``epoch`` not trained yet
    best_validation_loss: float = math.inf
    best_iter: int = 0
    test_score: float = 0.0
    done_looping: bool = False
    interrupted: bool = False
    elapsed: float = 0.0  # seconds of training before this process (resume)
    history: list[tuple[int, float, float | None]] = field(default_factory=list)
    # (iter, validation error, test error when it was a new best)


@dataclass
class Checkpoint:
    """A loop state plus the parameter values, pickled atomically to ``path``."""

    path: Path
    params: Sequence  # shared variables
    config: dict  # the run's arguments: a resume must use the same ones

    def save(self, state: LoopState) -> None:
        payload = {
            "config": self.config,
            "state": asdict(state),
            "params": [p.get_value(borrow=False) for p in self.params],
        }
        with atomic_write(self.path) as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self) -> LoopState:
        """Restore the parameters and return the saved loop state."""
        try:
            with open(self.path, "rb") as handle:
                payload = pickle.load(handle)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no checkpoint at {self.path} to resume from; run without --resume first"
            ) from None
        if payload["config"] != self.config:
            raise ValueError(
                f"checkpoint {self.path} was written by a run with arguments "
                f"{payload['config']}, not {self.config}; resume with the same arguments "
                f"or delete the checkpoint"
            )
        for param, value in zip(self.params, payload["params"], strict=True):
            param.set_value(value)
        state = LoopState(**payload["state"])
        state.history = [tuple(h) for h in state.history]
        state.interrupted = False
        return state


@dataclass
class BestModel:
    """What the MLP and LeNet tutorials pickle at each new best: enough to predict.

    ``input`` is the symbolic image matrix the layers were built on, ``y_pred``
    their predicted classes; ``batch_size`` is set when the graph only accepts
    minibatches of that size (LeNet reshapes its input to a fixed batch).
    """

    input: object
    y_pred: object
    layers: list
    batch_size: int | None = None

    def save(self, path: Path | str) -> None:
        with atomic_write(path) as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted classes of ``images`` (n, 784), padding the last minibatch if needed."""
        import pytensor

        predict_model = pytensor.function([self.input], self.y_pred)
        size = self.batch_size or len(images)
        predictions = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            predictions.append(predict_model(padded)[: len(chunk)])
        return np.concatenate(predictions)


def load_best_model(path: Path | str) -> BestModel:
    with open(path, "rb") as handle:
        return pickle.load(handle)


class _GracefulInterrupt:
    """First Ctrl-C sets a flag the loop checks between steps (minibatches); a second aborts."""

    def __init__(self, step: str = "minibatch") -> None:
        self.step = step
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_GracefulInterrupt":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nInterrupted: finishing this {self.step} (Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _ProgressLine:
    """A one-line status on stderr, only when stderr is a terminal."""

    def __init__(self, n_epochs: int, n_train_batches: int, elapsed: float) -> None:
        self.enabled = sys.stderr.isatty()
        self.n_epochs, self.n_train_batches = n_epochs, n_train_batches
        self.start = time.perf_counter() - elapsed
        self.last = 0.0
        self.first_iter: int | None = None

    def update(self, state: LoopState, minibatch_index: int, iter: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        if self.first_iter is None:
            self.first_iter, self.first_time = iter, now
        self.last = now
        total = self.n_epochs * self.n_train_batches
        rate = (iter - self.first_iter) / max(now - self.first_time, 1e-9)
        eta = (total - iter - 1) / rate if rate > 0 else math.nan
        best = state.best_validation_loss * 100.0
        sys.stderr.write(
            f"\r\x1b[2Kepoch {state.epoch}/{self.n_epochs} minibatch "
            f"{minibatch_index + 1}/{self.n_train_batches} | best valid {best:.4f} % | "
            f"elapsed {_hms(now - self.start)} | ETA to n_epochs {_hms(eta)}"
        )
        sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def _hms(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _print(line: str) -> None:
    """Print a tutorial line; flushed so logs and terminals show it at once."""
    print(line, flush=True)


def warm_up(*functions: Callable[[int], object]) -> None:
    """Run each compiled function once on minibatch 0, then undo its updates.

    PyTensor's default Numba backend compiles (or loads from its cache) a
    function on its first call; doing that here keeps it out of the timed
    training loop, as Theano's compile-at-definition did.  The shared
    variables a function updates get their values back, so training starts
    from the same initial parameters.
    """
    for function in functions:
        updated = [i.variable for i in function.maker.inputs if i.update is not None]
        saved = [variable.get_value(borrow=False) for variable in updated]
        function(0)
        for variable, value in zip(updated, saved):
            variable.set_value(value, borrow=True)


def mean_error(model: Callable[[int], object], n_batches: int) -> float:
    """Mean of a compiled error function over all minibatches of a split."""
    return float(np.mean([model(i) for i in range(n_batches)]))


def patience_loop(
    train_model: Callable[[int], object],
    validate_model: Callable[[int], object],
    test_model: Callable[[int], object],
    n_train_batches: int,
    n_valid_batches: int,
    n_test_batches: int,
    n_epochs: int,
    patience: int,
    patience_increase: int = 2,
    improvement_threshold: float = 0.995,
    on_new_best: Callable[[], None] | None = None,
    report_iter_every: int | None = None,
    checkpoint: Checkpoint | None = None,
    state: LoopState | None = None,
) -> LoopState:
    """Train with early stopping, printing the tutorials' lines; return the final state.

    ``on_new_best`` runs after each new best validation score (logistic_sgd
    saves its model there).  ``report_iter_every=100`` prints LeNet's
    ``training @ iter =`` lines.  ``state`` continues a checkpointed run.
    """
    if state is None:
        state = LoopState(patience=patience)
    validation_frequency = min(n_train_batches, patience // 2)
    progress = _ProgressLine(n_epochs, n_train_batches, state.elapsed)
    started = time.perf_counter() - state.elapsed

    with _GracefulInterrupt() as interrupt:
        while (state.epoch < n_epochs or state.next_minibatch) and not state.done_looping:
            if state.next_minibatch == 0:
                state.epoch += 1
            epoch = state.epoch
            for minibatch_index in range(state.next_minibatch, n_train_batches):
                iter = (epoch - 1) * n_train_batches + minibatch_index
                if report_iter_every and iter % report_iter_every == 0:
                    progress.clear()
                    _print(f"training @ iter =  {iter}")
                cost = train_model(minibatch_index)
                if not np.isfinite(cost):
                    progress.clear()
                    raise DivergenceError(
                        f"the training cost became {float(cost)} at iteration {iter} "
                        f"(epoch {epoch}, minibatch {minibatch_index + 1}/{n_train_batches}); "
                        f"the learning rate is probably too large: try a smaller one"
                    )
                state.next_minibatch = (minibatch_index + 1) % n_train_batches

                if (iter + 1) % validation_frequency == 0:
                    this_validation_loss = mean_error(validate_model, n_valid_batches)
                    progress.clear()
                    _print(VALIDATION_LINE % (epoch, minibatch_index + 1, n_train_batches,
                                              this_validation_loss * 100.0))
                    new_test_score = None
                    if this_validation_loss < state.best_validation_loss:
                        if this_validation_loss < state.best_validation_loss * improvement_threshold:
                            state.patience = max(state.patience, iter * patience_increase)
                        state.best_validation_loss = this_validation_loss
                        state.best_iter = iter
                        state.test_score = new_test_score = mean_error(test_model, n_test_batches)
                        _print(TEST_LINE % (epoch, minibatch_index + 1, n_train_batches,
                                            state.test_score * 100.0))
                        if on_new_best is not None:
                            on_new_best()
                    state.history.append((iter, this_validation_loss, new_test_score))
                    if checkpoint is not None:
                        state.elapsed = time.perf_counter() - started
                        checkpoint.save(state)

                if state.patience <= iter:
                    state.done_looping = True
                    break
                if interrupt.requested:
                    state.interrupted = True
                    break
                progress.update(state, minibatch_index, iter)
            if state.interrupted:
                break

    progress.clear()
    state.elapsed = time.perf_counter() - started
    if checkpoint is not None:
        checkpoint.save(state)
    if state.interrupted:
        print(f"Stopped by Ctrl-C at epoch {state.epoch}; resume with --resume "
              f"(checkpoint: {checkpoint.path if checkpoint else 'none'})", file=sys.stderr)
    return state


def run_with_checkpoints(
    train_model, validate_model, test_model,
    n_batches: tuple[int, int, int],
    *,
    n_epochs: int,
    patience: int,
    params: Sequence,
    config: dict,
    best_model: BestModel,
    best_model_file: str | None,
    checkpoint_file: str | None,
    resume: bool,
    report_iter_every: int | None = None,
) -> LoopState:
    """The MLP's and LeNet's training: warm up, maybe resume, run the patience loop.

    Each new best model is pickled to ``best_model_file``; the loop state and
    parameters go to ``checkpoint_file`` at every validation and on Ctrl-C,
    and ``resume=True`` continues from there.
    """
    import pytensor

    config = {**config, "floatX": pytensor.config.floatX}
    checkpoint = Checkpoint(Path(checkpoint_file), params, config) if checkpoint_file else None
    if resume and checkpoint is None:
        raise ValueError("resume needs a checkpoint file: pass checkpoint_file")
    warm_up(train_model, validate_model, test_model)
    state = checkpoint.load() if resume else None
    on_new_best = (lambda: best_model.save(best_model_file)) if best_model_file else None
    return patience_loop(
        train_model, validate_model, test_model, *n_batches,
        n_epochs=n_epochs, patience=patience, patience_increase=2, improvement_threshold=0.995,
        on_new_best=on_new_best, report_iter_every=report_iter_every,
        checkpoint=checkpoint, state=state,
    )
