"""Time SDLM's online training two ways: one compiled call per image, and a scan over a block.

    NUMBA_NUM_THREADS=1 PYTENSOR_FLAGS=floatX=float32 python scripts/benchmark_lenet5_published.py [images]

Both apply the same updates, one image after another; the difference per image
is the cost of dispatching a call.  Prints milliseconds per image for each, and
the curvature estimate's time on 500 images.
"""

import sys
import time
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial import lenet5_published as lp  # noqa: E402
from deeplearning_tutorial import speedups  # noqa: E402


def main(images: int = 2000) -> None:
    rng = np.random.default_rng(0)
    x = pytensor.shared(rng.uniform(0, 1, size=(images, 784)).astype(pytensor.config.floatX))
    y = pytensor.shared(rng.integers(0, 10, images).astype("int32"))
    net, penalties, losses, curvature = lp.build_network()
    trainer = lp.Trainer(net, penalties, losses, curvature, (x, y), (x, y), block=500)
    grads = pt.grad(losses.sum(), net.params)
    one_image = pytensor.function([net.x, net.y], losses.sum(), mode=speedups.mode(),
                                  updates=[(p, p - s * g) for p, s, g in zip(net.params, net.steps, grads)])
    trainer.set_steps(trainer.curvature(np.arange(500)), 1e-5, lp.MU)
    xs, ys = x.get_value(), y.get_value()
    one_image(xs[:1], ys[:1])  # compile
    trainer.train_block(0)
    started = time.perf_counter()
    for n in range(images):
        one_image(xs[n:n + 1], ys[n:n + 1])
    per_call = (time.perf_counter() - started) / images
    started = time.perf_counter()
    for start in range(0, images, 500):
        trainer.train_block(start)
    per_block = (time.perf_counter() - started) / images
    started = time.perf_counter()
    trainer.curvature(np.arange(500))
    curvature_seconds = time.perf_counter() - started
    print(f"one call per image: {per_call * 1e3:.3f} ms per image")
    print(f"scan over blocks of 500: {per_block * 1e3:.3f} ms per image "
          f"({(per_call - per_block) * 1e3:.3f} ms of dispatch saved per image)")
    print(f"curvature on 500 images: {curvature_seconds:.3f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
