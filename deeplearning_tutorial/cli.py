"""Command lines for the tutorial programs, derived from their functions' signatures.

``--learning-rate 0.1 --n-epochs 1 --nkerns 5 5`` map onto the keyword
arguments of ``evaluate_lenet5`` (or any other tutorial function): every
parameter with a default becomes an option of the same type, so the command
line can never drift from the function it runs.  The options about the run's
files (``--resume``, ``--checkpoint-file``, ``--best-model-file``,
``--discard-checkpoint``, ``--history-file``) come from the program's entry
in :data:`~deeplearning_tutorial.programs.PROGRAMS`; they are not arguments
of the tutorial function, which trains inside the run's
:class:`~deeplearning_tutorial.checkpoints.RunFiles` block.
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
from deeplearning_tutorial.checkpoints import RunFiles
from deeplearning_tutorial.datasets import DatasetError
from deeplearning_tutorial.programs import PROGRAMS, Program
from deeplearning_tutorial.training import DivergenceError, TrainingAborted, run_record


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


def program_parser(program: Program,
                   parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The command line of ``program``: its function's options, its run files' options and ``--mode``."""
    parser = parser_for(program.function, parser_class=parser_class)
    add_run_file_options(parser, program)
    parser.add_argument("--mode", default=None, choices=backend.MODES,
                        help="the PyTensor mode to compile in (default: PYTENSOR_FLAGS's, else NUMBA); "
                             "JAX runs on a GPU where JAX has one")
    return parser


def changed_options(program: Program, argv: Sequence[str]) -> dict[str, Any]:
    """The parameters that ``argv`` sets to other values than their defaults, parsed as ``program`` parses it.

    Abbreviated options (``--se`` for ``--seed``) count as the program counts them.

    Raises
    ------
    ValueError
        With argparse's message, when ``argv`` is not a valid command line of ``program``.
    """
    parser = program_parser(program, parser_class=_RefusingParser)
    defaults, given = vars(parser.parse_args([])), vars(parser.parse_args(argv))
    return {name: value for name, value in given.items() if value != defaults[name]}


def add_run_file_options(parser: argparse.ArgumentParser, program: Program) -> None:
    """The options about a run's files, as ``program`` has them: checkpoint, best model, history."""
    if program.checkpoint_file is not None:
        parser.add_argument("--resume", action="store_true",
                            help="continue the interrupted run saved in the checkpoint file (same arguments)")
        parser.add_argument("--discard-checkpoint", action="store_true",
                            help="start over even if the checkpoint file holds an interrupted run "
                                 "(it is overwritten)")
        parser.add_argument("--checkpoint-file", default=program.checkpoint_file, metavar="FILE",
                            help="where the run's state is saved at every validation")
    if program.best_model_file is not None:
        parser.add_argument("--best-model-file", default=program.best_model_file, metavar="FILE",
                            help="where each new best model is saved (load it with "
                                 "deeplearning_tutorial.programs.load_best_model)")
    parser.add_argument("--history-file", default=None, metavar="FILE",
                        help="write the learning curve and the result as JSON to FILE")


RUN_FILE_OPTIONS = ("resume", "discard_checkpoint", "checkpoint_file", "best_model_file", "history_file")


def run_config(arguments: dict) -> dict:
    """What a run's files record of it: its arguments and floatX, as JSON data (tuples become lists)."""
    return json.loads(json.dumps({**arguments, "floatX": pytensor.config.floatX}))


def run(name: str, argv: Sequence[str] | None = None) -> Any:
    """Run the program ``name`` of :data:`~deeplearning_tutorial.programs.PROGRAMS` as a command.

    ``argv`` is parsed for its tutorial function and its run files
    (:func:`program_parser`); the function is called
    inside a ``with RunFiles(...)`` block, so the run keeps a checkpoint and
    its best model, resumes with ``--resume``, and writes ``--history-file``
    (:func:`~deeplearning_tutorial.training.run_record` with the arguments).
    Known failures exit with a one-line message and status 1.  A run stopped
    by a signal (Ctrl-C, SIGTERM) exits with status 128 + the signal's number
    (130, 143), as a shell reports a process killed by it.  Also keeps freed
    memory in the heap for the rest of the process
    (:func:`deeplearning_tutorial.speedups.keep_freed_memory`), as a tutorial
    program's ``main``.  ``--mode`` is the PyTensor mode the run compiles in
    (:mod:`deeplearning_tutorial.backend`).
    """
    program = PROGRAMS[name]
    parser = program_parser(program)
    arguments = vars(parser.parse_args(argv))
    changed = {key: value for key, value in arguments.items()
               if key not in RUN_FILE_OPTIONS and key != "mode" and value != parser.get_default(key)}
    if pytensor.config.floatX not in ("float32", "float64"):
        parser.error(f"floatX={pytensor.config.floatX} is not supported: the tutorials run in float32 or float64 "
                     f"(PYTENSOR_FLAGS=floatX=float32)")
    file_options = {key: arguments.pop(key) for key in RUN_FILE_OPTIONS if key in arguments}
    mode = arguments.pop("mode")
    speedups.keep_freed_memory()
    previous = signal.signal(signal.SIGTERM, _terminate)  # before training too, SIGTERM acts as Ctrl-C
    try:
        backend.check_mode(mode)
        with pytensor.config.change_flags(**({"mode": mode} if mode else {})):
            if program.dry_run_argument is not None and arguments[program.dry_run_argument]:
                return program.function(**arguments)
            with RunFiles(program.name, run_config(arguments), **file_options) as files:
                state = program.function(**arguments)
                files.write_history({"arguments": files.config, **run_record(state)})
    except (DatasetError, DivergenceError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except MemoryError:
        print(f"error: not enough memory for this run of {name} with "
              f"{', '.join(f'--{key.replace('_', '-')} {value}' for key, value in changed.items()) or 'its defaults'}"
              f"; choose smaller sizes", file=sys.stderr)
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
    if state.stopped_by is not None:
        raise SystemExit(128 + state.stopped_by)
    return state


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop, raised like Ctrl-C's KeyboardInterrupt."""

    signum = signal.SIGTERM


def _terminate(signum, frame) -> None:
    raise Terminated
