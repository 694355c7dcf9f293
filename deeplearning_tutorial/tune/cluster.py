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

from deeplearning_tutorial.files import RunLock, atomic_write, create_temporary_beside
from deeplearning_tutorial.training import StatusLine, format_hms
from deeplearning_tutorial.tune.study import Study, StudyError, Trial, describe_arguments, expand_trials
from deeplearning_tutorial.tune.worker import run_trial

DASHBOARD_ADDRESS = "127.0.0.1:8787"
"""Where a local cluster's dashboard listens: this machine only (another host cannot see it)."""

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


def local_cluster(workers: int, threads_per_trial: int = 1, *, retries: int = 1, dashboard: bool = True,
                  dashboard_address: str = DASHBOARD_ADDRESS):
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
    dashboard_address : str
        ``host:port`` it listens on: by default 127.0.0.1, this machine
        only; ``0.0.0.0:8787`` would open it (and the addresses of the
        scheduler and workers it shows) to the whole network.  When the port
        is taken, Dask picks a free one (see :func:`dashboard_link`).

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
                            dashboard_address=dashboard_address if dashboard else None)


def connect(address: str):
    """A ``distributed.Client`` of the running cluster whose scheduler is at ``address``.

    A TCP address is tried first with a plain connection, so that a wrong
    one fails at once (Dask itself would retry for half a minute).

    Raises
    ------
    ValueError
        When nothing answers at ``address``, or it is not an address.
    """
    import socket

    from distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    def unreachable(reason: str) -> ValueError:
        return ValueError(f"cannot reach the Dask scheduler at {address} ({reason}); start it "
                          f"(`dask scheduler`) or check the address, e.g. tcp://host:8786")
    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":
            socket.create_connection(parse_host_port(location, default_port=8786), timeout=5).close()
        return Client(address, timeout=30)
    except OSError as exc:  # refused, no route, timed out (TimeoutError is an OSError)
        raise unreachable(_reason(exc)) from None
    except ValueError as exc:
        raise unreachable(f"not an address: {exc}") from None


def dashboard_link(client) -> str | None:
    """A link to the dashboard at the address its scheduler's server really listens on.

    Dask's own ``Client.dashboard_link`` names the scheduler's host, which
    is not where the dashboard listens when the two differ, nor its port
    when the one asked for was taken.

    Returns
    -------
    str or None
        ``http://host:port/status``, or None when the scheduler serves no dashboard.
    """
    def bound_address(dask_scheduler):
        server = dask_scheduler.services.get("dashboard")
        return None if server is None else (server.address, server.port)

    found = client.run_on_scheduler(bound_address)
    if found is None:
        return None
    host, port = found
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/status"


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
# what a record of each status holds beyond its id, status and searched arguments
RECORD_FIELDS = {"done": ("validation", "test", "best_iteration", "epochs", "seconds", "history"),
                 "failed": ("reason",), "lost": ("reason",)}
# the numbers of a record that may be infinite or NaN: such values are written as these strings
NUMBER_FIELDS = ("validation", "test", "chance", "seconds", "train_seconds")
NON_FINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


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
    an id is its current record.  The file is strict JSON: an infinite or
    NaN number is written as the string ``"Infinity"``, ``"-Infinity"`` or
    ``"NaN"`` and read back as that number.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path.exists() else []

    def records(self) -> dict[str, dict]:
        """The current record of each trial id: its last line.

        Raises
        ------
        ValueError
            When a line is not strict JSON or not a trial record, naming the line.
        """
        latest = {}
        for number, line in enumerate(self.lines, 1):
            fail = functools.partial(self._line_error, number)
            try:
                record = json.loads(line, parse_constant=_not_json)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
                reason = "nested too deeply" if isinstance(exc, RecursionError) else exc
                raise fail(f"is not JSON ({reason})") from None
            if not isinstance(record, dict):
                raise fail("is not a trial record (not a JSON object)")
            if record.get("status") not in RECORD_FIELDS:
                raise fail(f"is not a trial record (its status {record.get('status')!r} is none of "
                           f"{', '.join(RECORD_FIELDS)})")
            for field in ("id", "searched", *RECORD_FIELDS[record["status"]]):
                if field not in record:
                    raise fail(f"is not a trial record (it has no {field!r})")
            latest[str(record["id"])] = _numbers_read_back(record)
        return latest

    def _line_error(self, number: int, problem: str) -> ValueError:
        return ValueError(f"{self.path}, line {number} {problem}; fix or remove that line")

    def append(self, record: dict) -> None:
        """Add ``record`` as a new line and write the whole file again, atomically."""
        self.lines.append(json.dumps(_finite(record), sort_keys=False, allow_nan=False))
        with atomic_write(self.path, "w") as handle:
            handle.write("\n".join(self.lines) + "\n")


