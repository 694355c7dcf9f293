"""Tuning studies: run a tutorial program over a grid or a random sample of its arguments.

A study is a TOML file that names a program and what to vary::

    name = "lenet_lr"
    program = "convolutional_mlp"
    floatX = "float32"            # optional; default: the caller's PYTENSOR_FLAGS
    [fixed]                       # arguments every trial gets
    n_epochs = 20
    [grid]                        # every combination of these values
    learning_rate = [0.05, 0.1, 0.2]
    nkerns = [[20, 50], [10, 25]]

Several ``[[grid]]`` tables instead of one ``[grid]`` make a study of
their union: each varies its own arguments, the others keep the tutorial's
defaults (one factor at a time, say, rather than every combination).  Or,
instead of a grid, a random sample::

    [random]
    n_trials = 12
    seed = 0                                  # the sample is the same for the same seed
    learning_rate = {log_uniform = [0.01, 0.3]}
    batch_size = {choice = [100, 500]}
    n_hidden = {int_uniform = [100, 800]}     # both ends included
    L2_reg = {uniform = [0.0, 0.001]}

Each trial calls the real tutorial function with its arguments in a worker
process of a Dask cluster: by default a ``LocalCluster`` on this machine, or
an existing cluster given by its scheduler's address.  Every finished trial is
appended, atomically, to ``OUT/<name>/trials.jsonl``; its printed output goes
to ``OUT/<name>/logs/<id>.log`` (``<id>.running.log`` while it runs); at the
end ``summary.md`` ranks the trials and two plots show the validation error
against each searched argument and every trial's learning curve.

The pieces, in the order a study uses them: the program registry
(:data:`PROGRAMS`), the study file (:func:`load_study`, :func:`expand_trials`),
the worker side (:func:`run_trial`), the cluster and the client side
(:func:`local_cluster`, :func:`run_study`), and the report
(:func:`write_report`).  ``python scripts/tune.py STUDY.toml`` runs it all.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import tomllib
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from deeplearning_tutorial.datasets import atomic_write
from deeplearning_tutorial.training import StatusLine, format_hms

# --------------------------------------------------------------------------
# The programs a study can run
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Program:
    """A tutorial function that a study can call.

    Parameters
    ----------
    name : str
        The name a study file uses (``program = "mlp"``).
    target : str
        ``"module:function"``, imported only when the program is used.
    dataset_argument : str
        The argument that names the data file: a relative path in a study is
        made absolute against the caller's folder, since trials run elsewhere.
    """

    name: str
    target: str
    dataset_argument: str = "dataset"

    def load(self) -> Callable:
        """The tutorial function; raises StudyError when its module is not installed."""
        module_name, function_name = self.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise StudyError(f"program {self.name!r} needs {module_name}, which this installation "
                             f"does not have") from None
        return getattr(module, function_name)


# To make a new tutorial tunable, add one line here.
PROGRAMS: dict[str, Program] = {program.name: program for program in (
    Program("logistic_sgd", "deeplearning_tutorial.logistic_sgd:sgd_optimization_mnist"),
    Program("mlp", "deeplearning_tutorial.mlp:test_mlp"),
    Program("convolutional_mlp", "deeplearning_tutorial.convolutional_mlp:evaluate_lenet5"),
    Program("logistic_cg", "deeplearning_tutorial.logistic_cg:cg_optimization_mnist",
            dataset_argument="mnist_pkl_gz"),
    Program("lenet5", "deeplearning_tutorial.lenet5:train_lenet5"),
)}

# Arguments about a run's files, not its result: every trial runs in a folder
# of its own with their defaults, so a study may not set them.
MANAGED_ARGUMENTS = frozenset({"resume", "discard_checkpoint", "checkpoint_file", "best_model_file"})


# --------------------------------------------------------------------------
# The study file
# --------------------------------------------------------------------------


class StudyError(ValueError):
    """A study file that cannot be run, with what to change."""


DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
_STUDY_KEYS = {"name", "program", "floatX", "include_default", "fixed", "grid", "random"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass
class Study:
    """A parsed and checked study file (see the module docstring for the format)."""

    name: str
    program: Program
    defaults: dict[str, Any]  # the tutorial function's tunable arguments and their defaults
    fixed: dict[str, Any]
    grid: list[dict[str, list]] | None = None  # one or more grids: their trials' union
    random: dict[str, tuple[str, list]] | None = None  # argument -> (distribution, its list)
    n_trials: int = 0
    seed: int = 0
    floatX: str | None = None
    include_default: bool = False

    @property
    def searched(self) -> list[str]:
        """The arguments the study varies, in the file's order."""
        tables = self.grid if self.grid is not None else [self.random or {}]
        return list(dict.fromkeys(argument for table in tables for argument in table))


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of a study: the full arguments of the call and the searched ones."""

    id: str
    arguments: dict[str, Any]
    searched: dict[str, Any]


def load_study(path: Path | str, base_dir: Path | str | None = None) -> Study:
    """Read and check a study file; nothing is run.

    Parameters
    ----------
    path : Path or str
        The TOML study file.
    base_dir : Path or str, optional
        Folder that a relative dataset path is relative to (default: the
        current folder, as for the standalone programs).

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        For a file that is not TOML, an unknown program, key or argument, a
        value of the wrong type, an empty grid or an invalid distribution.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"no study file {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path} is not valid TOML: {exc}") from None
    return parse_study(document, source=str(path), base_dir=base_dir)


