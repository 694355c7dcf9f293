"""Draw the documentation's figures from the data and the package: ``python scripts/make_doc_figures.py``.

Writes into ``docs/_static/figures/``:

* ``mnist_train_8.png``: training image 8, and the values of the pixels around its centre;
* ``mnist_first_100.png``: the first 100 training digits, with ``tile_raster_images``;
* ``c3_connections.png``: which S2 maps each C3 map of LeNet-5 combines (LeCun et al., Table I);
* ``s2_to_c3.png``: how one C3 map is made from six S2 maps, computed with the package's
  ``conv2d`` and ``pool_2d`` on training image 8.
* ``logistic_sgd_full_run.png``, ``mlp_full_run.png``, ``convolutional_mlp_full_run.png``,
  ``lenet5_full_run.png``, ``logistic_cg_full_run.png``:
  the validation and test error of the full runs recorded in ``results/<program>.json``;
* ``mlp_network.png``: the multilayer perceptron's layers;
* ``sparse_connectivity.png``, ``shared_weights.png``, ``conv_layer_notation.png``,
  ``lenet_model.png``: the diagrams of the LeNet page;
* ``tuning_seed_lenet.png``, ``tuning_lenet5_c3_subsampling.png``: each tuning study's
  variations (mean and spread over random seeds) and their mean learning curves, from
  ``results/tuning/<study>/trials.jsonl``.

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


def draw_training_image(images: np.ndarray, index: int, path: Path, window: int = 8) -> None:
    """One training image, and the values of the ``window`` x ``window`` pixels around its ink's centre."""
    from matplotlib.patches import Rectangle

    image = images[index].reshape(28, 28)
    rows, cols = np.nonzero(image)
    top = int(np.clip(rows.mean() - window / 2, 0, 28 - window))
    left = int(np.clip(cols.mean() - window / 2, 0, 28 - window))
    figure, (whole, zoom) = plt.subplots(1, 2, figsize=(9, 4.4))
    whole.imshow(image, cmap="gray_r", vmin=0, vmax=1)
    whole.add_patch(Rectangle((left - 0.5, top - 0.5), window, window, fill=False, edgecolor="red", linewidth=1.5))
    whole.set_title(f"train_set_x[{index}] as a 28x28 image")
    whole.set_xticks(range(0, 28, 4))
    whole.set_yticks(range(0, 28, 4))
    part = image[top:top + window, left:left + window]
    zoom.imshow(part, cmap="gray_r", vmin=0, vmax=1)
    for row in range(window):
        for col in range(window):
            value = part[row, col]
            zoom.text(col, row, f"{value * 256:.0f}", ha="center", va="center", fontsize=9,
                      color="white" if value > 0.5 else "black")
    zoom.set_title(f"rows {top}-{top + window - 1}, columns {left}-{left + window - 1}: pixel x 256")
    zoom.set_xticks(range(window), [str(left + c) for c in range(window)])
    zoom.set_yticks(range(window), [str(top + r) for r in range(window)])
    figure.tight_layout()
    save_figure(figure, path, dpi=130, bbox_inches="tight")


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


RESULTS = FIGURES.parent.parent.parent / "results"


def draw_full_run(program: str, path: Path, log_scale: bool, step: str = "epoch") -> None:
    """A recorded full run's validation error (line) and test error at each new best (dots), per epoch.

    ``step="CG iteration"``: logistic_cg's record, whose iterations count from 1, one per validation.
    """
    import json

    record = json.loads((RESULTS / f"{program}.json").read_text())
    per_epoch = record["validation_curve"][0][0]  # the first validation ends epoch 1
    valid = np.array(record["validation_curve"], dtype=float)
    test = np.array(record["test_curve"], dtype=float).reshape(-1, 2)
    figure, axes = plt.subplots(figsize=(7, 3.4))
    axes.plot(valid[:, 0] / per_epoch, valid[:, 1], label="validation error")
    if len(test):
        axes.plot(test[:, 0] / per_epoch, test[:, 1], ".", markersize=5, label="test error at a new best")
    best_epoch = (record["best_iteration"] + (step == "epoch")) / per_epoch
    axes.axvline(best_epoch, color="gray", linestyle=":", linewidth=1,
                 label=f"best model: {record['validation']:.2f} % / {record['test']:.2f} %")
    if log_scale:
        axes.set_yscale("log")
        ticks = [t for t in (0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30) if valid[:, 1].min() * 0.9 <= t
                 <= valid[:, 1].max() * 1.1]
        axes.set_yticks(ticks, [f"{t:g}" for t in ticks])
        axes.minorticks_off()
    axes.set_xlabel(step)
    axes.set_ylabel("error (%)" + (", log scale" if log_scale else ""))
    axes.grid(alpha=0.3)
    axes.legend()
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def _units(axes, x: float, ys, color: str, radius: float = 0.18) -> None:
    for y in ys:
        axes.add_patch(plt.Circle((x, y), radius, facecolor=color, edgecolor="black", zorder=3))


