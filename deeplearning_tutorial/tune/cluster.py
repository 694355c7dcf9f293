"""The cluster and the client side: a LocalCluster whose workers run one trial at a time, and
the loop that submits the trials, records each finished one atomically and shows the progress."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from deeplearning_tutorial.files import atomic_write
from deeplearning_tutorial.training import StatusLine, format_hms
from deeplearning_tutorial.tune.study import Study, Trial, describe_arguments, expand_trials
from deeplearning_tutorial.tune.worker import run_trial

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
                            preload=[run_trial.__module__],  # the worker module: its dask_setup
                            dashboard_address=":8787" if dashboard else None)


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
    return record, f"{line}  [{describe_arguments(trial.searched)}]"


class _ProgressBar:
    """One line on stderr over the study's trials: done / running / failed, best so far, ETA."""

    def __init__(self, total: int, records: dict, ids: list[str], enabled: bool) -> None:
        self.enabled, self.total = enabled, total
        current = [records[i] for i in ids if i in records]
        self.done = sum(r["status"] == "done" for r in current)
        self.failed = sum(r["status"] == "failed" for r in current)  # lost ones run again
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
