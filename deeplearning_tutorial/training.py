"""The tutorials' early-stopping ("patience") loop, and what is attached around it.

:func:`patience_loop` is the loop of the original tutorials, written once:
train on one minibatch after the other; every ``validation_frequency``
minibatches measure the validation error; when it is a new best, measure the
test error and, if the improvement is significant, extend ``patience``; stop
when ``patience`` minibatches have been trained or after ``n_epochs``.

Everything beyond the original is a :class:`Hook` called at four points of
the loop: stopping cleanly on Ctrl-C or SIGTERM, detecting a diverging cost,
checkpoints from which a resumed run continues exactly as an uninterrupted
one, saving each new best model, a progress line on a terminal's stderr, and
LeNet's ``training @ iter`` lines.  :func:`train` is the one entry point of
every tutorial: it warms up the compiled functions, resumes from a
checkpoint if asked, attaches the hooks and runs the loop.

The unsupervised tutorials' pre-training (dA, cA, SdA) is simpler: a fixed
number of epochs over every minibatch, one line per epoch, in
:func:`epoch_loop`.
"""

from __future__ import annotations

import contextvars
import hashlib
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deeplearning_tutorial.checkpoints import Checkpoint, RunFiles

#: The files of the run in progress: set by ``with RunFiles(...)``
#: (:class:`~deeplearning_tutorial.checkpoints.RunFiles`) for the block's length, read by :func:`train`.
ACTIVE_RUN_FILES: contextvars.ContextVar[RunFiles | None] = contextvars.ContextVar("run_files", default=None)

VALIDATION_LINE = "epoch %i, minibatch %i/%i, validation error %f %%"
TEST_LINE = "     epoch %i, minibatch %i/%i, test error of best model %f %%"


class DivergenceError(FloatingPointError):
    """The training cost became NaN or infinite."""


