"""Time the MRG noise of a denoising autoencoder's minibatch against its training call.

    python scripts/benchmark_mrg.py                    # NUMBA mode, floatX from PYTENSOR_FLAGS
    python scripts/benchmark_mrg.py --repeats 500 --mode CVM

Compiles, in one mode:

- ``noise``: a 20 x 784 ``binomial(size=x.shape, n=1, p=0.7, dtype=floatX)`` draw
  from ``MRG_RandomStreams`` (15360 streams, as in the tutorial);
- ``train``: the dA's training call on a 20 x 784 minibatch: that corruption, a
  784 -> 500 sigmoid encoder with the decoder's weights tied, the cross-entropy
  cost and SGD updates of W, bhid and bvis;
- ``train without noise``: the same call with the input left uncorrupted.

Each runs ``--repeats`` times on the same minibatch after one untimed call; the
script prints the minimum and median of each in microseconds and the ratios
noise / train (the goal: below 10 %) and (train - train without noise) / train.
"""

from __future__ import annotations

import argparse
import statistics
import time


def timings(function, args, repeats: int) -> list[float]:
    """``repeats`` times of ``function(*args)`` in seconds, after one untimed call."""
    function(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return times


def build(mode: str):
    """The three compiled functions: noise, train, train without noise."""
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    from deeplearning_tutorial.rng_mrg import MRG_RandomStreams

    floatX = pytensor.config.floatX
    rng = np.random.RandomState(123)
    srng = MRG_RandomStreams(rng.randint(2**30))
    bound = 4 * np.sqrt(6.0 / (784 + 500))
    W = pytensor.shared(rng.uniform(-bound, bound, (784, 500)).astype(floatX), name="W")
    bhid = pytensor.shared(np.zeros(500, dtype=floatX), name="bhid")
    bvis = pytensor.shared(np.zeros(784, dtype=floatX), name="bvis")
    x = pt.matrix("x")

    def train_step(corrupt: bool):
        tilde_x = srng.binomial(size=x.shape, n=1, p=0.7, dtype=floatX) * x if corrupt else x
        y = pt.sigmoid(pt.dot(tilde_x, W) + bhid)
        z = pt.sigmoid(pt.dot(y, W.T) + bvis)
        cost = pt.mean(-pt.sum(x * pt.log(z) + (1 - x) * pt.log(1 - z), axis=1))
        params = [W, bhid, bvis]
        updates = [(p, p - 0.1 * g) for p, g in zip(params, pytensor.grad(cost, params))]
        return pytensor.function([x], cost, updates=updates, mode=mode)

    noise = pytensor.function([x], srng.binomial(size=x.shape, n=1, p=0.7, dtype=floatX), mode=mode)
    return {"noise": noise, "train": train_step(True), "train without noise": train_step(False)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="timed calls of each function (default 200)")
    parser.add_argument("--mode", default="NUMBA", help="PyTensor mode (default NUMBA)")
    args = parser.parse_args(argv)

    import numpy as np
    import pytensor

    functions = build(args.mode)
    batch = np.random.default_rng(0).random((20, 784)).astype(pytensor.config.floatX)
    results = {name: timings(function, [batch], args.repeats) for name, function in functions.items()}
    print(f"mode {args.mode}, floatX {pytensor.config.floatX}, {args.repeats} calls each (microseconds)")
    for name, times in results.items():
        print(f"{name:>20}: min {min(times) * 1e6:9.1f}  median {statistics.median(times) * 1e6:9.1f}")
    for stat in (min, statistics.median):
        noise, train, clean = (stat(results[name]) for name in ("noise", "train", "train without noise"))
        print(f"{stat.__name__:>6}: noise / train = {noise / train:.1%}; "
              f"(train - train without noise) / train = {(train - clean) / train:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