def draw_mlp_network(path: Path) -> None:
    """Input, tanh hidden layer and softmax output, fully connected, with their sizes and parameters."""
    layers = [(0.0, np.linspace(0, 6, 7), "#cfe2f3", "input x\n784 pixels"),
              (3.5, np.linspace(0.75, 5.25, 5), "#f9cb9c", "hidden h(x)\n500 tanh\nunits"),
              (7.0, np.linspace(1.5, 4.5, 3), "#b6d7a8", "output\n10 softmax\nunits")]
    figure, axes = plt.subplots(figsize=(6.5, 4.6))
    for (x0, ys0, _, _), (x1, ys1, _, _) in zip(layers, layers[1:]):
        for y0 in ys0:
            for y1 in ys1:
                axes.plot([x0, x1], [y0, y1], color="gray", linewidth=0.5, zorder=1)
    for x, ys, color, label in layers:
        _units(axes, x, ys, color)
        axes.text(x, -0.9, label, ha="center", va="top", fontsize=10)
        axes.text(x, ys[-1] + 0.45, "...", ha="center", fontsize=12)
    axes.text(1.75, 6.6, "$W^{(1)}, b^{(1)}$", ha="center", fontsize=11)
    axes.text(5.25, 6.6, "$W^{(2)}, b^{(2)}$", ha="center", fontsize=11)
    axes.set_xlim(-1, 8)
    axes.set_ylim(-2.8, 7.2)
    axes.set_aspect("equal")
    axes.axis("off")
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def _layer_row(axes, n: int, y: float, label: str, color: str, spacing: float = 1.0) -> np.ndarray:
    xs = (np.arange(n) - (n - 1) / 2) * spacing
    for x in xs:
        axes.add_patch(plt.Circle((x, y), 0.22, facecolor=color, edgecolor="black", zorder=3))
    axes.text(-3.4, y, label, ha="left", va="center", fontsize=10)
    return xs


def draw_sparse_connectivity(path: Path) -> None:
    """Three 1-D layers; each unit sees three neighbouring units of the layer below."""
    figure, axes = plt.subplots(figsize=(6, 3.6))
    below = _layer_row(axes, 5, 0, "layer m-1", "#cfe2f3")
    middle = _layer_row(axes, 3, 1.5, "layer m", "#f9cb9c")
    top = _layer_row(axes, 1, 3, "layer m+1", "#b6d7a8")
    for i, x in enumerate(middle):
        for x0 in below[i:i + 3]:
            axes.plot([x0, x], [0, 1.5], color="black", linewidth=1, zorder=1)
    for x0 in middle:
        axes.plot([x0, top[0]], [1.5, 3], color="black", linewidth=1, zorder=1)
    axes.set_xlim(-3.5, 2.6)
    axes.set_ylim(-0.5, 3.5)
    axes.set_aspect("equal")
    axes.axis("off")
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def draw_shared_weights(path: Path) -> None:
    """One feature map: three units with the same three weights, drawn in the same colours."""
    colors = ["#c0392b", "#27ae60", "#2874a6"]
    figure, axes = plt.subplots(figsize=(6, 2.6))
    below = _layer_row(axes, 5, 0, "layer m-1", "#cfe2f3")
    middle = _layer_row(axes, 3, 1.5, "feature map\nin layer m", "#f9cb9c")
    for i, x in enumerate(middle):
        for k, x0 in enumerate(below[i:i + 3]):
            axes.plot([x0, x], [0, 1.5], color=colors[k], linewidth=2.2, zorder=1)
    for color, name in zip(colors, ["$w_1$", "$w_2$", "$w_3$"]):
        axes.plot([], [], color=color, linewidth=2.2, label=name)
    axes.legend(loc="center right", bbox_to_anchor=(1.25, 0.5), frameon=False)
    axes.set_xlim(-3.5, 2.6)
    axes.set_ylim(-0.5, 2)
    axes.set_aspect("equal")
    axes.axis("off")
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def _map_stack(axes, x: float, y: float, size: float, count: int, color: str, offset: float = 0.25):
    """``count`` square feature maps drawn as a stack; returns the front map's lower left corner."""
    from matplotlib.patches import Rectangle

    for k in reversed(range(count)):
        axes.add_patch(Rectangle((x + k * offset, y + k * offset), size, size, facecolor=color,
                                 edgecolor="black", linewidth=0.8))
    return x, y