def parse_study(document: dict, source: str = "study", base_dir: Path | str | None = None) -> Study:
    """Check a study already read from TOML (``document``); see :func:`load_study`.

    Parameters
    ----------
    document : dict
        The study's TOML tables, as ``tomllib`` reads them.
    source : str
        What the messages name as the study (the file's path).
    base_dir : Path or str, optional
        As in :func:`load_study`.

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        For an unknown key, program or argument, a missing name or program,
        a name that is not a plain folder name, an invalid ``floatX`` or
        ``include_default``, a ``[fixed]``, ``[grid]`` or ``[random]`` that
        is not a table, both or neither of ``[grid]`` and ``[random]``, an
        argument both fixed and searched, a value of the wrong type, an
        empty grid, an invalid distribution or ``n_trials``/``seed``, or a
        program whose module is not installed.
    """
    def fail(message: str) -> StudyError:
        return StudyError(f"{source}: {message}")

    unknown = set(document) - _STUDY_KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; a study has {sorted(_STUDY_KEYS)}")
    for key in ("name", "program"):
        if not isinstance(document.get(key), str):
            raise fail(f'{key!r} must be given as a string, e.g. {key} = "..."')
    name = document["name"]
    if not _NAME.fullmatch(name):
        raise fail(f"name {name!r} must be a plain folder name (letters, digits, '_', '-', '.')")
    if document["program"] not in PROGRAMS:
        raise fail(f"unknown program {document['program']!r}; choose one of {sorted(PROGRAMS)}")
    program = PROGRAMS[document["program"]]
    floatX = document.get("floatX")
    if floatX not in (None, "float32", "float64"):
        raise fail(f'floatX must be "float32" or "float64", got {floatX!r}')
    include_default = document.get("include_default", False)
    if not isinstance(include_default, bool):
        raise fail(f"include_default must be true or false, got {include_default!r}")
    defaults = tunable_defaults(program.load())

    grids = document.get("grid", {})
    grids = grids if isinstance(grids, list) else [grids]
    tables = {}
    for table in ("fixed", "grid", "random"):
        values = grids if table == "grid" else [document.get(table, {})]
        if not all(isinstance(value, dict) for value in values):
            raise fail(f"[{table}] must be a table of arguments" + (" (or [[grid]] tables)" if table == "grid" else ""))
        tables[table] = {argument: None for value in values for argument in value} if table == "grid" else values[0]
    random_options = {key: tables["random"].pop(key) for key in ("n_trials", "seed") if key in tables["random"]}
    if "grid" in document and "random" in document:
        raise fail("give either [grid] or [random], not both")
    if "grid" not in document and "random" not in document:
        raise fail("nothing to search: add a [grid] table (every combination) or a [random] one")
    for table, arguments in tables.items():
        for argument in arguments:
            _check_argument_name(argument, defaults, program, f"[{table}]", fail)
    both = set(tables["fixed"]) & (set(tables["grid"]) | set(tables["random"]))
    if both:
        raise fail(f"{sorted(both)} both fixed and searched; keep each argument in one table")

    fixed = {argument: _checked_value(value, defaults[argument], f"fixed.{argument}", fail)
             for argument, value in tables["fixed"].items()}
    fixed = _absolute_dataset(fixed, program, base_dir)
    study = Study(name=name, program=program, defaults=defaults, fixed=fixed, floatX=floatX,
                  include_default=include_default)
    if "grid" in document:
        study.grid = [_checked_grid(grid, defaults, fail) for grid in grids or [{}]]
    else:
        study.n_trials = random_options.get("n_trials")  # type: ignore[assignment]  # checked just below
        study.seed = random_options.get("seed", 0)  # type: ignore[assignment]
        for option, value in (("n_trials", study.n_trials), ("seed", study.seed)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (option == "n_trials"):
                raise fail(f"random.{option} must be an integer >= {int(option == 'n_trials')}, "
                           f"got {value!r}")
        study.random = _checked_random(tables["random"], defaults, fail)
    return study


def tunable_defaults(function: Callable) -> dict[str, Any]:
    """The arguments a study may set: the function's defaulted ones, less the file-handling ones."""
    return {name: parameter.default for name, parameter in inspect.signature(function).parameters.items()
            if parameter.default is not inspect.Parameter.empty and name not in MANAGED_ARGUMENTS}


def _check_argument_name(argument, defaults, program, where, fail) -> None:
    if argument in MANAGED_ARGUMENTS:
        raise fail(f"{where} {argument!r}: every trial runs in its own folder with its own files; "
                   f"the study runner sets it")
    if argument not in defaults:
        raise fail(f"{where} {argument!r} is not an argument of {program.target}; "
                   f"it takes {sorted(defaults)}")


def _checked_value(value: Any, default: Any, where: str, fail) -> Any:
    """``value`` converted to the type of ``default`` (int -> float), or a StudyError."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, list):
            if not default:
                return value
            return [_checked_value(item, default[0], f"{where}[{i}]", fail) for i, item in enumerate(value)]
    else:
        raise fail(f"{where}: arguments of type {type(default).__name__} cannot be set from a study")
    expected = _type_name(default)
    raise fail(f"{where} must be {expected} (like the default {_toml(default)}), got {_toml(value)}")


def _type_name(default: Any, plural: bool = False) -> str:
    """What a value like ``default`` is, in words: "an integer", "a list of integers"."""
    if isinstance(default, (list, tuple)):
        name = f"list of {_type_name(default[0], plural=True)}" if default else "list"
        return name + "s" if plural else "a " + name
    singular, several = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
                         float: ("a number", "numbers"), str: ("a string", "strings")}[type(default)]
    return several if plural else singular


def _toml(value: Any) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _checked_grid(grid: dict, defaults: dict, fail) -> dict[str, list]:
    if not grid:
        raise fail("[grid] is empty: give each searched argument a list of values, "
                   "e.g. learning_rate = [0.05, 0.1]")
    checked = {}
    for argument, values in grid.items():
        if not isinstance(values, list) or not values:
            example = "[[20, 50], [10, 25]]" if isinstance(defaults[argument], (list, tuple)) else "[a, b]"
            raise fail(f"grid.{argument} must be a non-empty list of the values to try, e.g. "
                       f"{argument} = {example}; got {_toml(values)}")
        checked[argument] = [_checked_value(value, defaults[argument], f"grid.{argument}[{i}]", fail)
                             for i, value in enumerate(values)]
    return checked


def _checked_random(space: dict, defaults: dict, fail) -> dict[str, tuple[str, list]]:
    if not space:
        raise fail("[random] has no arguments: give each a distribution, "
                   "e.g. learning_rate = {log_uniform = [0.01, 0.3]}")
    checked = {}
    for argument, spec in space.items():
        where = f"random.{argument}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise fail(f"{where} must be one distribution, {{uniform|log_uniform|int_uniform|choice = [...]}}, "
                       f"got {_toml(spec)}")
        (kind, values), = spec.items()
        default = defaults[argument]
        if not isinstance(values, list) or not values:
            raise fail(f"{where}.{kind} must be a non-empty list")
        if kind == "choice":
            checked[argument] = (kind, [_checked_value(v, default, f"{where}.choice[{i}]", fail)
                                        for i, v in enumerate(values)])
            continue
        wanted = int if kind == "int_uniform" else float
        if default is not None and type(default) is not wanted:
            raise fail(f"{where}: {kind} draws {_type_name(wanted(), plural=True)}, "
                       f"but {argument} takes {_type_name(default)}")
        if (len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                or (wanted is int and not all(isinstance(v, int) for v in values))):
            raise fail(f"{where}.{kind} must be [low, high], two {_type_name(wanted(), plural=True)}; "
                       f"got {_toml(values)}")
        low, high = values
        if not low < high or (kind == "log_uniform" and low <= 0):
            raise fail(f"{where}.{kind} needs low < high" + (" and low > 0" if kind == "log_uniform" else "")
                       + f", got {_toml(values)}")
        checked[argument] = (kind, [wanted(low), wanted(high)])
    return checked


def _absolute_dataset(arguments: dict, program: Program, base_dir) -> dict:
    """A relative dataset path made absolute; a bare name stays (it is looked up in ``data/``)."""
    dataset = arguments.get(program.dataset_argument)
    if isinstance(dataset, str) and Path(dataset).parent != Path("."):
        path = Path(dataset).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or os.getcwd()) / path
        arguments = {**arguments, program.dataset_argument: str(path)}
    return arguments


def expand_trials(study: Study) -> list[Trial]:
    """The study's trials, in a fixed order: each grid's combinations, or the random sample.

    A random sample is drawn with NumPy's generator from ``seed``, so the
    same file always gives the same trials (which is what lets ``--resume``
    find them again).  Repeated draws are kept once.  With
    ``include_default = true`` the tutorial's defaults for the searched
    arguments are added first if they are not among the trials already.
    """
    if study.grid is not None:
        # arguments a grid does not vary are set to their defaults, so that a
        # combination that two grids share is one trial
        default = default_point(study)
        combinations = [{**default, **dict(zip(grid, values))}
                        for grid in study.grid for values in itertools.product(*grid.values())]
    else:
        assert study.random is not None
        combinations = _random_sample(study.random, study.n_trials, study.seed)
    if study.include_default:
        combinations.insert(0, default_point(study))
    trials, seen = [], set()
    for searched in combinations:
        arguments = _absolute_dataset({**study.fixed, **searched}, study.program, None)
        trial_id = _trial_id(study.program.name, arguments, study.floatX)
        if trial_id not in seen:
            seen.add(trial_id)
            trials.append(Trial(trial_id, arguments, searched))
    return trials


def default_point(study: Study) -> dict[str, Any]:
    """The searched arguments at the tutorial's defaults."""
    return {argument: _plain(study.defaults[argument]) for argument in study.searched}


def _plain(value: Any) -> Any:
    """Tuples as lists, as TOML and JSON give them back."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _random_sample(space: dict[str, tuple[str, list]], n_trials: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    sample = []
    for _ in range(n_trials):
        point = {}
        for argument, (kind, values) in space.items():
            if kind == "choice":
                point[argument] = values[int(rng.integers(len(values)))]
            elif kind == "int_uniform":
                point[argument] = int(rng.integers(values[0], values[1], endpoint=True))
            elif kind == "uniform":
                point[argument] = float(rng.uniform(values[0], values[1]))
            else:
                point[argument] = float(math.exp(rng.uniform(math.log(values[0]), math.log(values[1]))))
        sample.append(point)
    return sample


def _trial_id(program: str, arguments: dict, floatX: str | None) -> str:
    key = json.dumps({"program": program, "arguments": arguments, "floatX": floatX}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------
# A trial, in a worker process
# --------------------------------------------------------------------------

# Trials change the process's current folder and standard streams, so a
# worker process runs one at a time even where it has several threads.
_ONE_TRIAL_AT_A_TIME = threading.Lock()


def trial_result(state: Any) -> dict[str, Any]:
    """The numbers of a finished run, read from what the tutorial function returned.

    The patience loop's state (``training.LoopState``) has the best
    validation error, its test error and iteration, the epochs run and one
    history entry ``(iter, validation error, test error or None)`` per
    validation; errors are fractions, iterations 0-based.

    Returns
    -------
    dict
        ``validation`` and ``test`` in percent, ``best_iteration`` (1-based,
        as the programs print it), ``epochs``, ``train_seconds`` and
        ``history``: ``{"iteration", "validation", "test"}`` per validation.
    """
    def percent(error):
        return None if error is None else float(error) * 100.0

    return {
        "validation": percent(state.best_validation_loss),
        "test": percent(state.test_score),
        "best_iteration": int(state.best_iter) + 1,
        "epochs": int(state.epoch),
        "train_seconds": float(state.elapsed),
        "history": [{"iteration": int(it) + 1, "validation": percent(valid), "test": percent(test)}
                    for it, valid, test in state.history],
    }


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one trial in this process and return its record (the worker side of a study).

    The tutorial function runs with ``spec["arguments"]`` in a temporary
    folder (its checkpoint and best-model files go there and are discarded),
    with ``spec["threads"]`` Numba/OpenMP threads and ``spec["floatX"]``;
    what it prints goes to the log, written live to ``spec["log_path"]``
    when that folder is visible from this machine, and returned in any case.
    A trial that raises (a diverging cost, impossible arguments) is a
    ``"failed"`` record with the reason; the study goes on.

    Parameters
    ----------
    spec : dict
        ``program``, ``arguments``, ``floatX`` (or None), ``threads``, ``log_path``.

    Returns
    -------
    dict
        ``status`` ("done" or "failed"), the numbers of :func:`trial_result`
        or ``reason``, ``seconds`` (the call's wall time), ``floatX``,
        ``threads``, ``host``, ``pid``, ``log`` (the printed text).
    """
    program = PROGRAMS[spec["program"]]
    with _ONE_TRIAL_AT_A_TIME, _log_stream(spec.get("log_path")) as log, \
            tempfile.TemporaryDirectory(prefix="trial-") as folder, contextlib.chdir(folder), \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        record: dict[str, Any] = {"threads": spec["threads"], "host": socket.gethostname(), "pid": os.getpid()}
        start = time.perf_counter()
        try:
            record["threads"] = _use_threads(spec["threads"])
            import pytensor

            flags = {"floatX": spec["floatX"]} if spec.get("floatX") else {}
            with pytensor.config.change_flags(**flags):
                record["floatX"] = pytensor.config.floatX
                function = program.load()
                state = function(**spec["arguments"])
            record.update(status="done", **trial_result(state))
        except Exception as exc:
            traceback.print_exc()
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        record["seconds"] = time.perf_counter() - start
        log.flush()
        record["log"] = log.getvalue()
    return record


class _Tee(io.StringIO):
    """A StringIO that also writes every line through to a file (the live log)."""

    def __init__(self, handle) -> None:
        super().__init__()
        self._handle = handle

    def write(self, text: str) -> int:
        if self._handle is not None:
            self._handle.write(text)
        return super().write(text)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()


@contextlib.contextmanager
def _log_stream(log_path: str | None) -> Iterator[_Tee]:
    """The trial's output: kept in memory, and written live where the log folder exists here."""
    live = Path(log_path) if log_path else None
    if live is not None and live.parent.is_dir():
        with open(live, "w", buffering=1) as handle:
            yield _Tee(handle)
    else:
        yield _Tee(None)


def _use_threads(threads: int) -> int:
    """Give this thread's Numba parallel loops and the C kernels ``threads`` threads; return Numba's count.

    The kernels and the split matrix products read ``numba.get_num_threads()``,
    which is set per calling thread; it cannot exceed the process's
    ``NUMBA_NUM_THREADS``, which :func:`local_cluster` sets for its workers.
    """
    import numba

    available = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import by numba
    if threads > available:
        raise ValueError(f"--threads-per-trial {threads} is more than this worker's NUMBA_NUM_THREADS "
                         f"({available}); start its workers with NUMBA_NUM_THREADS={threads}")
    numba.set_num_threads(threads)
    return numba.get_num_threads()


def dask_setup(worker) -> None:
    """Worker preload (``--preload deeplearning_tutorial.tune``): a worker process set up as a program's ``main``.

    Ctrl-C in the terminal stops the study from the client, not the workers:
    the workers of a ``LocalCluster`` share the terminal's process group, so
    they would get the same SIGINT and die mid-trial while the client cancels
    and shuts them down in order.  And freed memory stays in the heap, the one
    process-wide setting the tutorial programs' ``main`` makes
    (:func:`deeplearning_tutorial.speedups.keep_freed_memory`), so that trials
    run as fast as the standalone programs.
    """
    from deeplearning_tutorial import speedups

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    speedups.keep_freed_memory()


def import_program(name: str) -> int:
    """Import a program's module in a worker (the first trial's time leaves it out); return its Numba threads."""
    PROGRAMS[name].load()
    import numba

    return numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import by numba


# --------------------------------------------------------------------------
# The cluster and the client side
# --------------------------------------------------------------------------


def worker_environment(threads_per_trial: int) -> dict[str, str]:
    """Environment of a worker process giving each trial ``threads_per_trial`` threads.

    Numba reads ``NUMBA_NUM_THREADS`` once, when it is imported, and OpenMP
    and the BLAS libraries read theirs when they load, so they are set for the
    process before it starts: :func:`local_cluster`'s Nannies set them before
    starting a worker, in place of Dask's own (which gives 1 thread, and a
    ``MALLOC_TRIM_THRESHOLD_`` that would undo :func:`dask_setup`'s
    :func:`~deeplearning_tutorial.speedups.keep_freed_memory`).
    The standalone equivalent of a trial is the program run with the same
    variables.
    """
    threads = str(threads_per_trial)
    return {variable: threads for variable in
            ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def local_cluster(workers: int, threads_per_trial: int = 1, *, retries: int = 1, dashboard: bool = True):
    """A Dask ``LocalCluster`` for a study: ``workers`` processes, one trial each at a time.

    Parameters
    ----------
    workers : int
        Worker processes (trials running at once).
    threads_per_trial : int
        Numba/OpenMP/BLAS threads of each worker's trial (see :func:`worker_environment`).
    retries : int
        How many times a trial whose worker process died is run again before
        it is recorded as lost (Dask's ``allowed-failures``).
    dashboard : bool
        Serve Dask's dashboard (live task stream, worker CPU and memory).

    Returns
    -------
    distributed.LocalCluster

    Raises
    ------
    ValueError
        When ``workers`` or ``threads_per_trial`` is not an integer >= 1, or
        ``retries`` not an integer >= 0.
    """
    import dask
    from distributed import LocalCluster

    for name, value in (("workers", workers), ("threads_per_trial", threads_per_trial), ("retries", retries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (name != "retries"):
            raise ValueError(f"{name} must be an integer >= {int(name != 'retries')}, got {value!r}")
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            worker_class=_environment_keeping_nanny(), env=worker_environment(threads_per_trial),
                            preload=[__name__], dashboard_address=":8787" if dashboard else None)


@functools.cache
def _environment_keeping_nanny() -> type:
    """Dask's ``Nanny``, with the worker's variables set before it starts and the environment
    of the Nanny's own process put back afterwards.

    A Nanny sets only its pre-spawn variables before starting a worker
    process (Dask's defaults: one OpenMP/BLAS thread and a
    ``MALLOC_TRIM_THRESHOLD_``, each overridden by the caller's own
    environment), and its ``env`` once the worker's interpreter is running,
    too late for the libraries that read their thread counts when they load.
    This one makes its ``env`` (:func:`worker_environment`) the pre-spawn
    variables, in place of Dask's thread counts and trim threshold.

    The Nanny writes the pre-spawn variables into the environment of the
    process it lives in, for the worker to inherit them; the Nannies of a
    ``LocalCluster`` live in the caller's process, which would keep them for
    good.  They are put back once the worker has started (or restarted):
    while a worker starts, the caller's environment holds them.  The Nannies
    of a cluster start their workers concurrently, in one event loop: the
    environment is saved when the first begins and put back when the last
    has ended.
    """
    from distributed import Nanny

    class EnvironmentKeepingNanny(Nanny):
        starting = 0  # Nannies starting a worker now
        saved_environment: dict[str, str] = {}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            dask_defaults = set(worker_environment(1)) | {"MALLOC_TRIM_THRESHOLD_"}
            ours = dict(kwargs.get("env") or {})
            # before the worker starts, and again in it (the Nanny's env holds the pre-spawn ones)
            self.pre_spawn_env = {k: v for k, v in self.pre_spawn_env.items() if k not in dask_defaults} | ours
            self.env = {k: v for k, v in self.env.items() if k not in dask_defaults} | ours

        async def instantiate(self):
            cls = EnvironmentKeepingNanny
            if cls.starting == 0:
                cls.saved_environment = dict(os.environ)
            cls.starting += 1
            try:
                return await super().instantiate()
            finally:
                cls.starting -= 1
                if cls.starting == 0:
                    for added in os.environ.keys() - cls.saved_environment.keys():
                        del os.environ[added]
                    os.environ.update(cls.saved_environment)

    return EnvironmentKeepingNanny


FINISHED = ("done", "failed")  # what --resume does not run again; "lost" trials it does


@dataclasses.dataclass
class StudyOutcome:
    """What :func:`run_study` did: the study's records (latest per trial), how many trials it
    recorded this time, and whether Ctrl-C stopped it."""

    records: dict[str, dict]
    ran: int
    interrupted: bool = False


class TrialsFile:
    """``trials.jsonl``: one JSON object per finished trial, the whole file replaced atomically.

    A trial run again (after it was lost) gets a new line; the last line of
    an id is its current record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path.exists() else []

    def records(self) -> dict[str, dict]:
        """The current record of each trial id: its last line.

        Raises
        ------
        ValueError
            When a line is not JSON, naming the line.
        """
        latest = {}
        for number, line in enumerate(self.lines, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.path}, line {number} is not JSON ({exc}); "
                                 f"fix or remove that line") from None
            latest[record["id"]] = record
        return latest

    def append(self, record: dict) -> None:
        """Add ``record`` as a new line and write the whole file again, atomically."""
        self.lines.append(json.dumps(record, sort_keys=False))
        with atomic_write(self.path, "w") as handle:
            handle.write("\n".join(self.lines) + "\n")


def run_study(study: Study, client, out_dir: Path | str, *, threads_per_trial: int = 1,
              resume: bool = False, progress: bool | None = None) -> StudyOutcome:
    """Run a study's trials on a Dask cluster; record each as it finishes.

    Parameters
    ----------
    study : Study
    client : distributed.Client
        Connected to the cluster the trials run on.
    out_dir : Path or str
        The study's results go to ``out_dir/<name>/``.
    threads_per_trial : int
        Numba threads each trial uses (the workers must allow that many).
    resume : bool
        Continue a study: trials already ``done`` or ``failed`` in
        ``trials.jsonl`` are not run again.  Without it, an existing
        ``trials.jsonl`` is an error, so two studies never mix.
    progress : bool, optional
        Show a progress bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    StudyOutcome
        Ctrl-C cancels the running trials and returns with ``interrupted``;
        every finished trial is already on disk.

    Raises
    ------
    FileExistsError
        When the study folder has trials and ``resume`` is false.
    ValueError
        When a line of an existing ``trials.jsonl`` is not JSON.
    """
    from distributed import wait

    folder = Path(out_dir) / study.name
    trials_file = TrialsFile(folder / "trials.jsonl")
    if trials_file.lines and not resume:
        raise FileExistsError(f"{trials_file.path} already has {len(trials_file.lines)} trial(s); "
                              f"continue it with --resume, or choose another --out or study name")
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    records = trials_file.records()
    trials = expand_trials(study)
    todo = [trial for trial in trials if records.get(trial.id, {}).get("status") not in FINISHED]
    print(f"study {study.name}: {len(trials)} trial(s) of {study.program.name}, "
          f"{len(trials) - len(todo)} already finished, {len(todo)} to run", flush=True)

    bar = _ProgressBar(len(trials), records, [t.id for t in trials],
                       sys.stderr.isatty() if progress is None else progress)
    # Trials are submitted only as worker threads free up: Dask would otherwise place
    # several on one worker at once, and that worker's death would count against all of them.
    waiting, futures, interrupted = list(todo), {}, False
    pending: set[Any] = set()
    try:
        while waiting or pending:
            slots = sum(w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values())
            while waiting and len(pending) < max(slots, 1):
                trial = waiting.pop(0)
                spec = {"program": study.program.name, "arguments": trial.arguments, "floatX": study.floatX,
                        "threads": threads_per_trial,
                        "log_path": str((folder / "logs" / f"{trial.id}.running.log").resolve())}
                future = client.submit(run_trial, spec, key=f"trial-{trial.id}-{uuid.uuid4().hex[:8]}",
                                       pure=False)
                futures[future] = trial
                pending.add(future)
            bar.show(running=len(pending))
            try:
                finished, pending = wait(pending, timeout=1.0, return_when="FIRST_COMPLETED")
            except TimeoutError:
                finished = set()
            for future in finished:
                trial = futures.pop(future)
                record, line = _record(trial, future, folder)
                trials_file.append(record)
                records[trial.id] = record
                bar.close()
                print(line, flush=True)
                bar.finished(record)
    except KeyboardInterrupt:
        interrupted = True
        client.cancel(list(pending))
    finally:
        bar.close()
    return StudyOutcome({t.id: records[t.id] for t in trials if t.id in records},
                        ran=bar.new, interrupted=interrupted)


def _record(trial: Trial, future, folder: Path) -> tuple[dict, str]:
    """A trial's line of ``trials.jsonl`` (its log written beside it) and a line to print."""
    record = {"id": trial.id, "params": trial.arguments, "searched": trial.searched}
    try:
        result = future.result()
    except Exception as exc:  # the worker died (KilledWorker) or the task could not run there
        record.update(status="lost", reason=f"{type(exc).__name__}: {exc}")
    else:
        log_path = folder / "logs" / f"{trial.id}.log"
        with atomic_write(log_path, "w") as handle:
            handle.write(result.pop("log"))
        (folder / "logs" / f"{trial.id}.running.log").unlink(missing_ok=True)
        record.update(status=result.pop("status"), **result, log=str(log_path.relative_to(folder)))
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    line = f"trial {trial.id} {record['status']}"
    if record["status"] == "done":
        line += (f": validation {record['validation']:f} %, test {record['test']:f} % "
                 f"({record['seconds']:.1f} s)")
    else:
        line += f": {record['reason']}"
    return record, f"{line}  [{_describe(trial.searched)}]"


def _describe(arguments: dict) -> str:
    return " ".join(f"{name}={_toml(value)}" for name, value in arguments.items())


class _ProgressBar:
    """One line on stderr over the study's trials: done / running / failed, best so far, ETA."""

    def __init__(self, total: int, records: dict, ids: list[str], enabled: bool) -> None:
        self.enabled, self.total = enabled, total
        current = [records[i] for i in ids if i in records]
        self.done = sum(r["status"] == "done" for r in current)
        self.failed = sum(r["status"] in ("failed", "lost") for r in current)
        self.best = min((r["validation"] for r in current if r["status"] == "done"), default=math.inf)
        self.start, self.new = time.perf_counter(), 0
        self.line = StatusLine()

    def finished(self, record: dict) -> None:
        self.new += 1
        if record["status"] == "done":
            self.done += 1
            self.best = min(self.best, record["validation"])
        elif record["status"] in ("failed", "lost"):
            self.failed += 1

    def show(self, running: int) -> None:
        if not self.enabled:
            return
        finished = self.done + self.failed
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.new * (self.total - finished) if self.new else math.nan
        width = 30
        filled = int(width * finished / max(self.total, 1))
        best = f"{self.best:.4f} %" if math.isfinite(self.best) else "-"
        self.line.show(f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} | "
                       f"{self.done} done, {running} running, {self.failed} failed | best valid {best} | "
                       f"elapsed {format_hms(elapsed)} | ETA {format_hms(eta)}")

    def close(self) -> None:
        self.line.clear()


# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def write_report(study: Study, records: dict[str, dict], out_dir: Path | str) -> list[Path]:
    """Write ``summary.md`` and, where matplotlib is installed, the two plots.

    Parameters
    ----------
    study : Study
    records : dict
        The study's trial records by id (:attr:`StudyOutcome.records`).
    out_dir : Path or str
        The folder that holds the study's folder.

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(out_dir) / study.name
    summary = folder / "summary.md"
    with atomic_write(summary, "w") as handle:
        handle.write(summary_markdown(study, list(records.values())))
    written = [summary]
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[plot]')", file=sys.stderr)
        return written
    matplotlib.use("Agg")
    done = [r for r in records.values() if r["status"] == "done"]
    if done:
        written += [_plot_by_argument(study, done, folder / "validation_by_argument.png"),
                    _plot_learning_curves(done, folder / "learning_curves.png")]
    return written


def _ranked(records: list[dict]) -> list[dict]:
    return sorted((r for r in records if r["status"] == "done"), key=lambda r: (r["validation"], r["test"]))


def summary_markdown(study: Study, records: list[dict]) -> str:
    """The study's summary: trials ranked by validation error, the best arguments, the default marked."""
    default = default_point(study)
    searched = study.searched
    ranked = _ranked(records)
    lines = [f"# Study `{study.name}`: {study.program.name}", ""]
    fixed = _describe(study.fixed) or "none"
    lines += [(f"Program `{study.program.target}`, floatX {study.floatX or 'of the caller'}; "
               f"fixed arguments: {fixed}. {len(ranked)} trials done, "
               f"{sum(r['status'] == 'failed' for r in records)} failed, "
               f"{sum(r['status'] == 'lost' for r in records)} lost."), ""]
    if ranked:
        best = ranked[0]
        lines += [(f"**Best**: {_describe(best['searched'])}: validation {best['validation']:f} %, "
                   f"test {best['test']:f} % (iteration {best['best_iteration']})."), ""]
    default_rows = [r for r in records if r["searched"] == default]
    if not default_rows:
        lines += [(f"The tutorial's default ({_describe(default)}) is not among the trials; "
                   f"`include_default = true` adds it."), ""]
    header = ["rank", *searched, "validation %", "test %", "best iteration", "epochs", "seconds", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, record in enumerate(ranked, 1):
        mark = "**default**" if record["searched"] == default else ""
        cells = [str(rank), *(_toml(record["searched"][a]) for a in searched),
                 f"{record['validation']:f}", f"{record['test']:f}", str(record["best_iteration"]),
                 str(record["epochs"]), f"{record['seconds']:.1f}", mark]
        lines.append("| " + " | ".join(cells) + " |")
    unfinished = [r for r in records if r["status"] != "done"]
    if unfinished:
        lines += ["", "Not finished:", ""]
        lines += [f"- {_describe(r['searched'])}: {r['status']}: {r['reason']}"
                  + (" (`--resume` runs it again)" if r["status"] == "lost" else "") for r in unfinished]
    if "seed" in searched and len(searched) > 1:
        lines += ["", *_over_seeds(ranked, searched, default)]
    lines += ["", ("Plots: `validation_by_argument.png`, `learning_curves.png`; "
                   "each trial's output in `logs/<id>.log`, its numbers in `trials.jsonl`."), ""]
    return "\n".join(lines)


def _over_seeds(ranked: list[dict], searched: list[str], default: dict) -> list[str]:
    """Mean and standard deviation over seeds of each combination of the other arguments."""
    import numpy as np

    others = [a for a in searched if a != "seed"]
    groups: dict[str, list[dict]] = {}
    for record in ranked:
        groups.setdefault(json.dumps([record["searched"][a] for a in others]), []).append(record)
    rows = []
    for key, group in groups.items():
        valid = np.array([r["validation"] for r in group])
        test = np.array([r["test"] for r in group])
        rows.append((valid.mean(), json.loads(key), valid, test))
    rows.sort(key=lambda row: row[0])
    default_key = [default[a] for a in others]
    lines = ["Over seeds (mean ± sample standard deviation):", "",
             "| " + " | ".join([*others, "seeds", "validation %", "test %", ""]) + " |",
             "|" + "---|" * (len(others) + 4)]
    for _, values, valid, test in rows:
        def spread(a):
            return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a.mean():.4f}"

        lines.append("| " + " | ".join([*(_toml(v) for v in values), str(len(valid)), spread(valid), spread(test),
                                        "**default**" if values == default_key else ""]) + " |")
    return lines


def _plot_by_argument(study: Study, done: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    searched = study.searched
    default = default_point(study)
    figure, axes = plt.subplots(1, len(searched), figsize=(max(6.0, 4.2 * len(searched)), 3.8), squeeze=False)
    for axis, argument in zip(axes[0], searched):
        values = [r["searched"][argument] for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            positions = values
        else:
            labels = sorted({_toml(v) for v in values})
            positions = [labels.index(_toml(v)) for v in values]
            axis.set_xticks(range(len(labels)), labels, rotation=30)
        errors = [r["validation"] for r in done]
        axis.scatter(positions, errors, alpha=0.7)
        at_default = [i for i, r in enumerate(done) if r["searched"] == default]
        axis.scatter([positions[i] for i in at_default], [errors[i] for i in at_default], s=120,
                     facecolors="none", edgecolors="tab:red", label="the tutorial's default")
        if at_default:
            axis.legend(fontsize="small")
        if numeric and len(set(values)) > 2 and min(values) > 0 and max(values) / min(values) > 20:
            axis.set_xscale("log")
        axis.set_xlabel(argument)
        axis.set_ylabel("best validation error (%)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"{study.name}: best validation error of each trial", fontsize="medium")
    figure.tight_layout()
    return _save_figure(figure, path)


def _plot_learning_curves(done: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for record in _ranked(done):
        history = record["history"]
        axis.plot([h["iteration"] for h in history], [h["validation"] for h in history],
                  label=_describe(record["searched"]), linewidth=1)
    axis.set_xlabel("iteration (minibatches trained)")
    axis.set_ylabel("validation error (%)")
    axis.grid(alpha=0.3)
    if len(done) <= 12:
        axis.legend(fontsize="small")
    axis.set_title("learning curves of all trials")
    figure.tight_layout()
    return _save_figure(figure, path)


def _save_figure(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options of ``scripts/tune.py`` (``--help`` lists them), parsed from ``argv`` (default: ``sys.argv``)."""
    parser = argparse.ArgumentParser(
        description="Run a tuning study (a TOML file) of a tutorial program on a Dask cluster.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("study", type=Path, help="the study file")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of the local cluster (default: cores // threads per trial)")
    parser.add_argument("--threads-per-trial", type=int, default=1,
                        help="Numba/OpenMP/BLAS threads of each trial")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on an existing Dask cluster, e.g. tcp://host:8786, instead of a local one")
    parser.add_argument("--out", type=Path, default=Path("results/tuning"), help="results go to OUT/<name>/")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study: run only the trials not done or failed yet")
    parser.add_argument("--retries", type=int, default=1,
                        help="local cluster: runs again of a trial whose worker process died, before it is lost")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/tune.py``: load the study, start or join a cluster, run, report."""
    args = parse_args(argv)
    from distributed import Client

    try:
        study = load_study(args.study)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if study.floatX is None:
        import pytensor

        study.floatX = pytensor.config.floatX
    if args.threads_per_trial < 1:
        print("error: --threads-per-trial must be >= 1", file=sys.stderr)
        return 2
    cluster = None
    try:
        if args.scheduler:
            client = Client(args.scheduler)
        else:
            workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads_per_trial)
            cluster = local_cluster(workers, args.threads_per_trial, retries=args.retries)
            client = Client(cluster)
        with client:
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
            print(f"Dask cluster {client.scheduler.address}: {n_workers} workers; "
                  f"dashboard {client.dashboard_link}", flush=True)
            too_few = {worker: threads for worker, threads in client.run(import_program, study.program.name).items()
                       if threads < args.threads_per_trial}
            if too_few:
                raise ValueError(f"--threads-per-trial {args.threads_per_trial} is more than the Numba threads "
                                 f"of workers {too_few}; start them with NUMBA_NUM_THREADS={args.threads_per_trial}")
            outcome = run_study(study, client, args.out, threads_per_trial=args.threads_per_trial,
                                resume=args.resume)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if cluster is not None:
            cluster.close()
    for path in write_report(study, outcome.records, args.out):
        print(f"wrote {path}")
    if outcome.interrupted:
        print(f"Interrupted: the finished trials are in {args.out / study.name / 'trials.jsonl'}; "
              f"continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
