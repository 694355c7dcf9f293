"""Local contrast normalization (Jarrett, Kavukcuoglu, Ranzato & LeCun, 2009).

    from deeplearning_tutorial.ops import local_contrast_normalization
    y = local_contrast_normalization(x, window=9, sigma=2.0)

For feature maps ``x[n, i, j, k]`` (image n, map i, row j, column k) and a
Gaussian window ``g[p, q]`` of ``window x window`` taps and standard
deviation ``sigma``, scaled so that its weights over all maps sum to 1,
``w[p, q] = g[p, q] / (maps * sum(g))``:

1. subtractive normalization removes the weighted mean of the
   neighbourhood across all maps::

       v[n, i, j, k] = x[n, i, j, k] - m[n, j, k],
       m[n, j, k] = sum_{i, p, q} w[p, q] x[n, i, j + p, k + q] / coverage[j, k]

2. divisive normalization divides by the neighbourhood's weighted standard
   deviation, but never by less than its mean over the image::

       y[n, i, j, k] = v[n, i, j, k] / max(c[n], s[n, j, k]),
       s[n, j, k] = sqrt(max(sum_{i, p, q} w[p, q] v[n, i, j + p, k + q]**2 / coverage[j, k], epsilon**2)),
       c[n] = mean over (j, k) of s[n, j, k]

The window is centred (p, q run from -window//2 to window//2); outside the
image ``x`` counts as missing rather than zero: ``coverage[j, k]``, the
fraction of the window's weight that falls inside the image (1 away from the
border), renormalizes the sums.  ``epsilon`` keeps the divisor (and the
gradient of the square root) finite on constant regions.  Both sums are
convolutions (:func:`deeplearning_tutorial.ops.conv2d`), so the function is a
graph with gradients in every mode.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from deeplearning_tutorial.ops.conv import conv2d


def gaussian_window(window: int, sigma: float) -> np.ndarray:
    """The ``window x window`` Gaussian ``exp(-(p**2 + q**2) / (2 sigma**2))``, scaled to sum to 1."""
    offsets = np.arange(window) - window // 2
    g = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma**2))
    return g / g.sum()


def local_contrast_normalization(input, window=9, sigma=2.0, epsilon=1e-4):
    """Subtractive then divisive normalization over a Gaussian neighbourhood across maps.

    Parameters
    ----------
    input : 4-D tensor (batch, maps, rows, cols), float32 or float64
        The feature maps.
    window : int
        Odd size of the square Gaussian window (Jarrett et al. used 9).
    sigma : float
        Standard deviation of the Gaussian, in pixels.
    epsilon : float
        Smallest standard deviation divided by, so that flat regions stay finite.

    Returns
    -------
    tensor of the input's shape
        The normalized maps (the formula is in the module docstring).

    Raises
    ------
    ValueError
        ``window`` not a positive odd integer, ``sigma`` or ``epsilon`` not positive.
    TypeError
        ``input`` not a 4-D float tensor.
    """
    input = pt.as_tensor_variable(input)
    if input.ndim != 4 or input.dtype not in ("float32", "float64"):
        raise TypeError(f"local_contrast_normalization needs a 4-D float32 or float64 tensor "
                        f"(batch, maps, rows, cols), got {input.ndim}-D {input.dtype}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer (the window is centred), got {window!r}")
    if not sigma > 0 or not epsilon > 0:
        raise ValueError(f"sigma and epsilon must be > 0, got sigma={sigma}, epsilon={epsilon}")
    dtype = input.dtype
    g = pt.as_tensor(gaussian_window(int(window), sigma).astype(dtype))
    maps, rows, cols = input.shape[1], input.shape[2], input.shape[3]
    # one output map: the window's weights, the same for every input map, summing to 1 over all
    across_maps = pt.alloc(g, 1, maps, window, window) / maps.astype(dtype)
    coverage = conv2d(pt.ones((1, 1, rows, cols), dtype=dtype), g[None, None], border_mode="half")

    def neighbourhood_mean(maps_):
        return conv2d(maps_, across_maps, border_mode="half") / coverage

    centred = input - neighbourhood_mean(input)
    variance = neighbourhood_mean(pt.sqr(centred))
    deviation = pt.sqrt(pt.maximum(variance, np.asarray(epsilon**2, dtype)))
    floor = deviation.mean(axis=(2, 3), keepdims=True)
    return centred / pt.maximum(floor, deviation)