class TrainingAborted(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: the run stops at once, its last checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Raised by :class:`StopOnSignal` between two minibatches to leave the loop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class CompiledModel:
    """What a tutorial's ``build_model`` returns: the model and its compiled minibatch functions.

    ``train_model(i)`` trains on minibatch ``i`` and returns its cost;
    ``validate_model(i)`` and ``test_model(i)`` return the error rate on
    minibatch ``i`` of the validation and test sets.  ``params`` are the
    shared variables training changes (what a checkpoint saves).
    """

    classifier: object
    params: list
    train_model: Callable[[int], object]
    validate_model: Callable[[int], object]
    test_model: Callable[[int], object]
    n_train_batches: int
    n_valid_batches: int
    n_test_batches: int


@dataclass
class LoopState:
    """The patience loop's variables: everything needed to continue where it stopped."""

    patience: int
    epoch: int = 0
    next_minibatch: int = 0  # first minibatch of ``epoch`` not trained yet
    best_validation_loss: float = math.inf
    best_iter: int = 0
    test_score: float = 0.0
    done_looping: bool = False
    stopped_by: int | None = None  # the signal (SIGINT, SIGTERM) that interrupted the run
    elapsed: float = 0.0  # seconds of training, earlier processes of a resumed run included
    # one entry per validation: (iter, validation error, test error when it was a new best)
    history: list[tuple[int, float, float | None]] = field(default_factory=list)


class Hook:
    """Something attached to :func:`patience_loop`; each method is called at one point of it."""

    def minibatch_started(self, state: LoopState, iter: int) -> None:
        """Before training on the minibatch of iteration ``iter``."""

    def minibatch_trained(self, state: LoopState, iter: int, cost) -> None:
        """Right after training on it, with the minibatch's cost."""

    def validated(self, state: LoopState) -> None:
        """After a validation (and test) has been printed and appended to ``state.history``."""

    def minibatch_done(self, state: LoopState, iter: int) -> None:
        """At the end of the iteration, when the loop continues; the state is consistent here."""


class _Hooks(Hook):
    """Several hooks called in order."""

    def __init__(self, hooks: Sequence[Hook]) -> None:
        self.hooks = list(hooks)

    def minibatch_started(self, state, iter):
        for hook in self.hooks:
            hook.minibatch_started(state, iter)

    def minibatch_trained(self, state, iter, cost):
        for hook in self.hooks:
            hook.minibatch_trained(state, iter, cost)

    def validated(self, state):
        for hook in self.hooks:
            hook.validated(state)

    def minibatch_done(self, state, iter):
        for hook in self.hooks:
            hook.minibatch_done(state, iter)


def mean_error(model: Callable[[int], object], n_batches: int) -> float:
    """Mean of a compiled error function over all minibatches of a split.

    Parameters
    ----------
    model
        A compiled function of a minibatch index, such as ``validate_model``.
    n_batches
        The split's number of minibatches; ``model`` is called on 0 to ``n_batches - 1``.

    Returns
    -------
    float
        The mean of the minibatches' errors.
    """
    return float(np.mean([model(i) for i in range(n_batches)]))


def patience_loop(model: CompiledModel, n_epochs: int, patience: int,
                  state: LoopState | None = None, hooks: Sequence[Hook] = (), *,
                  patience_increase: int = 2, improvement_threshold: float = 0.995) -> LoopState:
    """Minibatch SGD with early stopping, printing the tutorials' lines.

    Parameters
    ----------
    model
        The compiled minibatch functions and the number of minibatches of each split.
    n_epochs
        The most epochs (passes over the training set) to train.
    patience
        Train on at least this many minibatches, however the validation error
        goes, unless ``n_epochs`` ends the run first; a significant
        improvement raises it to ``patience_increase`` times the current
        iteration where that is more.  The validation error is measured every
        ``min(n_train_batches, patience // 2)`` minibatches.
    state
        The state of an earlier, interrupted run, to continue it; a new run by default.
    hooks
        Called at four points of each iteration (see :class:`Hook`).  An
        exception a hook raises leaves the loop and propagates; ``state`` then
        holds the variables up to that point.
    patience_increase, improvement_threshold
        A new best validation error below ``improvement_threshold`` times the
        previous best is significant; the original's 2 and 0.995.

    Returns
    -------
    LoopState
        The loop's variables at the end: best validation error, its iteration, its test error.
    """
    if state is None:
        state = LoopState(patience=patience)
    attached = _Hooks(hooks)
    n_train_batches = model.n_train_batches
    if state.next_minibatch >= n_train_batches:
        raise ValueError(f"the state continues at minibatch {state.next_minibatch + 1} of an epoch, but the "
                         f"training set has {n_train_batches} minibatches")
    # validate after this many minibatches: once per epoch, or more often if patience is short
    validation_frequency = min(n_train_batches, patience // 2)

    # [start-patience-loop]
    while (state.epoch < n_epochs or state.next_minibatch) and not state.done_looping:
        if state.next_minibatch == 0:  # a new epoch, unless a resumed run continues one
            state.epoch += 1
        for minibatch_index in range(state.next_minibatch, n_train_batches):
            iter = (state.epoch - 1) * n_train_batches + minibatch_index
            attached.minibatch_started(state, iter)
            minibatch_avg_cost = model.train_model(minibatch_index)
            state.next_minibatch = (minibatch_index + 1) % n_train_batches
            attached.minibatch_trained(state, iter, minibatch_avg_cost)

            if (iter + 1) % validation_frequency == 0:
                this_validation_loss = mean_error(model.validate_model, model.n_valid_batches)
                say(VALIDATION_LINE % (state.epoch, minibatch_index + 1, n_train_batches,
                                       this_validation_loss * 100.0))
                new_test_score = None
                if this_validation_loss < state.best_validation_loss:
                    if this_validation_loss < state.best_validation_loss * improvement_threshold:
                        state.patience = max(state.patience, iter * patience_increase)
                    state.best_validation_loss = this_validation_loss
                    state.best_iter = iter
                    state.test_score = new_test_score = mean_error(model.test_model, model.n_test_batches)
                    say(TEST_LINE % (state.epoch, minibatch_index + 1, n_train_batches,
                                     state.test_score * 100.0))
                state.history.append((iter, this_validation_loss, new_test_score))
                attached.validated(state)

            if state.patience <= iter:
                state.done_looping = True
                break
            attached.minibatch_done(state, iter)
    # [end-patience-loop]
    return state


# --------------------------------------------------------------------------
# The hooks
# --------------------------------------------------------------------------


class StatusLine:
    """A live status line on stderr, rewritten in place; cleared before any other line is printed."""

    def __init__(self) -> None:
        self.shown = False

    def show(self, text: str) -> None:
        sys.stderr.write("\r\x1b[2K" + text)
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self.shown = False


_STATUS = StatusLine()


def say(line: str) -> None:
    """Print a tutorial line on stdout, flushed so logs and terminals show it at once.

    The progress line on stderr, if one is shown, is cleared first.

    Parameters
    ----------
    line
        The text, without its newline.
    """
    _STATUS.clear()
    print(line, flush=True)


class ReportIterations(Hook):
    """LeNet's ``training @ iter =  <iter>`` line, every ``every`` iterations."""

    def __init__(self, every: int) -> None:
        self.every = every

    def minibatch_started(self, state, iter):
        if iter % self.every == 0:
            say(f"training @ iter =  {iter}")


class DivergenceCheck(Hook):
    """Stop with :class:`DivergenceError` when a minibatch's cost is NaN or infinite."""

    def __init__(self, n_train_batches: int) -> None:
        self.n_train_batches = n_train_batches

    def minibatch_trained(self, state, iter, cost):
        if not np.isfinite(cost):
            _STATUS.clear()
            minibatch = iter % self.n_train_batches + 1
            raise DivergenceError(
                f"the training cost became {float(cost)} at iteration {iter} "
                f"(epoch {state.epoch}, minibatch {minibatch}/{self.n_train_batches}); "
                f"the learning rate is probably too large: try a smaller one"
            )


class OnNewBest(Hook):
    """Call ``action()`` after each validation that found a new best model."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def validated(self, state):
        if state.history[-1][2] is not None:
            self.action()


class StopOnSignal(Hook):
    """Ctrl-C (SIGINT) or SIGTERM: finish the current minibatch, then leave the loop.

    Used as a context manager around the loop, which installs the handlers.
    A second signal aborts at once with :class:`TrainingAborted`.

    Parameters
    ----------
    step
        What the loop finishes before it stops, as the message names it
        (logistic_cg's optimiser stops after a CG "iteration").
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, step: str = "minibatch") -> None:
        self.step = step
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        try:
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread: no signal handling
            self._previous = {}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise TrainingAborted(signal.Signals(signum).name)
        self.requested = signum
        _STATUS.clear()
        print(f"\nInterrupted by {signal.Signals(signum).name}: finishing this {self.step} "
              f"(Ctrl-C again to abort)", file=sys.stderr)

    def minibatch_done(self, state, iter):
        if self.requested is not None:
            raise TrainingInterrupted(self.requested)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class ProgressLine(Hook):
    """Epoch, minibatch, best validation error, elapsed time and ETA, on the status line."""

    def __init__(self, n_epochs: int, n_train_batches: int, started: float) -> None:
        self.n_epochs, self.n_train_batches = n_epochs, n_train_batches
        self.started = started
        self.last = 0.0
        self.first: tuple[int, float] | None = None

    def minibatch_done(self, state, iter):
        now = time.perf_counter()
        if now - self.last < 0.5:
            return
        if self.first is None:
            self.first = iter, now
        self.last = now
        first_iter, first_time = self.first
        total = self.n_epochs * self.n_train_batches
        rate = (iter - first_iter) / max(now - first_time, 1e-9)
        eta = (total - iter - 1) / rate if rate > 0 else math.nan
        _STATUS.show(
            f"epoch {state.epoch}/{self.n_epochs} minibatch "
            f"{iter % self.n_train_batches + 1}/{self.n_train_batches} | "
            f"best valid {state.best_validation_loss * 100.0:.4f} % | "
            f"elapsed {format_hms(now - self.started)} | ETA to n_epochs {format_hms(eta)}"
        )


def format_hms(seconds: float) -> str:
    """``h:mm:ss``; ``--:--:--`` for a time not known yet (NaN or infinite)."""
    if not math.isfinite(seconds):
        return "--:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class SaveCheckpoint(Hook):
    """Save the loop state, the parameters (and random generators) at every validation."""

    def __init__(self, checkpoint: Checkpoint, params: Sequence, started: float, data_sha256: str | None) -> None:
        self.checkpoint, self.params, self.started, self.data_sha256 = checkpoint, params, started, data_sha256

    def validated(self, state):
        state.elapsed = time.perf_counter() - self.started
        self.checkpoint.save(state, self.params, data_sha256=self.data_sha256)


# --------------------------------------------------------------------------
# The unsupervised tutorials' loop: epochs over every minibatch
# --------------------------------------------------------------------------


@dataclass
class EpochLoopState:
    """What :func:`epoch_loop` records of a run: one learning curve per training phase.

    ``curves`` maps a phase's name (``"corruption 0%"``, ``"layer 0"``) to
    the value its report gave for each finished epoch; ``stopped_by`` is the
    signal (SIGINT, SIGTERM) that interrupted the run, or None; ``elapsed``
    the seconds spent in the loops.
    """

    curves: dict[str, list[float]] = field(default_factory=dict)
    stopped_by: int | None = None
    elapsed: float = 0.0


def epoch_loop(train_fn: Callable[[int], Any], n_batches: int, n_epochs: int,
               report: Callable[[int, list], float], state: EpochLoopState, phase: str) -> EpochLoopState:
    """Train ``n_epochs`` epochs, calling ``train_fn`` on every minibatch in order, as pre-training does.

    After each epoch ``report(epoch, outputs)`` (epochs counted from 0, the
    outputs of ``train_fn`` for the epoch's minibatches in order) prints the
    tutorial's line and returns the number appended to ``state.curves[phase]``.
    Ctrl-C or SIGTERM finishes the minibatch in progress, then leaves the
    loop with ``state.stopped_by`` set; a second one aborts at once.

    Parameters
    ----------
    train_fn
        A compiled function of a minibatch index that trains on it.
    n_batches
        The minibatches of an epoch: ``train_fn`` is called on 0 to ``n_batches - 1``.
    n_epochs
        The number of epochs.
    report
        Prints an epoch's line and returns its value for the curve.
    state
        The run's record, shared by its phases.
    phase
        The name of this loop's curve in ``state.curves``.

    Returns
    -------
    EpochLoopState
        ``state``, with the curve of this phase.
    """
    curve = state.curves.setdefault(phase, [])
    started = time.perf_counter()
    with StopOnSignal() as stop:
        try:
            for epoch in range(len(curve), n_epochs):
                outputs = []
                for minibatch_index in range(n_batches):
                    outputs.append(train_fn(minibatch_index))
                    if stop.requested is not None:
                        raise TrainingInterrupted(stop.requested)
                curve.append(float(report(epoch, outputs)))
        except TrainingInterrupted as interruption:
            state.stopped_by = interruption.signum
            print(f"Stopped by {signal.Signals(interruption.signum).name} in epoch {len(curve)} of {phase}",
                  file=sys.stderr)
        finally:
            state.elapsed += time.perf_counter() - started
    return state


# --------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------


def warm_up(*functions: Any) -> None:
    """Run each compiled function once on minibatch 0, then undo its updates.

    PyTensor's default Numba backend compiles (or loads from its cache) a
    function on its first call; doing that here keeps it out of the timed
    training loop, as Theano's compile-at-definition did.  The shared
    variables a function updates get their values back, so training starts
    from the same initial parameters.

    Parameters
    ----------
    *functions
        Compiled ``pytensor`` functions of one integer argument (a minibatch
        index, or logistic_cg's chunk offset), called with 0.
    """
    for function in functions:
        updated = [i.variable for i in function.maker.inputs if i.update is not None]
        saved = [variable.get_value(borrow=False) for variable in updated]
        function(0)
        for variable, value in zip(updated, saved):
            variable.set_value(value, borrow=True)


def train(model: CompiledModel, n_epochs: int, patience: int, *,
          on_new_best: Callable[[], None] | None = None, hooks: Sequence[Hook] = ()) -> LoopState:
    """Run a tutorial's training: the patience loop with everything attached around it.

    Inside a ``with RunFiles(...)`` block (:class:`~deeplearning_tutorial.checkpoints.RunFiles`,
    as the command line opens one: :data:`ACTIVE_RUN_FILES`), the run saves its checkpoint at every
    validation and when it stops, starts from the checkpoint when the block
    asks to resume, and saves each new best model; outside one, it writes no
    file.

    Parameters
    ----------
    model
        What the tutorial's ``build_model`` returned.
    n_epochs, patience
        As in :func:`patience_loop`.
    on_new_best
        Called after each new best validation error (logistic_sgd pickles its classifier).
    hooks
        The tutorial's own hooks (LeNet's :class:`ReportIterations`), called first.

    Returns
    -------
    LoopState
        The final state; ``stopped_by`` is the signal number when Ctrl-C or
        SIGTERM stopped the run, and ``elapsed`` the training time in seconds.

    Raises
    ------
    DivergenceError
        When the training cost becomes NaN or infinite.
    RunFileError
        When a checkpoint or best model cannot be written or read, or the
        checkpoint to resume from was written with other data (the
        fingerprint of every shared variable the compiled functions read and
        training does not change: the data splits) or for another model.
    TrainingAborted
        When a second Ctrl-C (or SIGTERM) comes before the run has stopped
        after the first one; the last checkpoint saved, if any, is kept.
    """
    files = ACTIVE_RUN_FILES.get()
    checkpoint = files.checkpoint if files is not None else None
    functions = (model.train_model, model.validate_model, model.test_model)
    warm_up(*functions)
    saved: list = []  # what a checkpoint holds: the parameters, and any random generator training draws from
    data = None
    if checkpoint is not None:
        trained = updated_variables(model.train_model)
        saved = [*model.params, *(v for v in trained if all(v is not p for p in model.params))]
        data = data_sha256(data_variables(functions, trained))
    if checkpoint is not None and files is not None and files.resume:
        state = checkpoint.load(saved, model.n_train_batches, data)
    else:
        state = LoopState(patience=patience)
    started = time.perf_counter() - state.elapsed
    stop = StopOnSignal()
    attached = [*hooks, DivergenceCheck(model.n_train_batches)]
    if files is not None and files.best_model_file is not None:
        attached.append(OnNewBest(lambda: files.save_best_model(model.params)))
    if on_new_best is not None:
        attached.append(OnNewBest(on_new_best))
    if checkpoint is not None:
        attached.append(SaveCheckpoint(checkpoint, saved, started, data))
    if sys.stderr.isatty():
        attached.append(ProgressLine(n_epochs, model.n_train_batches, started))
    attached.append(stop)

    with stop:
        try:
            patience_loop(model, n_epochs, patience, state, attached)
        except TrainingInterrupted as interruption:
            state.stopped_by = interruption.signum
        finally:
            _STATUS.clear()
    state.elapsed = time.perf_counter() - started
    if checkpoint is not None:
        checkpoint.save(state, saved, finished=state.stopped_by is None, data_sha256=data)
    if state.stopped_by is not None:
        _report_interruption(state, state.stopped_by, model.n_train_batches, checkpoint)
    return state


def data_sha256(variables: Sequence) -> str:
    """A fingerprint of the data in ``variables`` (shared variables): SHA-256 of their dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for variable in variables:
        value = np.ascontiguousarray(variable.get_value(borrow=True))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(memoryview(value).cast("B"))
    return digest.hexdigest()


def updated_variables(function) -> list:
    """The shared variables a compiled ``pytensor`` function changes when it is called."""
    return [i.variable for i in function.maker.inputs if i.update is not None]


def data_variables(functions: Sequence, changed: Sequence) -> list:
    """The shared variables ``functions`` read and nothing in ``changed`` is: a tutorial's data splits."""
    found: list = []
    for function in functions:
        for i in function.maker.inputs:
            if (i.implicit and all(i.variable is not v for v in changed)
                    and all(i.variable is not v for v in found)):
                found.append(i.variable)
    return found


def run_record(state: LoopState | EpochLoopState) -> dict[str, Any]:
    """A run's result and learning curve as plain data, in the units the programs print.

    The one record of a run: the command line's ``--history-file``, the
    tuning studies' trials and ``scripts/reproduce.py`` all use it.

    Parameters
    ----------
    state
        What a tutorial function returned.

    Returns
    -------
    dict
        For the unsupervised tutorials (an :class:`EpochLoopState`):
        ``train_seconds``, ``stopped_by`` (``"n_epochs"`` or a signal's name)
        and ``curves``, each phase's value per epoch.  Otherwise
        ``validation`` and ``test`` (the best validation error and the test
        error of that model) in per cent, ``best_iteration`` (counted from 1,
        as the programs print it), ``epochs``, ``train_seconds``,
        ``stopped_by`` (``"patience"``, ``"n_epochs"``, or the signal's name
        for an interrupted run) and ``history``, one ``{"iteration",
        "validation", "test"}`` per validation (``test`` None when the
        validation was not a new best).  Errors that were never measured
        are None.
    """
    def percent(error):
        return None if error is None or not math.isfinite(error) else float(error) * 100.0

    if state.stopped_by is not None:
        stopped_by = signal.Signals(state.stopped_by).name
    elif isinstance(state, EpochLoopState):
        stopped_by = "n_epochs"
    else:
        stopped_by = "patience" if state.done_looping else "n_epochs"
    if isinstance(state, EpochLoopState):
        return {"train_seconds": float(state.elapsed), "stopped_by": stopped_by,
                "curves": {phase: list(curve) for phase, curve in state.curves.items()}}
    return {
        "validation": percent(state.best_validation_loss),
        "test": percent(state.test_score) if state.history else None,
        "best_iteration": int(state.best_iter) + 1 if state.history else None,
        "epochs": int(state.epoch),
        "train_seconds": float(state.elapsed),
        "stopped_by": stopped_by,
        "history": [{"iteration": int(it) + 1, "validation": percent(valid), "test": percent(test)}
                    for it, valid, test in state.history],
    }


def _report_interruption(state: LoopState, signum: int, n_train_batches: int, checkpoint) -> None:
    """What an interrupted run prints instead of the tutorial's final lines."""
    name = signal.Signals(signum).name
    trained = (state.epoch - 1) * n_train_batches + (state.next_minibatch or n_train_batches)
    if state.history:
        best = ("best validation score so far %f %% obtained at iteration %i, with test performance %f %%"
                % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    else:
        best = "no validation yet, so no model to report"
    say(f"Interrupted by {name} in epoch {state.epoch} after {trained} iterations: {best}")
    where = f"; continue it with --resume (checkpoint: {checkpoint.path})" if checkpoint else ""
    print(f"Stopped by {name} at epoch {state.epoch}{where}", file=sys.stderr)
