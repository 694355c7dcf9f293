"""A trial, in a Dask worker process: the tutorial function called with its arguments, its output
logged, its result read from the patience loop's state; and the worker's set-up (``--preload``)."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deeplearning_tutorial.programs import PROGRAMS, Program
from deeplearning_tutorial.training import run_record

# --------------------------------------------------------------------------
# A trial, in a worker process
# --------------------------------------------------------------------------

# Trials change the process's current folder and standard streams, so a
# worker process runs one at a time even where it has several threads.
_ONE_TRIAL_AT_A_TIME = threading.Lock()


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one trial in this process and return its record (the worker side of a study).

    The tutorial function runs with ``spec["arguments"]`` in a temporary
    folder (whatever it writes there is discarded),
    with ``spec["threads"]`` Numba/OpenMP threads and ``spec["floatX"]``;
    what it prints goes to the log, written live to ``spec["log_path"]``
    when that folder is visible from this machine, and returned in any case.
    A trial that raises (a diverging cost, impossible arguments) is a
    ``"failed"`` record with the reason; the study goes on.  So is one that
    ends no better than chance (:func:`chance_error`): its training diverged
    even if its cost stayed finite, and it keeps its numbers.

    Parameters
    ----------
    spec : dict
        ``program``, ``arguments``, ``floatX`` (or None), ``threads``, ``log_path``.

    Returns
    -------
    dict
        ``status`` ("done" or "failed"), the numbers of
        :func:`~deeplearning_tutorial.training.run_record` and ``chance``
        (percent), or ``reason``, ``seconds`` (the call's wall time), ``floatX``,
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
                state = program.function(**spec["arguments"])
            result = run_record(state)
            result["chance"] = chance_error(program, spec["arguments"])
            if result["validation"] is not None and result["validation"] < result["chance"]:
                record.update(status="done", **result)
            else:
                validation = "none" if result["validation"] is None else f"{result['validation']:.2f} %"
                record.update(status="failed", **result,
                              reason=f"diverged: its best validation error, {validation}, is no "
                                     f"better than chance ({result['chance']:.2f} %, the most frequent label "
                                     f"always)")
        except Exception as exc:
            traceback.print_exc()
            record.update(status="failed", reason=f"{type(exc).__name__}: {exc}")
        record["seconds"] = time.perf_counter() - start
        log.flush()
        record["log"] = log.getvalue()
    return record


def chance_error(program: Program, arguments: dict[str, Any]) -> float:
    """The validation error, in percent, of answering the most frequent label of the validation set every time.

    A trial whose best validation error is no lower has learned nothing:
    its training diverged (at a learning rate of 1e6, the MLP's cost stays
    finite while its error stays near 89 %, which is chance on MNIST).
    """
    from deeplearning_tutorial.mnist import resolve_dataset_path

    dataset = arguments.get(program.dataset_argument, program.defaults()[program.dataset_argument])
    path = resolve_dataset_path(dataset).resolve()  # the trial has just loaded it: it is there
    status = path.stat()
    return _chance_error(str(path), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=4)
def _chance_error(path: str, mtime_ns: int, size: int) -> float:
    """:func:`chance_error` of the dataset file ``path``, read once per worker process while it is unchanged."""
    import numpy as np

    from deeplearning_tutorial.datasets import read_dataset

    _, (_, labels), _ = read_dataset(path)
    return 100.0 * (1.0 - np.bincount(labels).max() / len(labels))


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
    """Worker preload (``--preload deeplearning_tutorial.tune.worker``): a worker set up as a program's ``main``.

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


def worker_threads() -> int:
    """A worker's Numba threads; calling it imports this module, and so the programs, in the worker
    (the first trial's time leaves the imports out)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]  # set at import by numba
