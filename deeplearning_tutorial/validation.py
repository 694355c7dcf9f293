"""Checks of hyper-parameters, made before anything is compiled, and of images to classify."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np


def check_n_epochs(n_epochs: int) -> None:
    """Raise ValueError unless ``n_epochs`` is an integer >= 1."""
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be an integer >= 1, got {n_epochs!r}")


def check_hyperparameters(
    learning_rate: float,
    n_epochs: int,
    batch_size: int,
    split_sizes: Sequence[int],
    nkerns: Sequence[int] | None = None,
    penalties: dict[str, float] | None = None,
) -> None:
    """Raise ValueError, saying what to change, for arguments no run can use."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    check_n_epochs(n_epochs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    smallest = min(split_sizes)
    if batch_size > smallest:
        raise ValueError(
            f"batch_size {batch_size} is larger than the smallest data split "
            f"({smallest} examples): no full minibatch could be formed; use at most {smallest}"
        )
    if nkerns is not None:
        check_positive_ints("nkerns", nkerns, count=2)
    if penalties is not None:
        for name, value in penalties.items():
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0 (0 turns the penalty off), got {value!r}")


def check_positive_ints(name: str, values: Sequence[int], count: int) -> None:
    """Raise ValueError unless ``values`` are ``count`` positive integers."""
    if not (isinstance(values, (list, tuple)) and len(values) == count
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
        shown = values[0] if count == 1 and isinstance(values, (list, tuple)) and values else values
        what = "a positive integer" if count == 1 else f"{count} positive integers"
        what = what.replace("2 positive integers", "two positive integers, e.g. [20, 50]")
        raise ValueError(f"{name} must be {what}; got {shown!r}")


def check_hidden_layers_sizes(hidden_layers_sizes) -> None:
    """Raise ValueError unless a deep network's ``hidden_layers_sizes`` lists at least one positive size."""
    if not isinstance(hidden_layers_sizes, list | tuple) or not hidden_layers_sizes:
        raise ValueError(f"hidden_layers_sizes must list at least one layer size, got {hidden_layers_sizes!r}")
    check_positive_ints("hidden_layers_sizes", list(hidden_layers_sizes), count=len(hidden_layers_sizes))


def check_pretraining(pretrain_lr: float, pretraining_epochs: int) -> None:
    """Raise ValueError unless the pre-training's step size is positive and its epochs an integer >= 0."""
    if not pretrain_lr > 0:
        raise ValueError(f"pretrain_lr must be > 0, got {pretrain_lr}")
    if isinstance(pretraining_epochs, bool) or not isinstance(pretraining_epochs, int) or pretraining_epochs < 0:
        raise ValueError(f"pretraining_epochs must be an integer >= 0, got {pretraining_epochs!r}")


def check_images(images) -> np.ndarray:
    """MNIST-like images as a (n, 784) floatX matrix, or a ValueError saying what is wrong.

    Accepts (n, 784) or (n, 28, 28) arrays of real numbers, n >= 1, all
    finite.  Warns when values lie outside [0, 1]: the tutorials' pixels are
    bytes / 256, and 0..255 images are the usual mistake.
    """
    import pytensor

    array = np.asarray(images)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"images must be an array of numbers, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array.reshape(len(array), 28 * 28)
    if array.ndim != 2 or array.shape[1] != 28 * 28:
        raise ValueError(f"images must have shape (n, 784) or (n, 28, 28), got {array.shape}")
    if len(array) == 0:
        raise ValueError("images is empty: give at least one image")
    if not np.isfinite(array).all():
        raise ValueError(f"images contain {np.size(array) - np.isfinite(array).sum()} NaN or infinite values")
    low, high = array.min(), array.max()
    if low < 0 or high > 1:
        warnings.warn(f"image values span [{low}, {high}], outside [0, 1]: the tutorials' pixels are "
                      f"bytes / 256 (divide 0..255 images by 256)", stacklevel=3)
    return array.astype(pytensor.config.floatX)
