"""Theano's ``theano.tensor.xlogx``: ``x log x`` and ``x log y``, 0 where ``x`` is 0.

PyTensor's module of that name is deprecated for ``pytensor.tensor.special.xlogy``,
which these call.
"""

import pytensor.tensor as pt

__all__ = ["xlogx", "xlogy0"]


def xlogx(x):
    """``x * log(x)``, 0 where ``x`` is 0."""
    return pt.special.xlogy(x, x)


def xlogy0(x, y):
    """``x * log(y)``, 0 where ``x`` is 0."""
    return pt.special.xlogy(x, y)