def draw_conv_layer_notation(path: Path) -> None:
    """Layer m-1's four maps, layer m's two maps h^0, h^1, and the weights W^{k,l} between them."""
    from matplotlib.patches import Rectangle

    figure, axes = plt.subplots(figsize=(8, 3.8))
    for source in range(4):
        x = source * 1.6
        axes.add_patch(Rectangle((x, 0), 1.3, 1.3, facecolor="#cfe2f3", edgecolor="black"))
        axes.add_patch(Rectangle((x + 0.3, 0.4), 0.45, 0.45, facecolor="none", edgecolor="#c0392b",
                                 linewidth=1.5))
        axes.text(x + 0.65, -0.25, f"map {source}", ha="center", va="top", fontsize=9)
    axes.text(-0.3, 0.65, "layer m-1\n(4 maps)", ha="right", va="center", fontsize=10)
    for k, color in enumerate(["#f9cb9c", "#b6d7a8"]):
        x = 1.5 + k * 2.2
        axes.add_patch(Rectangle((x, 2.6), 1.0, 1.0, facecolor=color, edgecolor="black"))
        axes.add_patch(Rectangle((x + 0.4, 3.0), 0.16, 0.16, facecolor="black"))
        axes.text(x + 0.5, 3.75, f"$h^{k}$", ha="center", fontsize=12)
        for source in range(4):
            start = (source * 1.6 + 0.52, 0.85)
            axes.annotate("", xy=(x + 0.48, 3.0), xytext=start,
                          arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.8))
            if k == 0:
                axes.text((start[0] + x + 0.48) / 2 - 0.15, (0.85 + 3.0) / 2, f"$W^{{0,{source}}}$",
                          fontsize=9, color="dimgray")
    axes.text(0.9, 3.1, "layer m\n(2 maps)", ha="right", va="center", fontsize=10)
    axes.set_xlim(-1.8, 6.4)
    axes.set_ylim(-0.8, 4.1)
    axes.set_aspect("equal")
    axes.axis("off")
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def draw_lenet_model(path: Path) -> None:
    """The tutorial's LeNet: maps drawn to scale, the operations between them."""
    figure, axes = plt.subplots(figsize=(12, 3.4))
    scale = 0.09
    stages = [(1, 28, "#cfe2f3", "input\n1@28x28"), (20, 24, "#f9cb9c", "C1\n20@24x24"),
              (20, 12, "#f9cb9c", "P1\n20@12x12"), (50, 8, "#b6d7a8", "C2\n50@8x8"),
              (50, 4, "#b6d7a8", "P2\n50@4x4")]
    operations = ["5x5\nconv", "2x2\nmax pool", "5x5\nconv", "2x2\nmax pool", "flatten,\ntanh layer"]
    x = 0.0
    for i, (count, side, color, label) in enumerate(stages):
        shown = min(count, 6)
        size = side * scale
        _map_stack(axes, x, 1.2 - size / 2, size, shown, color, offset=0.12)
        axes.text(x + size / 2 + shown * 0.06, -0.5, label, ha="center", va="top", fontsize=9)
        right = x + size + shown * 0.12
        axes.annotate("", xy=(right + 1.1, 1.2), xytext=(right + 0.15, 1.2),
                      arrowprops=dict(arrowstyle="->"))
        axes.text(right + 0.62, 1.35, operations[i], ha="center", va="bottom", fontsize=8)
        x = right + 1.3
    for count, label, color in [(9, "hidden\n500 tanh", "#ead1dc"), (5, "output\n10 softmax", "#fff2cc")]:
        ys = np.linspace(1.2 - count * 0.13, 1.2 + count * 0.13, count)
        _units(axes, x + 0.15, ys, color, radius=0.1)
        axes.text(x + 0.15, -0.5, label, ha="center", va="top", fontsize=9)
        if count == 9:
            axes.annotate("", xy=(x + 1.3, 1.2), xytext=(x + 0.4, 1.2), arrowprops=dict(arrowstyle="->"))
            axes.text(x + 0.85, 1.35, "softmax\nlayer", ha="center", va="bottom", fontsize=8)
        x += 1.5
    axes.set_xlim(-0.2, x)
    axes.set_ylim(-1.2, 3.0)
    axes.set_aspect("equal")
    axes.axis("off")
    save_figure(figure, path, dpi=130, bbox_inches="tight")


