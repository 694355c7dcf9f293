"""Run the tutorials to completion and compare with the published table.

    python scripts/reproduce.py                                  # all three, default hyper-parameters
    python scripts/reproduce.py --only logistic_sgd --out results
    python scripts/reproduce.py --only convolutional_mlp --resume   # continue an interrupted run

Each program runs as the tutorial does (``python -m deeplearning_tutorial.<program>``,
defaults untouched) in ``OUT/<program>/``; its full stdout is kept in
``OUT/logs/<program>.log``.  The printed lines are parsed into
``OUT/<program>.json`` (best validation, test score, best iteration, epochs,
wall time, seconds per epoch, floatX, mode, versions, CPU, threads, git
commit) and ``OUT/RESULTS.md`` compares them with the published figures.
With matplotlib installed (the ``plot`` extra) it also draws the learning
curves and the learned weights (logistic regression's, LeNet's first layer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PROGRAMS = ["logistic_sgd", "mlp", "convolutional_mlp"]
# floatX of the published runs: Theano's default float64, float32 for LeNet's
PUBLISHED_FLOATX = {"logistic_sgd": "float64", "mlp": "float64", "convolutional_mlp": "float32"}
PUBLISHED = {
    "logistic_sgd": dict(validation=7.5, test=7.489583, when="74 epochs",
                         minutes=74 / 1.936983 / 60, hardware="Core 2 Duo E8400 3.0 GHz"),
    "mlp": dict(validation=1.69, test=1.65, when="iteration 2070000 (828 epochs)",
                minutes=97.34, hardware="Core i7-2600K 3.4 GHz"),
    "convolutional_mlp": dict(validation=0.91, test=0.92, when="iteration 17800",
                              minutes=380.28, hardware="Core i7-2600K 3.4 GHz, float32"),
}
CHECKPOINT = {"mlp": "mlp.ckpt", "convolutional_mlp": "convolutional_mlp.ckpt"}

VALIDATION = re.compile(r"^epoch (\d+), minibatch (\d+)/(\d+), validation error (\d+\.\d+) %$")
TEST = re.compile(r"^     epoch (\d+), minibatch (\d+)/(\d+), test error of best model (\d+\.\d+) %$")
FINAL_LOGISTIC = re.compile(r"^Optimization complete with best validation score of (\d+\.\d+) %,"
                            r"with test performance (\d+\.\d+) %$")
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


def run_program(program: str, out: Path, floatX: str, mode: str, resume: bool) -> dict:
    workdir, logs = out / program, out / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{program}.log"
    command = [sys.executable, "-m", f"deeplearning_tutorial.{program}"]
    if resume and program in CHECKPOINT and (workdir / CHECKPOINT[program]).exists():
        command.append("--resume")
    else:
        resume = False
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTENSOR_FLAGS": f"floatX={floatX},mode={mode}"}
    print(f"running {' '.join(command[1:])} ({floatX}, {mode}); log: {log_path}", flush=True)
    earlier = out / f"{program}.partial.json"  # wall time of the interrupted part(s)
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
    if result.returncode != 0:
        raise RuntimeError(f"{program} failed:\n{result.stderr}")
    if "Stopped by Ctrl-C" in result.stderr:
        earlier.write_text(json.dumps({"wall_seconds": wall}))
        raise KeyboardInterrupt(f"{program} was interrupted; continue with --resume")
    earlier.unlink(missing_ok=True)
    parsed = parse_log(log_path.read_text())
    return dict(program=program, floatX=floatX, mode=mode, **parsed, wall_seconds=wall,
                seconds_per_epoch=wall / max(parsed["epochs"], 1), **machine())


def results_table(results: dict[str, dict]) -> str:
    lines = [
        "| program | published valid / test | reproduced valid / test | difference (points) | "
        "published time, hardware | our time | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for program, r in results.items():
        p = PUBLISHED[program]
        minutes = r["wall_seconds"] / 60
        lines.append(
            f"| {program} | {p['validation']:.6f} % / {p['test']:.6f} % ({p['when']}) "
            f"| {r['validation']:.6f} % / {r['test']:.6f} % (iteration {r['best_iteration']}, {r['epochs']} epochs) "
            f"| {r['validation'] - p['validation']:+.6f} / {r['test'] - p['test']:+.6f} "
            f"| {p['minutes']:.2f} min, {p['hardware']} | {minutes:.2f} min ({r['floatX']}, {r['mode']}) "
            f"| {p['minutes'] / minutes:.1f}x faster |"
        )
    any_result = next(iter(results.values()))
    lines.append("")
    lines.append(f"Our runs: {any_result['cpu']}, {any_result['threads']} threads, PyTensor {any_result['pytensor']}, "
                 f"NumPy {any_result['numpy']}, Numba {any_result['numba']}, Python {any_result['python']}, "
                 f"commit {any_result['git_commit']}. Times are whole runs (start-up, compile and training).")
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
    axes.axhline(PUBLISHED[program]["validation"], color="grey", linestyle="--", label="published validation")
    axes.axhline(PUBLISHED[program]["test"], color="black", linestyle=":", label="published test")
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
    elif program == "convolutional_mlp" and (workdir / "best_model_lenet.pkl").exists():
        with open(workdir / "best_model_lenet.pkl", "rb") as f:
            filters = pickle.load(f).layers[0].W.get_value()  # (20, 1, 5, 5)
        image = tile_raster_images(filters.reshape(len(filters), -1), (5, 5), (2, 10), (1, 1))
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
    parser.add_argument("--resume", action="store_true", help="continue interrupted runs from their checkpoints")
    args = parser.parse_args(argv)
    programs = args.only.split(",")
    if unknown := set(programs) - set(PROGRAMS):
        parser.error(f"unknown programs {sorted(unknown)}; choose from {PROGRAMS}")

    for program in programs:
        try:
            result = run_program(program, args.out, args.floatX or PUBLISHED_FLOATX[program], args.mode,
                                 args.resume)
        except KeyboardInterrupt as stop:
            print(stop, file=sys.stderr)
            return 130
        (args.out / f"{program}.json").write_text(json.dumps(result, indent=2) + "\n")
        plot(program, result, args.out)
    results = {p: json.loads((args.out / f"{p}.json").read_text())
               for p in PROGRAMS if (args.out / f"{p}.json").exists()}
    table = results_table(results)
    (args.out / "RESULTS.md").write_text("# Published vs reproduced\n\n" + table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
