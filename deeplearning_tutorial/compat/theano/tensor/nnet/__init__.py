"""Theano's ``theano.tensor.nnet``: its activations and costs, and the package's
convolution (``conv2d``, and the module ``conv`` of the older ``conv.conv2d``)."""

import sys

import pytensor.tensor as pt
from pytensor.tensor import sigmoid, softplus

from deeplearning_tutorial.ops import conv, conv2d

# `from ...nnet.conv import conv2d` finds the package's module under this name
sys.modules[f"{__name__}.conv"] = conv

__all__ = ["binary_crossentropy", "categorical_crossentropy", "conv", "conv2d", "relu", "sigmoid", "softmax",
           "softplus"]


def softmax(x):
    """The softmax of each row of ``x`` (Theano's ``softmax`` took a matrix, or a vector
    as one row); PyTensor's ``pt.special.softmax`` needs the axis."""
    return pt.special.softmax(x, axis=-1)


def binary_crossentropy(output, target):
    """``-(target * log(output) + (1 - target) * log(1 - output))``, element by element."""
    return -(target * pt.log(output) + (1.0 - target) * pt.log(1.0 - output))


def categorical_crossentropy(coding_dist, true_dist):
    """The cross-entropy of each row of ``coding_dist`` (probabilities) against ``true_dist``:
    one-hot or probability rows, or an int vector of the true classes."""
    if true_dist.ndim == coding_dist.ndim:
        return -pt.sum(true_dist * pt.log(coding_dist), axis=coding_dist.ndim - 1)
    return -pt.log(coding_dist[pt.arange(coding_dist.shape[0]), true_dist])


def relu(x, alpha=0):
    """Theano's rectifier: ``x`` where positive, ``alpha * x`` elsewhere, computed as
    ``0.5 * (1 + alpha) * x + 0.5 * (1 - alpha) * abs(x)`` (``0.5 * (x + abs(x))`` for 0)."""
    if alpha == 0:
        return 0.5 * (x + abs(x))
    return 0.5 * (1 + alpha) * x + 0.5 * (1 - alpha) * abs(x)
