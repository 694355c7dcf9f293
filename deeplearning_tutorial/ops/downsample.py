"""Theano 0.7's ``theano.tensor.signal.downsample``, for programs of that era.

    from deeplearning_tutorial.ops import downsample
    pooled = downsample.max_pool_2d(input=conv_out, ds=(2, 2), ignore_border=True)

Later Theano versions renamed ``max_pool_2d`` to ``theano.tensor.signal.pool.pool_2d``
and its ``ds``, ``st`` and ``padding`` to ``ws``, ``stride`` and ``pad``
(:func:`deeplearning_tutorial.ops.pool.pool_2d` takes both spellings).
"""

from __future__ import annotations

import warnings

from deeplearning_tutorial.ops.pool import IGNORE_BORDER_WARNING, pool_2d


def max_pool_2d(input, ds, ignore_border=None, st=None, padding=(0, 0), mode="max"):
    """Pool the last two axes of ``input``: Theano's ``downsample.max_pool_2d``.

    Parameters
    ----------
    input : tensor
        float32 or float64, 2 or more dimensions; the last two are pooled.
    ds : int or (int, int)
        The pooling window (rows, cols).
    ignore_border : bool or None
        True drops partial windows at the border; ``None`` means False, with
        Theano's warning.
    st : int or (int, int) or None
        The strides; ``None``: ``ds``.
    padding : int or (int, int)
        Zero padding of rows and cols (needs ``ignore_border=True``).
    mode : {'max', 'sum', 'average_inc_pad', 'average_exc_pad', 'l2'}
        Despite the function's name, any of
        :func:`~deeplearning_tutorial.ops.pool.pool_2d`'s modes.

    Returns
    -------
    tensor
        ``pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)``.

    Raises
    ------
    ValueError
        For invalid parameters, as :func:`~deeplearning_tutorial.ops.pool.pool_2d`
        raises it for the same parameters under their new names.
    TypeError
        For an input of fewer than 2 dimensions or not of floats, or a
        window, stride or padding that is neither an int nor a pair of ints.

    Warns
    -----
    UserWarning
        Theano's warning when ``ignore_border`` is left unset.
    """
    if ignore_border is None:
        warnings.warn(IGNORE_BORDER_WARNING.format(function="max_pool_2d"), stacklevel=2)
        ignore_border = False
    return pool_2d(input, ws=ds, ignore_border=ignore_border, stride=st, pad=padding, mode=mode)
