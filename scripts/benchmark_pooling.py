"""Time the pooling kinds per input element against max pooling (NUMBA mode by default).

    python scripts/benchmark_pooling.py                      # LeNet's first pooling: (500, 20, 24, 24), 2x2
    python scripts/benchmark_pooling.py --shape 100 6 28 28 --repeats 20 --mode CVM

For each kind it compiles the forward pooling and the gradient of its sum
(forward and backward), runs each ``--repeats`` times on the same float32
input and reports the minimum in nanoseconds per input element, and the
ratio to max pooling.  Stochastic pooling's inputs are non-negative (the
absolute values), as it needs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchmark  # noqa: E402  (scripts/benchmark.py: best_time)


def kinds():
    import pytensor.tensor as pt

    from deeplearning_tutorial.ops import pool_2d, stochastic_pool_2d

    return {
        "max": lambda x: pool_2d(x, (2, 2), ignore_border=True, mode="max"),
        "average_exc_pad": lambda x: pool_2d(x, (2, 2), ignore_border=True, mode="average_exc_pad"),
        "l2": lambda x: pool_2d(x, (2, 2), ignore_border=True, mode="l2"),
        "stochastic (training)": lambda x: stochastic_pool_2d(x, (2, 2), rng=pt.random.shared_rng(seed=0)),
        "stochastic (deterministic)": lambda x: stochastic_pool_2d(x, (2, 2), deterministic=True),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=[500, 20, 24, 24])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--mode", default="NUMBA")
    args = parser.parse_args(argv)

    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    from deeplearning_tutorial import speedups

    speedups.keep_freed_memory()  # as the tutorial programs' main does

    value = np.abs(np.random.default_rng(0).normal(size=args.shape)).astype("float32")
    x = pt.tensor4(dtype="float32", shape=tuple(args.shape))
    results = {}
    for name, pool in kinds().items():
        out = pool(x)
        forward = pytensor.function([x], out, mode=args.mode)
        backward = pytensor.function([x], pt.grad(out.sum(), x), mode=args.mode)
        results[name] = [benchmark.best_time(f, lambda: (value,), args.repeats) / value.size * 1e9
                         for f in (forward, backward)]
    print(f"{args.mode}, float32, input {'x'.join(map(str, args.shape))}, 2x2 windows; "
          f"ns per input element (min of {args.repeats}), ratio to max pooling")
    print(f"{'kind':<28}{'forward':>10}{'ratio':>8}{'fwd+bwd':>10}{'ratio':>8}")
    base = results["max"]
    for name, (forward, backward) in results.items():
        print(f"{name:<28}{forward:>10.3f}{forward / base[0]:>8.2f}{backward:>10.3f}{backward / base[1]:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
