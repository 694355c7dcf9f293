"""Command lines for the tutorial functions, derived from their signatures.

``--learning-rate 0.1 --n-epochs 1 --nkerns 5 5`` map onto the keyword
arguments of ``evaluate_lenet5`` (or any other tutorial function): every
parameter with a default becomes an option of the same type, so the command
line can never drift from the function it runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytensor

from deeplearning_tutorial import backend, speedups
from deeplearning_tutorial.datasets import DatasetError, atomic_write
from deeplearning_tutorial.training import DivergenceError, LoopState, TrainingAborted


def parser_for(function: Callable, description: str | None = None,
               parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """An argument parser with one ``--option`` per defaulted parameter of ``function``."""
    parser = parser_class(
        description=description or (function.__doc__ or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        if default is inspect.Parameter.empty:
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(option, dest=name, action=argparse.BooleanOptionalAction,
                                default=default)
        elif isinstance(default, (list, tuple)):
            item_type = type(default[0]) if default else str
            if item_type in (list, tuple):  # pairs per layer: one int per layer (a square) on the command line
                item_type = type(default[0][0])
            parser.add_argument(option, dest=name, nargs="+", type=item_type, default=default,
                                metavar=name.upper())
        elif default is None and "tuple" in str(parameter.annotation):  # e.g. pool_strides: tuple | None
            parser.add_argument(option, dest=name, nargs="+", type=int, default=None, metavar=name.upper())
        elif default is None:
            parser.add_argument(option, dest=name, default=None)
        else:
            parser.add_argument(option, dest=name, type=type(default), default=default)
    return parser


class _RefusingParser(argparse.ArgumentParser):
    def error(self, message):
        raise ValueError(message)


def check_arguments(function: Callable, argv: Sequence[str]) -> None:
    """Raise ValueError with argparse's message if ``argv`` is not a valid command line for ``function``."""
    parser_for(function, parser_class=_RefusingParser).parse_args(argv)


def history_record(state: LoopState, arguments: dict) -> dict:
    """A run's learning curve and result as plain data (what ``--history-file`` writes)."""
    return dict(
        arguments=arguments,
        epochs=state.epoch,
        best_iter=state.best_iter,
        best_validation_loss=state.best_validation_loss,
        test_score=state.test_score,
        training_seconds=state.elapsed,
        interrupted=state.stopped_by is not None,
        history=[dict(iter=i, validation_loss=v, test_score=t) for i, v, t in state.history],
    )


def run(function: Callable, argv: Sequence[str] | None = None) -> Any:
    """Parse ``argv`` for ``function`` and call it; known failures exit with a message.

    Also keeps freed memory in the heap for the rest of the process
    (:func:`deeplearning_tutorial.speedups.keep_freed_memory`), as a tutorial
    program's ``main``.  A run stopped by a signal (Ctrl-C, SIGTERM) exits
    with status 128 + the signal's number (130, 143), as a shell reports a
    process killed by it.
    ``--history-file FILE`` writes the run's learning curve and result as JSON;
    ``--mode`` is the PyTensor mode the run compiles in (:mod:`deeplearning_tutorial.backend`).
    """
    parser = parser_for(function)
    parser.add_argument("--history-file", default=None, metavar="FILE",
                        help="write the learning curve and the result as JSON to FILE")
    parser.add_argument("--mode", default=None, choices=backend.MODES,
                        help="the PyTensor mode to compile in (default: PYTENSOR_FLAGS's, else NUMBA); "
                             "JAX runs on a GPU where JAX has one")
    arguments = vars(parser.parse_args(argv))
    history_file = arguments.pop("history_file")
    mode = arguments.pop("mode")
    speedups.keep_freed_memory()
    previous = signal.signal(signal.SIGTERM, _terminate)  # before training too, SIGTERM acts as Ctrl-C
    try:
        backend.check_mode(mode)
        with pytensor.config.change_flags(**({"mode": mode} if mode else {})):
            state = function(**arguments)
    except (DatasetError, DivergenceError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except TrainingAborted as exc:
        print(f"\nAborted by a second {exc}; a checkpoint, where the program keeps one, holds the "
              f"state of the last validation (--resume continues from there)", file=sys.stderr)
        raise SystemExit(128 + signal.Signals[str(exc)]) from None
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"\nInterrupted by {signal.Signals(signum).name} before training started: nothing was saved",
              file=sys.stderr)
        raise SystemExit(128 + signum) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not isinstance(state, LoopState):  # a run that trained nothing (lenet5 --summary): no history
        return state
    if history_file is not None:
        try:
            with atomic_write(history_file, "w") as handle:
                json.dump(history_record(state, arguments), handle, indent=1)
        except OSError as exc:
            print(f"error: could not write the history file {exc.filename}: {exc.strerror}", file=sys.stderr)
            raise SystemExit(1) from None
    if state.stopped_by is not None:
        raise SystemExit(128 + state.stopped_by)
    return state


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop, raised like Ctrl-C's KeyboardInterrupt."""

    signum = signal.SIGTERM


def _terminate(signum, frame) -> None:
    raise Terminated
