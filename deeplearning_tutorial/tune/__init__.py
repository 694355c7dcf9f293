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

The pieces, in the order a study uses them, one module each: ``study``, the
study file (:func:`load_study`, :func:`expand_trials`), whose ``program`` is
a name of :data:`deeplearning_tutorial.programs.PROGRAMS`; ``worker``, a trial in a worker process
(:func:`run_trial`, and the workers' ``--preload`` set-up); ``cluster``, the
cluster and the client side (:func:`local_cluster`, :func:`run_study`); and
``report`` (:func:`write_report`).  This module re-exports them and holds the
command line: ``python scripts/tune.py STUDY.toml`` runs it all.
"""


from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from deeplearning_tutorial.tune.cluster import (
    DASHBOARD_ADDRESS,
    StudyFolder,
    StudyOutcome,
    TrialsFile,
    connect,
    dashboard_link,
    local_cluster,
    run_study,
    run_trials,
    worker_environment,
)
from deeplearning_tutorial.tune.report import summary_markdown, write_report
from deeplearning_tutorial.tune.study import (
    Study,
    StudyError,
    Trial,
    expand_trials,
    load_study,
    parse_study,
)
from deeplearning_tutorial.tune.worker import dask_setup, run_trial, worker_threads

__all__ = ["DASHBOARD_ADDRESS", "Study", "StudyError", "StudyFolder", "StudyOutcome", "Trial", "TrialsFile", "connect",
           "dashboard_link", "dask_setup", "expand_trials", "load_study", "local_cluster", "main", "parse_args",
           "parse_study", "run_study", "run_trial", "run_trials", "summary_markdown", "worker_environment",
           "worker_threads", "write_report"]


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
    parser.add_argument("--workers", type=_integer_at_least(1), default=None,
                        help="worker processes of the local cluster (default: cores // threads per trial)")
    parser.add_argument("--threads-per-trial", type=_integer_at_least(1), default=1,
                        help="Numba/OpenMP/BLAS threads of each trial")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run on an existing Dask cluster, e.g. tcp://host:8786, instead of a local one")
    parser.add_argument("--dashboard-address", default=None, metavar="HOST:PORT",
                        help=f"local cluster: where its dashboard listens (default {DASHBOARD_ADDRESS}: this "
                             f"machine only; 0.0.0.0:8787 opens it to every host that can reach this one)")
    parser.add_argument("--out", type=Path, default=Path("results/tuning"), help="results go to OUT/<name>/")
    parser.add_argument("--resume", action="store_true",
                        help="continue the study: run only the trials not done or failed yet")
    parser.add_argument("--retries", type=_integer_at_least(0), default=1,
                        help="local cluster: runs again of a trial whose worker process died, before it is lost")
    args = parser.parse_args(argv)
    if args.scheduler and args.dashboard_address is not None:
        parser.error("--dashboard-address goes with a local cluster; an existing cluster's scheduler has its own")
    return args


def _integer_at_least(low: int):
    """An argparse type: an integer >= ``low``, or a one-line error saying so."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text}")
        return value
    return parse


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (``kill``, a batch system's time limit) stops a study as Ctrl-C does, as it stops the programs."""
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """``scripts/tune.py``: load the study, hold its folder, start or join a cluster, run, report.

    Every error a user can cause (the study file, the output folder, another
    process on the same study, an unreachable scheduler, a full disk) ends
    in one line on stderr and a non-zero status, before any cluster starts
    where it can be found then.
    """
    args = parse_args(argv)
    try:
        study = load_study(args.study)
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if study.floatX is None:
        import pytensor

        study.floatX = pytensor.config.floatX
    trials_path = args.out / study.name / "trials.jsonl"
    with _sigterm_as_ctrl_c():
        try:
            with StudyFolder(study, args.out, resume=args.resume) as folder:
                outcome = _run(study, folder, args)
                written = write_report(study, outcome.records, args.out)
        except (FileExistsError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot write {exc.filename or args.out}: {exc.strerror or exc}; the trials finished "
                  f"so far are in {trials_path} (continue with --resume)", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"Interrupted; the trials finished so far are in {trials_path}", file=sys.stderr)
            return 130
    for path in written:
        print(f"wrote {path}")
    if outcome.interrupted:
        print(f"Interrupted: the finished trials are in {trials_path}; continue with --resume", file=sys.stderr)
        return 130
    return 0


def _run(study: Study, folder: StudyFolder, args: argparse.Namespace) -> StudyOutcome:
    """Start or join the cluster of ``args`` and run the study's trials in ``folder``."""
    from distributed import Client

    cluster = None
    try:
        if args.scheduler:
            client = connect(args.scheduler)
        else:
            workers = args.workers or max(1, (os.cpu_count() or 1) // args.threads_per_trial)
            cluster = local_cluster(workers, args.threads_per_trial, retries=args.retries,
                                    dashboard_address=args.dashboard_address or DASHBOARD_ADDRESS)
            client = Client(cluster)
        with client:
            n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
            print(f"Dask cluster {client.scheduler.address}: {n_workers} workers; "
                  f"dashboard {dashboard_link(client) or 'none'}", flush=True)
            too_few = {worker: threads for worker, threads in client.run(worker_threads).items()
                       if threads < args.threads_per_trial}
            if too_few:
                raise ValueError(f"--threads-per-trial {args.threads_per_trial} is more than the Numba threads "
                                 f"of workers {too_few}; start them with NUMBA_NUM_THREADS={args.threads_per_trial}")
            return run_trials(study, client, folder, threads_per_trial=args.threads_per_trial)
    finally:
        if cluster is not None:
            cluster.close()
