"""Run the tutorials to completion and compare with the published table.

    python scripts/reproduce.py                                  # all four, default hyper-parameters
    python scripts/reproduce.py --only logistic_sgd --out results
    python scripts/reproduce.py --only convolutional_mlp --resume   # continue an interrupted run
    python scripts/reproduce.py --only mlp,convolutional_mlp --seeds 5 --resume   # 4 more seeds each

Each program runs as the tutorial does (``python -m deeplearning_tutorial.<program>``,
defaults untouched) in ``OUT/<program>/``; its full stdout is kept in
``OUT/logs/<program>.log``.  The learning curve and the result its loop
records (``--history-file``) go into ``OUT/<program>.json`` (best validation,
test score, best iteration, epochs, wall time, seconds per epoch, floatX,
mode, versions, CPU, threads, git commit) and ``OUT/RESULTS.md`` compares them
with the published figures.
With matplotlib installed (the ``plot`` extra) it also draws the learning
curves and the learned weights (logistic regression's, LeNet's first layer).

``--seeds N`` repeats the MLP and LeNet runs with N seeds (the original one
first, then original + 1, + 2, ...), each in ``OUT/<program>/seed<S>/`` with
its result in ``OUT/seeds/``, and reports the mean and standard deviation of
their errors: the size of the noise a difference from the published figure
should be compared with.  ``--resume`` continues interrupted runs and keeps
finished ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deeplearning_tutorial.programs import PROGRAMS  # noqa: E402

# floatX of the published runs: Theano's default float64, float32 for LeNet's (and LeNet-5's, as the issue asks)
PUBLISHED_FLOATX = {"logistic_sgd": "float64", "mlp": "float64", "convolutional_mlp": "float32",
                    "logistic_cg": "float64", "lenet5": "float32"}
PUBLISHED = {
    "logistic_sgd": dict(validation=7.5, test=7.489583, when="74 epochs",
                         minutes=74 / 1.936983 / 60, hardware="Core 2 Duo E8400 3.0 GHz"),
    "mlp": dict(validation=1.69, test=1.65, when="iteration 2070000 (828 epochs)",
                minutes=97.34, hardware="Core i7-2600K 3.4 GHz"),
    "convolutional_mlp": dict(validation=0.91, test=0.92, when="iteration 17800",
                              minutes=380.28, hardware="Core i7-2600K 3.4 GHz, float32"),
    # nothing published: the original code's run on Theano 1.0.5, float64, on an earlier host of
    # this type; its time is the optimisation's alone, so no ratio to a whole run's
    "logistic_cg": dict(validation=7.3125, test=7.416667,
                        when="50 iterations, unpublished: the original on Theano 1.0.5",
                        minutes=22.0 / 60, whole_run=False,
                        hardware="an earlier host of this type, Theano 1.0.5, float64, optimisation only"),
    # LeCun et al. (1998), LeNet-5 without distortions: a test error only (no validation split, no time)
    "lenet5": dict(validation=None, test=0.95, when="LeCun et al. 1998, no distortions", minutes=None,
                   hardware="not published"),
}
# the options this script passes itself (as the programs' parameters they set)
RESERVED = {"resume": "--resume", "discard_checkpoint": "--discard-checkpoint", "history_file": "--history-file",
            "seed": "--seed"}


def check_program_args(program: str, program_args: tuple[str, ...]) -> str | None:
    """Why ``program_args`` cannot be given to ``program``, or None when they can.

    They are parsed as the program parses them (abbreviations such as
    ``--se`` for ``--seed`` included), so that no reserved option slips through.
    """
    from deeplearning_tutorial.cli import changed_options

    try:
        given = changed_options(PROGRAMS[program], program_args)
    except ValueError as exc:
        return str(exc)
    if reserved := [RESERVED[name] for name in given if name in RESERVED]:
        return f"reproduce.py sets {', '.join(reserved)} itself (use its own --resume and --seeds)"
    return None


def result_of(record: dict) -> dict:
    """The learning curves and the final result from a tutorial's ``--history-file`` record
    (:func:`deeplearning_tutorial.training.run_record`: per cent, iterations counted from 1)."""
    history = record["history"]
    return dict(
        validation=record["validation"],
        test=record["test"],
        best_iteration=record["best_iteration"],
        epochs=record["epochs"],
        validation_curve=[(h["iteration"], h["validation"]) for h in history],
        test_curve=[(h["iteration"], h["test"]) for h in history if h["test"] is not None],
    )


def machine() -> dict:
    import numba
    import numpy
    import pytensor

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    return dict(pytensor=pytensor.__version__, numpy=numpy.__version__, numba=numba.__version__,
                python=platform.python_version(), cpu=cpu, threads=os.cpu_count(),
                blas_threads=os.environ.get("OPENBLAS_NUM_THREADS", "default"), git_commit=commit)


def run_program(program: str, out: Path, floatX: str, mode: str, resume: bool, seed: int | None = None,
                program_args: tuple[str, ...] = ()) -> dict:
    """Run one tutorial as a command (``seed``: a seed other than the original); its result and curves."""
    name = program if seed is None else f"{program}_seed{seed}"
    workdir = out / program if seed is None else out / program / f"seed{seed}"
    logs = out / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    history_path = workdir / "history.json"
    command = [sys.executable, "-m", f"deeplearning_tutorial.{program}", *program_args,
               "--history-file", history_path.name]
    if seed is not None:
        command += ["--seed", str(seed)]
    earlier = out / f"{name}.partial.json"  # this run's arguments, and the wall time of its interrupted parts
    record = dict(arguments=list(program_args), floatX=floatX, mode=mode)
    earlier_record = json.loads(earlier.read_text()) if earlier.exists() else {}
    resume = resume and checkpoint_left(workdir, program, record, earlier_record, command)
    if not resume:
        earlier_record = {}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTENSOR_FLAGS": f"floatX={floatX},mode={mode}"}
    wall_before = earlier_record.get("wall_seconds", 0.0)
    write_text(earlier, json.dumps({**record, "wall_seconds": wall_before}))
    history_path.unlink(missing_ok=True)
    environment = machine()  # before the run: the commit is the code that runs, even if HEAD moves meanwhile
    with open(log_path, "a" if resume else "w") as log, signals_for_the_child() as child:
        # from here on a Ctrl-C is the tutorial's: say so only now
        print(f"running {' '.join(command[1:])} ({floatX}, {mode}); log: {log_path}", flush=True)
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.PIPE,
                                   text=True)
        child.started(process)
        _, stderr = process.communicate()
    wall = wall_before + time.perf_counter() - started
    if process.returncode in INTERRUPTED:
        write_text(earlier, json.dumps({**record, "wall_seconds": wall}))
        raise KeyboardInterrupt(f"{name} was interrupted; continue with --resume")
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{stderr}")
    earlier.unlink(missing_ok=True)
    result = result_of(json.loads(history_path.read_text()))
    return dict(program=program, seed=seed if seed is not None else PROGRAMS[program].original_seed,
                arguments=list(program_args), floatX=floatX, mode=mode, **result, wall_seconds=wall,
                seconds_per_epoch=wall / max(result["epochs"], 1), **environment)


def checkpoint_left(workdir: Path, program: str, record: dict, earlier_record: dict,
                     command: list[str]) -> bool:
    """With --resume: continue the checkpoint in ``workdir`` if this configuration left it.

    Adds ``--resume`` to ``command`` and returns True when it did; a
    checkpoint of other arguments (or one that is not a checkpoint) is
    discarded, with a note, since it can never be continued by this run.
    """
    from deeplearning_tutorial.checkpoints import RunFileError, read_archive

    checkpoint_file = PROGRAMS[program].checkpoint_file
    if checkpoint_file is None or not (workdir / checkpoint_file).exists():
        return False
    path = workdir / checkpoint_file
    same = {key: earlier_record.get(key) for key in record} == record
    try:
        read_archive(path, "checkpoint", arrays=False)
    except RunFileError:
        same = False
    if same:
        command.append("--resume")
        return True
    print(f"{path} was left by a run of other arguments than {record}: starting over", file=sys.stderr)
    command.append("--discard-checkpoint")
    return False


def refuse_interrupted_checkpoint(workdir: Path, program: str) -> None:
    """Without --resume: stop, before running anything, at a checkpoint of an interrupted run."""
    from deeplearning_tutorial.checkpoints import RunFileError, read_archive

    checkpoint_file = PROGRAMS[program].checkpoint_file
    if checkpoint_file is None or not (workdir / checkpoint_file).exists():
        return
    path = workdir / checkpoint_file
    try:
        finished = read_archive(path, "checkpoint", arrays=False)[0].get("finished")
    except RunFileError:
        finished = False
    if not finished:
        raise RuntimeError(f"{path} holds an interrupted run: continue it with --resume, "
                           f"or delete it to start over")


# a tutorial stopped by Ctrl-C or SIGTERM exits 128 + the signal (or dies of it before its handler is set)
INTERRUPTED = {128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}


class signals_for_the_child:
    """While a tutorial runs: Ctrl-C is left to it, SIGTERM is passed on to it.

    Ctrl-C on a terminal reaches the whole process group, so the tutorial gets
    it and stops cleanly; this process only waits.  Its handler is a function,
    not SIG_IGN, because an ignored signal would be inherited by the child and
    lost there until the tutorial sets its own handler.  A signal that comes
    before the child is started is kept and sent to it once it is.
    """

    def __enter__(self):
        self.process = None
        self.pending: list[int] = []  # signals that came before the child was started
        self._previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._keep_for_the_child),
                          signal.SIGTERM: signal.signal(signal.SIGTERM, self._pass_on)}
        return self

    def started(self, process) -> None:
        """The child is running: it gets from now on, and the signals that came before it existed."""
        self.process = process
        for signum in self.pending:
            process.send_signal(signum)

    def _keep_for_the_child(self, signum, frame) -> None:
        if self.process is None:  # once it runs, a terminal's Ctrl-C reaches the child itself
            self.pending.append(signum)

    def _pass_on(self, signum, frame) -> None:
        if self.process is None:
            self.pending.append(signum)
        else:
            self.process.send_signal(signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def finished_run(path: Path, floatX: str, mode: str, program_args: tuple[str, ...]) -> dict | None:
    """The saved result at ``path`` if it is a finished run of the same configuration."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    same = (saved.get("floatX"), saved.get("mode"), saved.get("arguments", [])) == (floatX, mode,
                                                                                      list(program_args))
    return saved if same else None


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: an interrupted write leaves the previous file."""
    from deeplearning_tutorial.files import atomic_write

    with atomic_write(path, "w") as f:
        f.write(text)


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as JSON, atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def seed_summary(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of the errors over runs with different seeds."""
    summary = {"n": len(runs), "seeds": [r["seed"] for r in runs]}
    for key in ("validation", "test"):
        values = [r[key] for r in runs]
        summary[key] = values
        summary[f"{key}_mean"] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def time_ratio(published: dict, our_minutes: float) -> str:
    """How much faster (or slower) our whole run was than the published one; "-" where the
    publication gives no time or the time of something else than a whole run."""
    if published["minutes"] is None or not published.get("whole_run", True):
        return "-"
    ratio = published["minutes"] / our_minutes
    return f"{ratio:.1f}x faster" if ratio >= 1 else f"{1 / ratio:.1f}x slower"


