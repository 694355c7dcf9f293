"""Time the tutorials' compiled functions: ms per minibatch and seconds per epoch.

    python scripts/benchmark.py                         # all models, NUMBA and CVM modes
    python scripts/benchmark.py --models lenet --modes NUMBA --repeats 5 --json
    python scripts/benchmark.py --models logistic_cg --floatX float64
    python scripts/benchmark.py --models lenet,mlp,logistic --modes NUMBA,JAX

Each model is built by the tutorial's own code (the very graphs a run trains,
float32 by default, shared-variable data and ``givens``), in a fresh process
per mode.  An epoch is the tutorial's: every training minibatch plus one pass
over the validation set.  The machine is noisy, so each measurement is
repeated and reported as min and median.  For ``logistic_cg`` the unit is a
CG iteration's work: the objective and its gradient at a new point (one pass
over the training set), plus one pass over the validation set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


MODELS = {
    # name: (tutorial module, arguments of its build_model, train minibatches timed)
    "lenet": ("convolutional_mlp", {"nkerns": [20, 50], "batch_size": 500}, 20),
    "lenet5": ("lenet5", {"batch_size": 100}, 100),
    "mlp": ("mlp", {"batch_size": 20}, 500),
    "logistic": ("logistic_sgd", {"batch_size": 600}, 83),
    "logistic_cg": ("logistic_cg", {}, 83),  # no build_model: timed by measure_cg
}


def best_time(function, make_args, repeats: int) -> float:
    """Min over ``repeats`` calls of ``function(*make_args())``, the arguments made outside the
    timing, after one untimed call (the first one compiles, or loads from the cache)."""
    function(*make_args())
    times = []
    for _ in range(repeats):
        args = make_args()
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def build(model: str):
    """The tutorial's own model and compiled functions, built by its ``build_model``."""
    import importlib

    from deeplearning_tutorial.logistic_sgd import load_data

    module_name, kwargs, _ = MODELS[model]
    module = importlib.import_module(f"deeplearning_tutorial.{module_name}")
    return module.build_model(load_data("mnist.pkl.gz"), **kwargs)


def measure(model: str, repeats: int) -> dict:
    """Time one model in this process's PyTensor mode (a child process of main())."""
    import contextlib
    import io

    import pytensor

    _, _, n_timed = MODELS[model]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        built = build(model)
    build_s = time.perf_counter() - t0
    train_model, validate_model = built.train_model, built.validate_model
    n_train, n_valid = built.n_train_batches, built.n_valid_batches
    # float() of each result: the JAX mode returns before it has computed (asynchronous
    # dispatch), and the training loop reads every cost (its divergence check)
    t0 = time.perf_counter()
    float(train_model(0))
    first_call_s = time.perf_counter() - t0
    float(validate_model(0))

    train_ms, valid_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n_timed):
            float(train_model(i % n_train))
        train_ms.append((time.perf_counter() - t0) / n_timed * 1e3)
        t0 = time.perf_counter()
        for i in range(n_valid):
            float(validate_model(i))
        valid_ms.append((time.perf_counter() - t0) / n_valid * 1e3)
    epoch_s = [(t * n_train + v * n_valid) / 1e3 for t, v in zip(train_ms, valid_ms)]
    summary = lambda xs: {"min": min(xs), "median": statistics.median(xs)}  # noqa: E731
    return {
        "model": model, "mode": str(pytensor.config.mode), "floatX": pytensor.config.floatX,
        "train_minibatches": n_train, "valid_minibatches": n_valid,
        "train_ms": summary(train_ms), "valid_ms": summary(valid_ms), "epoch_s": summary(epoch_s),
        "build_s": build_s, "first_call_s": first_call_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_cg(repeats: int) -> dict:
    """Time logistic_cg's objective + gradient (s per CG evaluation) in this process's mode."""
    import contextlib
    import io

    import numpy as np
    import pytensor

    from deeplearning_tutorial.logistic_cg import build_cg_model, load_data

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        model = build_cg_model(load_data("mnist.pkl.gz"))
    build_s = time.perf_counter() - t0
    theta = np.random.default_rng(0).normal(scale=0.01, size=model.classifier.theta.get_value().size)
    t0 = time.perf_counter()
    model.train_fn(theta)
    first_call_s = time.perf_counter() - t0
    model.validation_error()

    objective_s, valid_s = [], []
    for _ in range(repeats):
        theta = theta * 0.999  # a new point: the objective's pass is not remembered from the last one
        t0 = time.perf_counter()
        model.train_fn(theta)
        model.train_fn_grad(theta)
        objective_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.validation_error()
        valid_s.append(time.perf_counter() - t0)
    summary = lambda xs: {"min": min(xs), "median": statistics.median(xs)}  # noqa: E731
    return {
        "model": "logistic_cg", "mode": str(pytensor.config.mode), "floatX": pytensor.config.floatX,
        "train_minibatches": model.n_train_batches, "valid_minibatches": model.n_valid_batches,
        "objective_and_grad_s": summary(objective_s), "valid_s": summary(valid_s),
        "iteration_s": summary([o + v for o, v in zip(objective_s, valid_s)]),
        "build_s": build_s, "first_call_s": first_call_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet,lenet5,mlp,logistic,logistic_cg",
                        help="comma-separated: lenet, lenet5, mlp, logistic, logistic_cg")
    parser.add_argument("--modes", default="NUMBA,CVM", help="comma-separated PyTensor modes")
    parser.add_argument("--floatX", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (min and median reported)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one model in one mode, in a fresh process
        import importlib

        from deeplearning_tutorial import speedups

        importlib.import_module(f"deeplearning_tutorial.{MODELS[args.child][0]}")
        speedups.keep_freed_memory()  # as the tutorial programs' main does
        measured = measure_cg(args.repeats) if args.child == "logistic_cg" else measure(args.child, args.repeats)
        print(json.dumps(measured))
        return 0

    results = []
    for mode in args.modes.split(","):
        for model in args.models.split(","):
            if model not in MODELS:
                parser.error(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
            # the caller's other flags (compiledir, ...) are kept; the last value of a flag wins
            flags = ",".join(filter(None, [os.environ.get("PYTENSOR_FLAGS"), f"floatX={args.floatX},mode={mode}"]))
            env = {**os.environ, "PYTENSOR_FLAGS": flags}
            command = [sys.executable, __file__, "--child", model, "--repeats", str(args.repeats)]
            child = subprocess.run(command, env=env, capture_output=True, text=True)
            if child.returncode != 0:
                print(child.stderr, file=sys.stderr)
                return child.returncode
            result = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(result)
            if not args.json and model == "logistic_cg":
                print(f"{model:9s} {mode:6s} {args.floatX}: "
                      f"objective + gradient {result['objective_and_grad_s']['min']:.3f} s "
                      f"(median {result['objective_and_grad_s']['median']:.3f}), "
                      f"validation {result['valid_s']['min']:.3f} s, "
                      f"CG iteration {result['iteration_s']['min']:.3f} s, "
                      f"first call {result['first_call_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB",
                      flush=True)
            elif not args.json:
                print(f"{model:9s} {mode:6s} {args.floatX}: "
                      f"train {result['train_ms']['min']:8.2f} ms/minibatch "
                      f"(median {result['train_ms']['median']:.2f}), "
                      f"valid {result['valid_ms']['min']:7.2f} ms/minibatch, "
                      f"epoch {result['epoch_s']['min']:7.3f} s (median {result['epoch_s']['median']:.3f}), "
                      f"first call {result['first_call_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB",
                      flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
