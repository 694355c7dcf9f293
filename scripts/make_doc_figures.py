"""Draw the documentation's figures from the data and the package: ``python scripts/make_doc_figures.py``.

Writes into ``docs/_static/figures/``:

* ``mnist_train_8.png``: training image 8 as the seed shows it, pixel values printed;
* ``mnist_first_100.png``: the first 100 training digits, with ``tile_raster_images``;
* ``c3_connections.png``: which S2 maps each C3 map of LeNet-5 combines (LeCun et al., Table I).

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
from deeplearning_tutorial.utils import tile_raster_images  # noqa: E402

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
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)


def draw_first_digits(images: np.ndarray, path: Path) -> None:
    grid = tile_raster_images(images[:100], img_shape=(28, 28), tile_shape=(10, 10), tile_spacing=(1, 1))
    plt.imsave(path, grid, cmap="gray")


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
    figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(figure)


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
    print(f"wrote the figures in {FIGURES}")


if __name__ == "__main__":
    main()
