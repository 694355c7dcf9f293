"""Showing weights as pictures: a grid of small images, as the original ``utils.py`` did, and
writing pictures and figures to PNG files atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplearning_tutorial.files import atomic_write


def scale_to_unit_interval(ndar: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Shift and scale ``ndar`` linearly so that its values span [0, 1]."""
    ndar = np.asarray(ndar, dtype=np.float64)
    ndar = ndar - ndar.min()
    return ndar / (ndar.max() + eps)


def tile_raster_images(X, img_shape, tile_shape, tile_spacing=(0, 0),
                       scale_rows_to_unit_interval=True, output_pixel_vals=True) -> np.ndarray:
    """Lay the rows of ``X`` (each a flattened ``img_shape`` image) out on a grid.

    ``tile_shape`` is (rows, columns) of the grid; tiles are filled row by row
    and left black when ``X`` has fewer rows.  ``tile_spacing`` pixels of black
    separate the tiles.  With ``scale_rows_to_unit_interval`` every image is
    stretched to [0, 1] on its own (weights have arbitrary ranges); with
    ``output_pixel_vals`` the result is uint8 in 0..255, ready to save.
    """
    X = np.asarray(X)
    img_h, img_w = img_shape
    rows, cols = tile_shape
    space_h, space_w = tile_spacing
    if X.ndim != 2 or X.shape[1] != img_h * img_w:
        raise ValueError(f"X must be (n, {img_h * img_w}) for images of shape {img_shape}, got {X.shape}")
    out_shape = ((img_h + space_h) * rows - space_h, (img_w + space_w) * cols - space_w)
    out = np.zeros(out_shape, dtype=np.uint8 if output_pixel_vals else np.float64)
    for index in range(min(len(X), rows * cols)):
        image = X[index].reshape(img_shape).astype(np.float64)
        if scale_rows_to_unit_interval:
            image = scale_to_unit_interval(image)
        if output_pixel_vals:
            image = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
        r, c = divmod(index, cols)
        top, left = r * (img_h + space_h), c * (img_w + space_w)
        out[top : top + img_h, left : left + img_w] = image
    return out


def save_figure(figure, path: Path | str, **options) -> Path:
    """Write a Matplotlib ``figure`` to ``path`` as PNG, atomically (an interrupted write leaves
    the previous file), and close it; ``options`` go to ``savefig`` (``dpi``, ``bbox_inches``)."""
    import matplotlib.pyplot as plt

    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", **options)
    plt.close(figure)
    return Path(path)


def save_image(image: np.ndarray, path: Path | str, **options) -> Path:
    """Write the array ``image`` to ``path`` as a PNG picture, atomically; ``options`` go to
    Matplotlib's ``imsave`` (``cmap``, ``vmin``, ``vmax``)."""
    import matplotlib.pyplot as plt

    with atomic_write(path) as handle:
        plt.imsave(handle, image, format="png", **options)  # type: ignore[arg-type]  # opened "wb"
    return Path(path)