def results_table(results: dict[str, dict]) -> str:
    lines = [
        "| program | published valid / test | reproduced valid / test | difference (points) | "
        "published time, hardware | our time | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    def published(value, format_, unit=""):  # a figure the publication does not give is "-"
        return "-" if value is None else format(value, format_) + unit

    for program, r in results.items():
        p = PUBLISHED[program]
        minutes = r["wall_seconds"] / 60
        valid_difference = None if p["validation"] is None else r["validation"] - p["validation"]
        lines.append(
            f"| {program} | {published(p['validation'], '.6f', ' %')} / {p['test']:.6f} % ({p['when']}) "
            f"| {r['validation']:.6f} % / {r['test']:.6f} % (iteration {r['best_iteration']}, {r['epochs']} epochs) "
            f"| {published(valid_difference, '+.6f')} / {r['test'] - p['test']:+.6f} "
            f"| {published(p['minutes'], '.2f', ' min')}, {p['hardware']} "
            f"| {minutes:.2f} min ({r['floatX']}, {r['mode']}) "
            f"| {time_ratio(p, minutes)} |"
        )
    with_seeds = {program: r["seed_summary"] for program, r in results.items() if r.get("seed_summary")}
    if with_seeds:
        lines += ["", "Seed to seed variation (the original seed and the next ones; sample standard deviation):", "",
                  "| program | runs (seeds) | validation mean ± std | test mean ± std | published test |",
                  "|---|---|---|---|---|"]
        for program, summary in with_seeds.items():
            lines.append(
                f"| {program} | {summary['n']} ({', '.join(map(str, summary['seeds']))}) "
                f"| {summary['validation_mean']:.4f} ± {summary['validation_std']:.4f} % "
                f"| {summary['test_mean']:.4f} ± {summary['test_std']:.4f} % | {PUBLISHED[program]['test']:.2f} % |")
    for program, r in results.items():
        if r.get("arguments"):
            lines += ["", f"{program} ran with `{' '.join(r['arguments'])}`: not the published configuration."]
    lines += ["", "Our runs (times are whole runs: start-up, compile and training):", ""]
    for program, r in results.items():
        lines.append(f"- {program}: {r['cpu']}, {r['threads']} cores; PyTensor {r['pytensor']}, NumPy {r['numpy']}, "
                     f"Numba {r['numba']}, Python {r['python']}, BLAS threads {r.get('blas_threads', 'default')}, "
                     f"commit {r['git_commit']}")
    return "\n".join(lines) + "\n"


def plot(program: str, result: dict, out: Path) -> None:
    """Learning curves, and the learned weights as images; skipped without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plot]'): no plots", file=sys.stderr)
        return
    from deeplearning_tutorial.utils import save_figure, save_image, tile_raster_images

    figure, axes = plt.subplots(figsize=(7, 4))
    iterations, errors = zip(*result["validation_curve"])
    axes.plot(iterations, errors, label="validation error")
    if result["test_curve"]:
        test_iterations, test_errors = zip(*result["test_curve"])
        axes.plot(test_iterations, test_errors, "o", markersize=3, label="test error of best model")
    reference = "original on Theano 1.0.5" if program == "logistic_cg" else "published"  # none published
    if PUBLISHED[program]["validation"] is not None:
        axes.axhline(PUBLISHED[program]["validation"], color="grey", linestyle="--", label=f"{reference} validation")
    axes.axhline(PUBLISHED[program]["test"], color="black", linestyle=":", label=f"{reference} test")
    axes.set(xlabel="iteration", ylabel="error (%)", yscale="log", title=program)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, out / f"{program}_curves.png", dpi=100)

    from deeplearning_tutorial.programs import load_best_model

    best_model_file = PROGRAMS[program].best_model_file
    # the weights drawn: logistic regression's (one image per class) and LeNet's first filters
    if program == "mlp" or best_model_file is None or not (out / program / best_model_file).exists():
        return
    classifier = load_best_model(out / program / best_model_file).classifier
    if program == "logistic_sgd":
        weights = classifier.W.get_value().T  # (10, 784): one image per class
        image = tile_raster_images(weights, (28, 28), (1, 10), (2, 2)).repeat(3, axis=0).repeat(3, axis=1)
    else:
        layers = getattr(classifier, "layers", classifier)  # LeNet-5's network, or LeNet's list of layers
        filters = layers[0].W.get_value()  # (20, 1, 5, 5); LeNet-5: (6, 5, 5)
        image = tile_raster_images(filters.reshape(len(filters), -1), (5, 5), (2, len(filters) // 2), (1, 1))
        image = image.repeat(8, axis=0).repeat(8, axis=1)
    save_image(image, out / f"{program}_weights.png", cmap="gray", vmin=0, vmax=255)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PUBLISHED), help="comma-separated programs to run")
    parser.add_argument("--floatX", choices=["float32", "float64"],
                        help="for every program (default: that of the published run)")
    parser.add_argument("--mode", default="NUMBA", help="PyTensor mode (default NUMBA)")
    parser.add_argument("--out", type=Path, default=REPO / "results", help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue interrupted runs from their checkpoints; keep finished ones")
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs of the MLP and LeNet with different seeds, the original first (default 1)")
    parser.add_argument("--program-args", default="",
                        help="extra options for every program, e.g. '--n-epochs 1' for a quick check of the "
                             "set-up (the results are then not the published configuration's)")
    args = parser.parse_args(argv)
    programs = args.only.split(",")
    if unknown := set(programs) - set(PUBLISHED):
        parser.error(f"unknown programs {sorted(unknown)}; choose from {list(PUBLISHED)}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    try:
        program_args = tuple(shlex.split(args.program_args))
    except ValueError as exc:
        parser.error(f"--program-args {args.program_args!r}: {exc}")
    for program in programs:
        if problem := check_program_args(program, program_args):
            parser.error(f"--program-args {args.program_args!r} does not suit {program}: {problem}")

    for program in programs:
        floatX = args.floatX or PUBLISHED_FLOATX[program]
        seeds = [None]
        if (original_seed := PROGRAMS[program].original_seed) is not None:
            seeds += [original_seed + k for k in range(1, args.seeds)]
        runs = []
        for seed in seeds:
            path = args.out / (f"{program}.json" if seed is None else f"seeds/{program}_seed{seed}.json")
            run = finished_run(path, floatX, args.mode, program_args) if args.resume else None
            if run is None:
                workdir = args.out / program if seed is None else args.out / program / f"seed{seed}"
                try:
                    if not args.resume:
                        refuse_interrupted_checkpoint(workdir, program)
                    run = run_program(program, args.out, floatX, args.mode, args.resume, seed, program_args)
                except KeyboardInterrupt as stop:
                    print(stop or f"interrupted before {program} started", file=sys.stderr)
                    return 130
                except RuntimeError as failure:
                    print(f"error: {failure}", file=sys.stderr)
                    return 1
                save_json(path, run)  # at once: a later interrupted seed must not lose it
            runs.append(run)
        result = runs[0]
        if len(runs) > 1:
            result["seed_summary"] = seed_summary(runs)
            save_json(args.out / f"{program}.json", result)
        plot(program, result, args.out)
    results = {p: json.loads((args.out / f"{p}.json").read_text())
               for p in PUBLISHED if (args.out / f"{p}.json").exists()}
    table = results_table(results)
    write_text(args.out / "RESULTS.md", "# Published vs reproduced\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
