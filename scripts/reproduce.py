"""Run the tutorials to completion and compare with the published table.

    python scripts/reproduce.py                                  # all four, default hyper-parameters
    python scripts/reproduce.py --only logistic_sgd --out results
    python scripts/reproduce.py --only convolutional_mlp --resume   # continue an interrupted run
    python scripts/reproduce.py --only mlp,convolutional_mlp --seeds 5 --resume   # 4 more seeds each

Each program runs as the tutorial does (``python -m deeplearning_tutorial.<program>``,
defaults untouched) in ``OUT/<program>/``; its full stdout is kept in
``OUT/logs/<program>.log``.  The printed lines are parsed into
``OUT/<program>.json`` (best validation, test score, best iteration, epochs,
wall time, seconds per epoch, floatX, mode, versions, CPU, threads, git
commit) and ``OUT/RESULTS.md`` compares them with the published figures.
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
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROGRAMS = ["logistic_sgd", "mlp", "convolutional_mlp", "logistic_cg", "lenet5"]
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
    # nothing published: the original code's run on Theano 1.0.5, float64, on this machine
    "logistic_cg": dict(validation=7.3125, test=7.416667, when="50 iterations, unpublished: the original on Theano 1.0.5",
                        minutes=22.0 / 60, hardware="this machine, Theano 1.0.5, float64, optimisation only"),
    # LeCun et al. (1998), LeNet-5 without distortions: a test error only (no validation split, no time)
    "lenet5": dict(validation=None, test=0.95, when="LeCun et al. 1998, no distortions", minutes=None,
                   hardware="not published"),
}
CHECKPOINT = {"mlp": "mlp.ckpt", "convolutional_mlp": "convolutional_mlp.ckpt", "lenet5": "lenet5.ckpt"}
BEST_MODEL = {"convolutional_mlp": "best_model_lenet.pkl", "lenet5": "best_model_lenet5.pkl"}
# The tutorials' RandomState seeds: the first of --seeds N, then seed + 1, ...
ORIGINAL_SEED = {"mlp": 1234, "convolutional_mlp": 23455, "lenet5": 23455}

VALIDATION = re.compile(r"^epoch (\d+), minibatch (\d+)/(\d+), validation error (\d+\.\d+) %$")
TEST = re.compile(r"^     epoch (\d+), minibatch (\d+)/(\d+), test error of best model (\d+\.\d+) %$")
FINAL_LOGISTIC = re.compile(r"^Optimization complete with best validation score of (\d+\.\d+) %, ?"
                            r"with test performance (\d+\.\d+) %$")  # logistic_cg has the space
CG_VALIDATION = re.compile(r"^validation error (\d+\.\d+) %$")  # one per CG iteration
EPOCHS_RUN = re.compile(r"^The code run for (\d+) epochs")
FINAL_ITER = re.compile(r"Best validation score of (\d+\.\d+) % obtained at iteration (\d+), "
                        r"with test performance (\d+\.\d+) %$")


def parse_log(text: str) -> dict:
    """The learning curves and the final result from a tutorial's stdout."""
    curve, tests, final, epochs_run = [], [], {}, None
    for line in text.splitlines():
        if m := EPOCHS_RUN.match(line):
            epochs_run = int(m[1])
        if m := VALIDATION.match(line):
            epoch, minibatch, n_batches, error = int(m[1]), int(m[2]), int(m[3]), float(m[4])
            curve.append(((epoch - 1) * n_batches + minibatch, epoch, error))
        elif m := CG_VALIDATION.match(line):
            curve.append((len(curve) + 1, len(curve) + 1, float(m[1])))  # iteration = "epoch"
        elif m := TEST.match(line):
            epoch, minibatch, n_batches, error = int(m[1]), int(m[2]), int(m[3]), float(m[4])
            tests.append(((epoch - 1) * n_batches + minibatch, error))
        elif m := FINAL_LOGISTIC.match(line):
            final = dict(validation=float(m[1]), test=float(m[2]))
        elif m := FINAL_ITER.search(line):
            final = dict(validation=float(m[1]), best_iteration=int(m[2]), test=float(m[3]))
    if not final:
        raise ValueError("the log has no final 'Optimization complete' line: the run did not finish")
    if "best_iteration" not in final:  # logistic_sgd does not print it: the best validation line
        final["best_iteration"] = min(curve, key=lambda c: (c[2], c[0]))[0] if curve else None
    # epochs: as logistic_sgd prints it, else the last epoch that reached a validation
    return dict(final, epochs=epochs_run or (curve[-1][1] if curve else 0),
                validation_curve=[(i, e) for i, _, e in curve], test_curve=tests)


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
    """Run one tutorial as a command (``seed``: a seed other than the original) and parse its log."""
    name = program if seed is None else f"{program}_seed{seed}"
    workdir = out / program if seed is None else out / program / f"seed{seed}"
    logs = out / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    command = [sys.executable, "-m", f"deeplearning_tutorial.{program}", *program_args]
    if seed is not None:
        command += ["--seed", str(seed)]
    if resume and program in CHECKPOINT and (workdir / CHECKPOINT[program]).exists():
        command.append("--resume")
    else:
        resume = False
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTENSOR_FLAGS": f"floatX={floatX},mode={mode}"}
    print(f"running {' '.join(command[1:])} ({floatX}, {mode}); log: {log_path}", flush=True)
    earlier = out / f"{name}.partial.json"  # wall time of the interrupted part(s)
    wall_before = json.loads(earlier.read_text())["wall_seconds"] if resume and earlier.exists() else 0.0
    started = time.perf_counter()
    # Ctrl-C reaches the tutorial, which stops cleanly and checkpoints; this process waits for it
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with open(log_path, "a" if resume else "w") as log:
            result = subprocess.run(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.PIPE,
                                    text=True)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    wall = wall_before + time.perf_counter() - started
    if result.returncode == 130:  # logistic_cg's exit status after Ctrl-C
        raise KeyboardInterrupt(f"{name} was interrupted; run it again")
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stderr}")
    if "Stopped by Ctrl-C" in result.stderr:
        earlier.write_text(json.dumps({"wall_seconds": wall}))
        raise KeyboardInterrupt(f"{name} was interrupted; continue with --resume")
    earlier.unlink(missing_ok=True)
    parsed = parse_log(log_path.read_text())
    return dict(program=program, seed=seed if seed is not None else ORIGINAL_SEED.get(program),
                arguments=list(program_args), floatX=floatX, mode=mode, **parsed, wall_seconds=wall,
                seconds_per_epoch=wall / max(parsed["epochs"], 1), **machine())


