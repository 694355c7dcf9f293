"""Showing weights as pictures: a grid of small images, as the original ``utils.py`` did, and
writing pictures and figures to PNG files atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplearning_tutorial.files import atomic_write


def scale_to_unit_interval(ndar: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """A copy of ``ndar`` shifted and scaled linearly so that its values span [0, 1).

    The minimum is subtracted, then the values are multiplied by
    ``1 / (max + eps)``, computed in float64 and rounded to ``ndar``'s dtype,
    so that float32 weights give the same pixels as the original's.
    """
    ndar = np.array(ndar, dtype=np.result_type(ndar, np.float32))
    ndar -= ndar.min()
    ndar *= ndar.dtype.type(1.0 / (float(ndar.max()) + eps))
    return ndar


def tile_raster_images(X, img_shape, tile_shape, tile_spacing=(0, 0),
                       scale_rows_to_unit_interval=True, output_pixel_vals=True) -> np.ndarray:
    """Lay the rows of ``X`` (each a flattened ``img_shape`` image) out on a grid.

    ``tile_shape`` is (rows, columns) of the grid; tiles are filled row by row
    and left black when ``X`` has fewer rows.  ``tile_spacing`` pixels of black
    separate the tiles.  With ``scale_rows_to_unit_interval`` every image is
    stretched to [0, 1) on its own (weights have arbitrary ranges); with
    ``output_pixel_vals`` the result is uint8, the scaled values times 255
    truncated (so at most 254 after scaling, as the original's pictures).
    """
    X = np.asarray(X)
    img_h, img_w = img_shape
    rows, cols = tile_shape
    space_h, space_w = tile_spacing
    if X.ndim != 2 or X.shape[1] != img_h * img_w:
        raise ValueError(f"X must be (n, {img_h * img_w}) for images of shape {img_shape}, got {X.shape}")
    out_shape = ((img_h + space_h) * rows - space_h, (img_w + space_w) * cols - space_w)
    out = np.zeros(out_shape, dtype=np.uint8 if output_pixel_vals else X.dtype)
    for index in range(min(len(X), rows * cols)):
        image = X[index].reshape(img_shape)
        if scale_rows_to_unit_interval:
            image = scale_to_unit_interval(image)
        if output_pixel_vals:
            image = (image * 255).astype(np.uint8)  # truncated, as a C cast
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
    """Write the array ``image`` to ``path`` as a PNG picture, atomically.

    A 2-D uint8 array given without ``options`` (what :func:`tile_raster_images`
    returns) is written as it is, a greyscale ('L') picture, as the original
    did; otherwise ``options`` go to Matplotlib's ``imsave`` (``cmap``, ``vmin``, ``vmax``).
    """
    import matplotlib.pyplot as plt

    if not options and image.ndim == 2 and image.dtype == np.uint8:
        from PIL import Image

        with atomic_write(path) as handle:
            Image.fromarray(image).save(handle, format="png")
        return Path(path)
    with atomic_write(path) as handle:
        plt.imsave(handle, image, format="png", **options)  # type: ignore[arg-type]  # opened "wb"
    return Path(path)