def _not_json(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def _finite(value: Any) -> Any:
    """``value`` with every infinite or NaN float replaced by its name in :data:`NON_FINITE`."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _numbers_read_back(record: dict) -> dict:
    """``record`` with the names of :data:`NON_FINITE` in its number fields made numbers again."""
    def number(value: Any) -> Any:
        return NON_FINITE.get(value, value) if isinstance(value, str) else value

    record = {key: number(value) if key in NUMBER_FIELDS else value for key, value in record.items()}
    if isinstance(record.get("history"), list):
        record["history"] = [{key: number(value) if key in NUMBER_FIELDS else value for key, value in entry.items()}
                             if isinstance(entry, dict) else entry for entry in record["history"]]
    return record


class StudyFolder:
    """``OUT/<name>/``, where a study's results go, held by one process while it is open.

    Opening it (``with StudyFolder(...) as folder``), before any cluster
    starts, checks everything the study will write: the folder and its
    ``logs/`` can be created, a file can be written there (a few kilobytes,
    synced to disk, then removed: a full disk is found now, not after the
    first trial), no other process holds it (a
    :class:`~deeplearning_tutorial.files.RunLock` on ``trials.jsonl``,
    so that two studies never mix), and an existing ``trials.jsonl`` is
    continued only when ``resume`` is true and every line of it is a trial
    record.

    Attributes
    ----------
    path : Path
        ``OUT/<name>``.
    trials : TrialsFile
    records : dict
        The current record of each trial id already in ``trials.jsonl``.

    Raises
    ------
    StudyError
        When the folder cannot be created or written in.
    RunFileError
        When another process holds it.
    FileExistsError
        When it has trials and ``resume`` is false.
    ValueError
        When ``trials.jsonl`` cannot be read or a line of it is not a trial record.
    """

    def __init__(self, study: Study, out_dir: Path | str, *, resume: bool) -> None:
        self.path = Path(out_dir) / study.name
        self.resume = resume
        self.trials: TrialsFile  # read once the folder is held
        self.records: dict[str, dict] = {}
        self._lock = RunLock([self.path / "trials.jsonl"], elsewhere="give this study another --out")

    def __enter__(self) -> StudyFolder:
        logs = self.path / "logs"
        try:
            logs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"cannot create {logs}: {_reason(exc)}; give --out a folder you can write to") from None
        _check_writable(self.path)
        self._lock.acquire()
        try:
            path = self.path / "trials.jsonl"
            try:
                self.trials = TrialsFile(path)
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {_reason(exc)}") from None
            except UnicodeDecodeError:
                raise ValueError(f"{path} is not UTF-8 text, so not a trials file; move it away") from None
            if self.trials.lines and not self.resume:
                raise FileExistsError(f"{self.trials.path} already has {len(self.trials.lines)} trial(s); "
                                      f"continue it with --resume, or choose another --out or study name")
            self.records = self.trials.records()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._lock.release()

    def running_log(self, trial: Trial) -> Path:
        """Where a running trial's output goes live."""
        return self.path / "logs" / f"{trial.id}.running.log"


def _reason(exc: OSError) -> str:
    """An OSError's reason in the words of a sentence ("permission denied")."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return reason[:1].lower() + reason[1:]


def _check_writable(folder: Path) -> None:
    """Write a few kilobytes in ``folder`` and sync them (so that a full disk shows), then remove them."""
    try:
        fd, name = create_temporary_beside(folder / "trials.jsonl")
        try:
            os.write(fd, b"\n" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        raise StudyError(f"cannot write in {folder}: {_reason(exc)}; free some space or give --out a folder "
                         f"you can write to") from None


def run_study(study: Study, client, out_dir: Path | str, *, threads_per_trial: int = 1,
              resume: bool = False, progress: bool | None = None) -> StudyOutcome:
    """Run a study's trials on a Dask cluster; record each as it finishes.

    Parameters
    ----------
    study : Study
    client : distributed.Client
        Connected to the cluster the trials run on.
    out_dir : Path or str
        The study's results go to ``out_dir/<name>/`` (see :class:`StudyFolder`).
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
    StudyError, RunFileError, FileExistsError, ValueError
        As :class:`StudyFolder` does, before any trial is submitted.
    """
    with StudyFolder(study, out_dir, resume=resume) as folder:
        return run_trials(study, client, folder, threads_per_trial=threads_per_trial, progress=progress)


def run_trials(study: Study, client, folder: StudyFolder, *, threads_per_trial: int = 1,
               progress: bool | None = None) -> StudyOutcome:
    """:func:`run_study` in a study folder already open (and held)."""
    from distributed import wait

    records = dict(folder.records)
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
                        "threads": threads_per_trial, "log_path": str(folder.running_log(trial).resolve())}
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
                folder.trials.append(record)
                records[trial.id] = record
                bar.close()
                print(line, flush=True)
                bar.finished(record)
    except KeyboardInterrupt:
        interrupted = True
        client.cancel(list(pending))
        for future in pending:  # their output is lost with them: no log is left half-written
            folder.running_log(futures[future]).unlink(missing_ok=True)
    finally:
        bar.close()
    return StudyOutcome({t.id: records[t.id] for t in trials if t.id in records},
                        ran=bar.new, interrupted=interrupted)


def _record(trial: Trial, future, folder: StudyFolder) -> tuple[dict, str]:
    """A trial's line of ``trials.jsonl`` (its log written beside it) and a line to print."""
    record = {"id": trial.id, "params": trial.arguments, "searched": trial.searched}
    try:
        result = future.result()
    except Exception as exc:  # the worker died (KilledWorker) or the task could not run there
        record.update(status="lost", reason=f"{type(exc).__name__}: {exc}")
    else:
        log_path = folder.path / "logs" / f"{trial.id}.log"
        with atomic_write(log_path, "w") as handle:
            handle.write(result.pop("log"))
        folder.running_log(trial).unlink(missing_ok=True)
        record.update(status=result.pop("status"), **result, log=str(log_path.relative_to(folder.path)))
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