def finished_run(path: Path, floatX: str, mode: str, program_args: tuple[str, ...]) -> dict | None:
    """The saved result at ``path`` if it is a finished run of the same configuration."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    same = (saved.get("floatX"), saved.get("mode"), saved.get("arguments", [])) == (floatX, mode,
                                                                                      list(program_args))
    return saved if same else None


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically: an interrupted write leaves the previous file."""
    from deeplearning_tutorial.datasets import atomic_write

    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")


def seed_summary(runs: list[dict]) -> dict:
    """Mean and sample standard deviation of the errors over runs with different seeds."""
    summary = {"n": len(runs), "seeds": [r["seed"] for r in runs]}
    for key in ("validation", "test"):
        values = [r[key] for r in runs]
        summary[key] = values
        summary[f"{key}_mean"] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


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
        ratio = None if p["minutes"] is None else p["minutes"] / minutes
        lines.append(
            f"| {program} | {published(p['validation'], '.6f', ' %')} / {p['test']:.6f} % ({p['when']}) "
            f"| {r['validation']:.6f} % / {r['test']:.6f} % (iteration {r['best_iteration']}, {r['epochs']} epochs) "
            f"| {published(valid_difference, '+.6f')} / {r['test'] - p['test']:+.6f} "
            f"| {published(p['minutes'], '.2f', ' min')}, {p['hardware']} | {minutes:.2f} min ({r['floatX']}, {r['mode']}) "
            f"| {published(ratio, '.1f', 'x faster')} |"
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
    any_result = next(iter(results.values()))
    lines += ["", f"Our runs: {any_result['cpu']}, {any_result['threads']} cores. Times are whole runs "
                  "(start-up, compile and training).", ""]
    for program, r in results.items():
        lines.append(f"- {program}: PyTensor {r['pytensor']}, NumPy {r['numpy']}, Numba {r['numba']}, "
                     f"Python {r['python']}, BLAS threads {r.get('blas_threads', 'default')}, "
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
    figure.savefig(out / f"{program}_curves.png", dpi=100)
    plt.close(figure)

    import pickle

    from deeplearning_tutorial.utils import tile_raster_images

    workdir = out / program
    if program == "logistic_sgd" and (workdir / "best_model.pkl").exists():
        with open(workdir / "best_model.pkl", "rb") as f:
            weights = pickle.load(f).W.get_value().T  # (10, 784): one image per class
        image = tile_raster_images(weights, (28, 28), (1, 10), (2, 2)).repeat(3, axis=0).repeat(3, axis=1)
    elif program in BEST_MODEL and (workdir / BEST_MODEL[program]).exists():
        with open(workdir / BEST_MODEL[program], "rb") as f:
            filters = pickle.load(f).layers[0].W.get_value()  # (20, 1, 5, 5); LeNet-5: (6, 5, 5)
        image = tile_raster_images(filters.reshape(len(filters), -1), (5, 5), (2, len(filters) // 2), (1, 1))
        image = image.repeat(8, axis=0).repeat(8, axis=1)
    else:
        return
    plt.imsave(out / f"{program}_weights.png", image, cmap="gray", vmin=0, vmax=255)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PROGRAMS), help="comma-separated programs to run")
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
    if unknown := set(programs) - set(PROGRAMS):
        parser.error(f"unknown programs {sorted(unknown)}; choose from {PROGRAMS}")
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    program_args = tuple(shlex.split(args.program_args))

    for program in programs:
        floatX = args.floatX or PUBLISHED_FLOATX[program]
        seeds = [None]
        if program in ORIGINAL_SEED:
            seeds += [ORIGINAL_SEED[program] + k for k in range(1, args.seeds)]
        runs = []
        for seed in seeds:
            path = args.out / (f"{program}.json" if seed is None else f"seeds/{program}_seed{seed}.json")
            run = finished_run(path, floatX, args.mode, program_args) if args.resume else None
            if run is None:
                try:
                    run = run_program(program, args.out, floatX, args.mode, args.resume, seed, program_args)
                except KeyboardInterrupt as stop:
                    print(stop, file=sys.stderr)
                    return 130
                save_json(path, run)  # at once: a later interrupted seed must not lose it
            runs.append(run)
        result = runs[0]
        if len(runs) > 1:
            result["seed_summary"] = seed_summary(runs)
            save_json(args.out / f"{program}.json", result)
        plot(program, result, args.out)
    results = {p: json.loads((args.out / f"{p}.json").read_text())
               for p in PROGRAMS if (args.out / f"{p}.json").exists()}
    table = results_table(results)
    (args.out / "RESULTS.md").write_text("# Published vs reproduced\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
