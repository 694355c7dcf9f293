"""Draw the documentation's figures from the data and the package: ``python scripts/make_doc_figures.py``.

Writes into ``docs/_static/figures/``:

* ``mnist_train_8.png``: training image 8 with its pixel values printed;
* ``mnist_first_100.png``: the first 100 training digits, with ``tile_raster_images``;
* ``c3_connections.png``: which S2 maps each C3 map of LeNet-5 combines (LeCun et al., Table I);
* ``s2_to_c3.png``: how one C3 map is made from six S2 maps, computed with the package's
  ``conv2d`` and ``pool_2d`` on training image 8.

Needs ``data/mnist.pkl.gz`` (``scripts/prepare_data.py``) and matplotlib (the ``plot`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial import datasets  # noqa: E402
from deeplearning_tutorial.utils import save_figure, save_image, tile_raster_images  # noqa: E402

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "_static" / "figures"


def draw_training_image(images: np.ndarray, index: int, path: Path) -> None:
    image = images[index].reshape(28, 28)
    figure, axes = plt.subplots(figsize=(7, 7))
    axes.imshow(image, cmap="gray_r", vmin=0, vmax=1)
    for row, col in zip(*np.nonzero(image)):
        value = image[row, col]
        axes.text(col, row, f"{value * 256:.0f}", ha="center", va="center", fontsize=4.5,
                  color="white" if value > 0.5 else "black")
    axes.set_title(f"train_set_x[{index}] (pixel values x 256)")
    axes.set_xticks(range(0, 28, 4))
    axes.set_yticks(range(0, 28, 4))
    save_figure(figure, path, dpi=150, bbox_inches="tight")


def draw_first_digits(images: np.ndarray, path: Path) -> None:
    grid = tile_raster_images(images[:100], img_shape=(28, 28), tile_shape=(10, 10), tile_spacing=(1, 1))
    save_image(grid, path, cmap="gray")


def draw_c3_connections(table: np.ndarray, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 3.4))
    axes.imshow(table, cmap="Greys", vmin=0, vmax=1.6)
    for s2, c3 in zip(*np.nonzero(table)):
        axes.text(c3, s2, "X", ha="center", va="center", fontsize=9, color="white")
    axes.set_xticks(range(table.shape[1]))
    axes.set_yticks(range(table.shape[0]))
    axes.set_xlabel("C3 feature map")
    axes.set_ylabel("S2 feature map")
    axes.set_title(f"LeNet-5's S2 -> C3 connections ({int(table.sum())} of {table.size} pairs)")
    save_figure(figure, path, dpi=150, bbox_inches="tight")


# Six hand-made 5x5 C1 filters, so that the S2 maps of the figure are easy to read:
# horizontal, vertical and the two diagonal edges, a centre-surround spot, a blur.
_EDGE = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
C1_FILTERS = np.stack([
    np.outer(_EDGE, np.ones(5)),
    np.outer(np.ones(5), _EDGE),
    np.add.outer(_EDGE, _EDGE),
    np.subtract.outer(_EDGE, _EDGE),
    np.where(np.hypot(*np.mgrid[-2:3, -2:3]) < 1.5, 1.0, -0.5),
    np.ones((5, 5)) / 5,
])[:, None]


def s2_to_c3(image: np.ndarray, seed: int = 1234):
    """One C3 map from six S2 maps, step by step, with the package's Ops.

    C1 = tanh(conv2d(image, C1_FILTERS)), S2 = 2x2 max pooling of C1; then C3's
    map convolves each S2 map with its own 5x5 filter (drawn as the tutorials
    initialise them), sums the six results, adds one bias and applies tanh.
    Returns the S2 maps, the C3 filters, the six convolutions, their sum plus
    the bias, and the C3 map.
    """
    import pytensor
    import pytensor.tensor as pt

    from deeplearning_tutorial.ops import conv2d, pool_2d

    rng = np.random.default_rng(seed)
    bound = np.sqrt(6.0 / (6 * 25 + 25))
    c3_filters = rng.uniform(-bound, bound, size=(6, 5, 5)) * 1.5
    bias = 0.1

    x = pt.tensor4("x", dtype="float64")
    s2 = pool_2d(pt.tanh(conv2d(x, C1_FILTERS)), ws=(2, 2), ignore_border=True)
    # each S2 map with its own filter: a grouped convolution, six groups of one map
    partial = conv2d(s2, c3_filters[:, None], num_groups=6)
    summed = partial.sum(axis=1) + bias
    compute = pytensor.function([x], [s2[0], partial[0], summed[0], pt.tanh(summed)[0]])
    s2_maps, partials, total, c3_map = compute(image.reshape(1, 1, 28, 28).astype("float64"))
    return s2_maps, c3_filters, partials, total, c3_map


def draw_s2_to_c3(image: np.ndarray, path: Path) -> None:
    s2_maps, c3_filters, partials, total, c3_map = s2_to_c3(image)
    figure, axes = plt.subplots(3, 7, figsize=(11, 5.4), gridspec_kw={"width_ratios": [1] * 6 + [1.3]})
    rows = [("S2 map", s2_maps, "gray"), ("its C3 filter", c3_filters, "RdBu_r"),
            ("convolution", partials, "RdBu_r")]
    for row, (label, maps, cmap) in enumerate(rows):
        for k in range(6):
            ax = axes[row, k]
            limit = np.abs(maps[k]).max() or 1
            ax.imshow(maps[k], cmap=cmap, vmin=-limit if cmap != "gray" else None,
                      vmax=limit if cmap != "gray" else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label} {k}", fontsize=8)
    for ax, (label, values) in zip(axes[:, 6], [("", None), ("sum of the six + b", total),
                                               ("C3 map = tanh(sum + b)", c3_map)]):
        ax.set_xticks([])
        ax.set_yticks([])
        if values is None:
            ax.axis("off")
            continue
        limit = np.abs(values).max() or 1
        ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(label, fontsize=8)
    figure.suptitle("One C3 feature map sums the convolutions of all six S2 maps, plus one bias, "
                    "through the activation", fontsize=10)
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def main() -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (train_x, _), _, _ = datasets.read_dataset(datasets.DATA_DIR / "mnist.pkl.gz")
    draw_training_image(train_x, 8, FIGURES / "mnist_train_8.png")
    draw_first_digits(train_x, FIGURES / "mnist_first_100.png")
    from deeplearning_tutorial.lenet5 import C3_TABLES

    table = np.zeros((6, len(C3_TABLES["lecun"])))
    for c3_map, s2_maps in enumerate(C3_TABLES["lecun"]):
        table[list(s2_maps), c3_map] = 1
    draw_c3_connections(table, FIGURES / "c3_connections.png")
    draw_s2_to_c3(train_x[8], FIGURES / "s2_to_c3.png")
    print(f"wrote the figures in {FIGURES}")


if __name__ == "__main__":
    main()