def describe_variation(searched: dict, default: dict) -> str:
    """What a trial changed from the default network, e.g. ``pool_mode l2``; ``default`` when nothing."""
    changed = [f"{name} {' x '.join(map(str, value)) if isinstance(value, list) else value}"
               for name, value in searched.items() if name != "seed" and value != default[name]]
    return ", ".join(changed) or "default"


def draw_tuning_study(study: str, default: dict, default_label: str, path: Path) -> None:
    """One row per variation: its best validation errors over seeds; beside it, the mean learning curves."""
    import json

    trials = [json.loads(line) for line in (RESULTS / "tuning" / study / "trials.jsonl").read_text().splitlines()
              if line.strip()]
    groups: dict[str, list[dict]] = {}
    for trial in trials:
        if trial["status"] == "done":
            groups.setdefault(describe_variation(trial["searched"], default), []).append(trial)
    order = sorted(groups, key=lambda name: np.mean([t["validation"] for t in groups[name]]), reverse=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 0.5 * len(order) + 1.8),
                                         gridspec_kw={"width_ratios": [1, 1.2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, name in enumerate(order):
        errors = [t["validation"] for t in groups[name]]
        color = "black" if name == "default" else colors[row % len(colors)]
        left.plot(errors, [row] * len(errors), "o", color=color, alpha=0.6)
        left.plot(np.mean(errors), row, "|", color=color, markersize=16, markeredgewidth=2)
        curves = np.array([[h["validation"] for h in t["history"]] for t in groups[name]])
        iterations = [h["iteration"] for h in groups[name][0]["history"]]
        label = default_label if name == "default" else name
        right.plot(iterations, curves.mean(axis=0), color=color, linewidth=2.2 if name == "default" else 1.2,
                   label=label)
    left.set_yticks(range(len(order)), [default_label if name == "default" else name for name in order])
    left.set_xlabel("best validation error (%)\none dot per seed, bar: mean")
    left.grid(axis="x", alpha=0.3)
    right.set_yscale("log")
    ticks = [1, 1.5, 2, 3, 5, 10]
    right.set_yticks(ticks, [f"{t:g}" for t in ticks])
    right.minorticks_off()
    right.set_xlabel("iteration (minibatches trained)")
    right.set_ylabel("validation error (%), mean over seeds")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.tight_layout()
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
    draw_full_run("logistic_sgd", FIGURES / "logistic_sgd_full_run.png", log_scale=False)
    draw_full_run("mlp", FIGURES / "mlp_full_run.png", log_scale=True)
    draw_full_run("convolutional_mlp", FIGURES / "convolutional_mlp_full_run.png", log_scale=True)
    draw_full_run("lenet5", FIGURES / "lenet5_full_run.png", log_scale=True)
    draw_full_run("logistic_cg", FIGURES / "logistic_cg_full_run.png", log_scale=True, step="CG iteration")
    draw_mlp_network(FIGURES / "mlp_network.png")
    draw_sparse_connectivity(FIGURES / "sparse_connectivity.png")
    draw_shared_weights(FIGURES / "shared_weights.png")
    draw_conv_layer_notation(FIGURES / "conv_layer_notation.png")
    draw_lenet_model(FIGURES / "lenet_model.png")
    draw_tuning_study("seed_lenet", {"filter_sizes": [5, 5], "nkerns": [20, 50], "pool_mode": "max"},
                      "the tutorial's network", FIGURES / "tuning_seed_lenet.png")
    draw_tuning_study("lenet5_c3_subsampling", {"c3_table": "lecun", "subsampling": "lecun"},
                      "the paper's network", FIGURES / "tuning_lenet5_c3_subsampling.png")
    print(f"wrote the figures in {FIGURES}")


if __name__ == "__main__":
    main()
