"""Compile the LeNet tutorial's functions into PyTensor's cache on disk, ahead of the first run.

    python scripts/precompile.py                   # what `make run` trains: convolutional_mlp's defaults
    PYTENSOR_FLAGS=floatX=float32 python scripts/precompile.py

In PyTensor's NUMBA mode a function is compiled at its first call, unless
PyTensor's cache on disk already holds its graph; with empty caches LeNet's
training function takes tens of seconds to compile (``profile_compile.py``
says where they go).  ``make setup`` runs this script once after installing
the package, so that the compiling is part of the installation and the first
``make run`` starts training at once.

The script builds LeNet with ``evaluate_lenet5``'s defaults and this
process's PyTensor flags, as ``make run`` does, on placeholder data of
MNIST's shape: the graphs do not depend on the values or the number of
examples, only on their dtypes and the batch size, so PyTensor files them
under the keys the real run looks up.  It then calls the training,
validation and test functions once each, on zeros (the weights it changes
are thrown away).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import sys
import time
from pathlib import Path

import numpy as np
import pytensor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial import convolutional_mlp  # noqa: E402
from deeplearning_tutorial.logistic_sgd import shared_dataset  # noqa: E402

IMAGE_PIXELS = 28 * 28


def placeholder_datasets(rows: int) -> list:
    """Zeros shaped and typed as ``load_data`` returns MNIST, ``rows`` examples per split."""
    return [shared_dataset((np.zeros((rows, IMAGE_PIXELS)), np.zeros(rows))) for _ in range(3)]


def run_arguments() -> dict:
    """The arguments, data aside, with which ``evaluate_lenet5`` calls ``build_model`` when run
    without options (``make run``)."""
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(convolutional_mlp.evaluate_lenet5).parameters.items()}
    network = convolutional_mlp.network_options(
        **{name: defaults[name] for name in inspect.signature(convolutional_mlp.network_options).parameters})
    return {name: defaults[name] for name in ("learning_rate", "nkerns", "batch_size", "seed")} | {
        "network": network}


def build_placeholder_model():
    """LeNet as ``make run`` builds it, on placeholder data (one minibatch per split)."""
    arguments = run_arguments()
    with contextlib.redirect_stdout(io.StringIO()):
        return convolutional_mlp.build_model(placeholder_datasets(arguments["batch_size"]), **arguments)


def precompile() -> dict:
    """Build the placeholder model and call each of its functions once; their first calls' seconds."""
    model = build_placeholder_model()
    seconds = {}
    for name in ("train_model", "validate_model", "test_model"):
        start = time.perf_counter()
        getattr(model, name)(0)
        seconds[name] = time.perf_counter() - start
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    print(f"Compiling the LeNet tutorial's functions ({pytensor.config.floatX}) into PyTensor's cache...",
          file=sys.stderr, flush=True)
    seconds = precompile()
    print("  first calls: " + ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
