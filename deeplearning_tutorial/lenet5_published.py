"""LeNet-5 trained as LeCun, Bottou, Bengio & Haffner (1998) trained it.

The network is :class:`~deeplearning_tutorial.lenet5.LeNet5` (C3's table,
trainable subsampling, ``1.7159 tanh(2a/3)``) up to F6; what changes is how
it is trained, as the paper describes it:

* **Output**: ten Euclidean RBF units on F6's 84 outputs,
  ``y_i = sum_j (x_j - w_ij)^2``, whose parameter vectors are fixed codes of
  +1 and -1: stylised 7x12 pictures of the digits (:data:`DIGIT_BITMAPS`,
  drawn after the paper's Fig. 3, ink +1, paper -1).  The recognised digit is
  the one whose code is nearest.
* **Loss**: the paper's maximum a posteriori criterion (its eq. 9),
  ``y_D + log(exp(-j) + sum_i exp(-y_i))`` for an image of digit ``D``
  (:func:`map_loss`).
* **Optimiser**: stochastic diagonal Levenberg-Marquardt, one image at a
  time: each parameter moves by ``-eta / (mu + h_kk) * dE/dw_k``, where
  ``h_kk`` estimates the diagonal of the Gauss-Newton approximation of the
  Hessian, obtained by back-propagating second derivatives
  (:func:`gauss_newton_diagonal`) over 500 images before each pass and kept
  during the pass.
* **Data**: the 60,000 training images (no validation set), the 10,000 test
  images, each 28x28 image centred in 32x32, background -0.1, ink 1.175.
* **Initial weights**: uniform in ``+-2.4 / F_i``, ``F_i`` the fan-in of the
  unit the weight belongs to (biases too, as the paper treats a bias as the
  weight of a constant input).

Run it with ``python scripts/lenet5_published.py`` (``--help`` for options).
The paper reports 0.95 % test error after 20 passes (0.35 % training error).
With the paper's ``mu = 0.02`` the first pass diverges here (every F6 unit
saturates within 500 images); ``--mu 0.2`` trains, to 1.74 % test error
after 20 passes (the LeNet-5 page gives the run and the measurements).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import graph_replace

from deeplearning_tutorial import speedups
from deeplearning_tutorial.files import atomic_write
from deeplearning_tutorial.lenet5 import LeNet5
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.ops import conv2d, pool_2d
from deeplearning_tutorial.training import StopOnSignal

# The global rate of each pass (the paper's section III.C): 2 passes at 0.0005, 3 at 0.0002,
# 3 at 0.0001, 4 at 0.00005, then 0.00001 for every further pass.
ETA_STEPS = ((2, 0.0005), (3, 0.0002), (3, 0.0001), (4, 0.00005))
ETA_AFTER = 0.00001
MU = 0.02
HESSIAN_EXAMPLES = 500
# The MAP criterion's constant: a class's penalty stops being pushed up once it is well above j,
# and the right class's penalty stops being pushed down once it is well below j (see map_loss).
J = 5.0
SCALE = 1.7159  # f(a) = SCALE * tanh(2a/3)

# The codes of the RBF units: 7 wide, 12 high, '#' ink (+1), '.' paper (-1), after the paper's Fig. 3.
DIGIT_BITMAPS = (
    (".......", "..###..", ".##.##.", "##...##", "##...##", "##...##",
     "##...##", "##...##", "##...##", ".##.##.", "..###..", "......."),
    (".......", "...##..", "..###..", ".####..", "...##..", "...##..",
     "...##..", "...##..", "...##..", "...##..", ".######", "......."),
    (".......", ".#####.", "##...##", ".....##", ".....##", "....##.",
     "...##..", "..##...", ".##....", "##.....", "#######", "......."),
    (".......", ".#####.", "##...##", ".....##", ".....##", "..####.",
     ".....##", ".....##", ".....##", "##...##", ".#####.", "......."),
    (".......", "....##.", "...###.", "..####.", ".##.##.", "##..##.",
     "#######", "....##.", "....##.", "....##.", "....##.", "......."),
    (".......", "#######", "##.....", "##.....", "######.", ".....##",
     ".....##", ".....##", ".....##", "##...##", ".#####.", "......."),
    (".......", "..####.", ".##....", "##.....", "##.....", "######.",
     "##...##", "##...##", "##...##", "##...##", ".#####.", "......."),
    (".......", "#######", ".....##", "....##.", "....##.", "...##..",
     "...##..", "..##...", "..##...", "..##...", "..##...", "......."),
    (".......", ".#####.", "##...##", "##...##", "##...##", ".#####.",
     "##...##", "##...##", "##...##", "##...##", ".#####.", "......."),
    (".......", ".#####.", "##...##", "##...##", "##...##", "##...##",
     ".######", ".....##", ".....##", "....##.", ".####..", "......."),
)
BITMAP_SHAPE = (12, 7)


def rbf_codes(bitmaps: Sequence[Sequence[str]] = DIGIT_BITMAPS) -> np.ndarray:
    """The RBF units' parameter vectors: one row of 84 values, +1 for ink and -1 for paper, per digit.

    Raises
    ------
    ValueError
        When there are not ten bitmaps, one is not 12 rows of 7 characters,
        or holds a character other than '#' and '.'.
    """
    if len(bitmaps) != 10:
        raise ValueError(f"need one bitmap per digit, 10 in all, got {len(bitmaps)}")
    rows, cols = BITMAP_SHAPE
    codes = np.empty((10, rows * cols))
    for digit, bitmap in enumerate(bitmaps):
        if len(bitmap) != rows or any(len(row) != cols for row in bitmap):
            raise ValueError(f"the bitmap of digit {digit} must be {rows} rows of {cols} characters "
                             f"(84 RBF inputs), got {len(bitmap)} rows of lengths {[len(r) for r in bitmap]}")
        text = "".join(bitmap)
        if set(text) - {"#", "."}:
            raise ValueError(f"the bitmap of digit {digit} may hold only '#' (ink) and '.' (paper), "
                             f"got {sorted(set(text) - {'#', '.'})}")
        codes[digit] = [1.0 if c == "#" else -1.0 for c in text]
    return codes


def rbf_penalties(x, codes):
    """The RBF outputs ``y[n, i] = sum_j (x[n, j] - codes[i, j])^2`` for F6's outputs ``x`` (n, 84)."""
    return (pt.sqr(x).sum(axis=1, keepdims=True) - 2 * pt.dot(x, codes.T)
            + pt.sqr(codes).sum(axis=1)[None, :])


def _log_sum_exp_neg(y, j):
    """``log(exp(-j) + sum_i exp(-y[:, i]))`` without overflow: shifted by the smallest exponent."""
    m = pt.minimum(y.min(axis=1), j)
    return -m + pt.log(pt.exp(m - j) + pt.exp(m[:, None] - y).sum(axis=1))


def map_loss(y, labels, j=J):
    """The paper's MAP criterion (eq. 9) per example: ``y_D + log(exp(-j) + sum_i exp(-y_i))``.

    The first term pulls F6's output towards the right code; the second
    pushes the other classes' penalties up, but only those not already
    above about ``j``: ``exp(-j)`` is the share of a "none of them" class
    of constant penalty ``j``.
    """
    return y[pt.arange(y.shape[0]), labels] + _log_sum_exp_neg(y, j)


def output_curvature(x, codes, j=J):
    """The diagonal of the Gauss-Newton matrix of :func:`map_loss` with respect to F6's outputs ``x``.

    The loss is seen as ``|x - w_D|^2 + L(y)``: the squared distance to the
    right code (curvature 2 on each unit) plus ``L(y) = log(exp(-j) + sum
    exp(-y_i))`` of the ten penalties (the same for every label), whose Hessian in ``y`` is ``diag(q) -
    q q^T`` with ``q_i = exp(-y_i) / (exp(-j) + sum_k exp(-y_k))``.  The
    Gauss-Newton matrix drops the penalties' own second derivatives
    (``d2y/dx2``), keeping ``J^T H J``; its diagonal is exact here:
    ``2 + 4 (sum_i q_i d_ij^2 - (sum_i q_i d_ij)^2)``, ``d_ij = x_j - w_ij``.
    """
    y = rbf_penalties(x, codes)
    q = pt.exp(-y - _log_sum_exp_neg(y, j)[:, None])
    d = x[:, None, :] - codes[None, :, :]
    return 2 + 4 * ((q[:, :, None] * pt.sqr(d)).sum(axis=1) - pt.sqr((q[:, :, None] * d).sum(axis=1)))


def squash_slope_squared(output):
    """``f'(a)^2`` from the squashing function's output ``f(a) = 1.7159 tanh(2a/3)``."""
    return pt.sqr((2.0 / 3.0) * (SCALE - pt.sqr(output) / SCALE))


def _lop(output, wrt, cotangent):
    """``cotangent^T d(output)/d(wrt)``: the vector-Jacobian product through ``output`` alone."""
    return pytensor.gradient.pullback(output, wrt, cotangent)


def gauss_newton_diagonal(network: LeNet5, curvature, squared_input=None):
    """The diagonal Gauss-Newton curvature of every parameter, back-propagated from F6's outputs.

    ``curvature`` (n, 84) is the loss's curvature on F6's outputs
    (:func:`output_curvature`).  Each layer turns the curvature ``h_a`` of its
    weighted sums into that of its parameters and inputs as the paper's
    appendix C does, keeping the diagonal only and dropping the squashing
    function's second derivative:

    * a parameter or input ``v`` gets ``sum_p (da_p/dv)^2 h_a[p]``: a
      weight the squared input it multiplies, an input its weights squared,
      summed over every weighted sum that uses it (a convolution's weight
      gets the convolution of the squared inputs with ``h_a``, through the
      gradient of :func:`~deeplearning_tutorial.ops.conv2d`; its input the
      transposed convolution of ``h_a`` with the squared filters);
    * a unit's weighted sum gets its output's curvature times ``f'(a)^2``.

    Returns
    -------
    dict
        Each of ``published_params(network)`` to its curvature, averaged over the n examples.
    """
    C1, S2, C3, S4, C5, F6 = network.layers[:6]
    n = curvature.shape[0]
    h = {}
    h_a = squash_slope_squared(F6.output) * curvature
    h[F6.W] = pt.dot(pt.sqr(F6.input).T, h_a)
    h[F6.b] = h_a.sum(axis=0)
    h_x = pt.dot(h_a, pt.sqr(F6.W).T).reshape(C5.output.shape)
    for conv, pool in ((C5, S4), (C3, S2), (C1, None)):
        h_a = squash_slope_squared(conv.output) * h_x
        bank_shape = conv.filter_shape
        h[conv.W] = _lop(conv2d(pt.sqr(conv.input), conv.filters, filter_shape=bank_shape), conv.W, h_a)
        h[conv.b] = h_a.sum(axis=(0, 2, 3))
        if pool is None:
            break
        h_x = _lop(conv2d(conv.input, pt.sqr(conv.filters), filter_shape=bank_shape), conv.input, h_a)
        h_a = squash_slope_squared(pool.output) * h_x
        sums = pool_2d(pool.input, (2, 2), ignore_border=True, mode="sum")
        h[pool.coefficient] = (pt.sqr(sums) * h_a).sum(axis=(0, 2, 3))
        h[pool.b] = h_a.sum(axis=(0, 2, 3))
        h_x = _lop(sums * pt.sqr(pool.coefficient).dimshuffle("x", 0, "x", "x"), pool.input, h_a)
    return {p: h[p] / n.astype(h[p].dtype) for p in published_params(network)}


def published_params(network: LeNet5) -> list:
    """The parameters trained here, input side first: C1, S2, C3, S4, C5, F6 (the RBF codes are fixed)."""
    return [p for layer in network.layers[:6] for p in layer.params]


def fan_ins(network: LeNet5) -> list[np.ndarray]:
    """The fan-in ``F_i`` of the unit each parameter belongs to, broadcastable to the parameter's shape."""
    C1, S2, C3, S4, C5, F6 = network.layers[:6]
    result = []
    for layer in (C1, S2, C3, S4, C5, F6):
        if layer in (S2, S4):
            result += [np.array(4.0), np.array(4.0)]
        elif layer is F6:
            n_in = F6.W.get_value(borrow=True).shape[0]
            result += [np.array(float(n_in)), np.array(float(n_in))]
        else:
            k = layer.filter_shape[-1]
            per_map = np.array([len(row) * k * k for row in layer.table], dtype=float)
            result += [per_map[layer.out_maps][:, None, None], per_map]
    return result


def initialise_as_published(network: LeNet5, rng: np.random.RandomState) -> None:
    """Draw every parameter (biases included) uniformly in ``+-2.4 / F_i``, layer after layer."""
    for param, fan_in in zip(published_params(network), fan_ins(network)):
        shape = param.get_value(borrow=True).shape
        bound = np.broadcast_to(2.4 / fan_in, shape)
        param.set_value(np.asarray(rng.uniform(-1.0, 1.0, size=shape) * bound, dtype=param.dtype), borrow=True)


def eta_schedule(n_passes: int, steps=ETA_STEPS, after: float = ETA_AFTER) -> list[float]:
    """The global rate of each of ``n_passes`` passes: ``steps`` (passes, rate) in turn, then ``after``."""
    rates = [rate for count, rate in steps for _ in range(count)]
    return (rates + [after] * n_passes)[:n_passes]


@dataclass
class Network:
    """LeNet-5 with RBF outputs on a symbolic number of images, and its compiled functions.

    Attributes
    ----------
    lenet : LeNet5
        The network up to F6 (its softmax output layer is not used).
    codes : numpy array (10, 84)
        The RBF units' fixed codes.
    params : list of shared variables
        The trained parameters (:func:`published_params`).
    x, y : pytensor variables
        The images (n, 784) and their labels (n,) the graphs are built on.
    steps : list of shared variables
        Each parameter's step sizes ``eta / (mu + h_kk)`` for the current pass.
    """

    lenet: LeNet5
    codes: np.ndarray
    params: list
    x: pt.TensorVariable
    y: pt.TensorVariable
    steps: list = field(default_factory=list)


def build_network(seed: int = 23455, j: float = J, bitmaps=DIGIT_BITMAPS):
    """LeNet-5 on a matrix ``x`` of any number of images, with the paper's initial weights.

    Returns the :class:`Network`, the symbolic penalties ``y`` (n, 10), the
    per-example MAP losses for the labels ``labels`` and the curvature
    estimate of each parameter (:func:`gauss_newton_diagonal`).
    """
    codes = rbf_codes(bitmaps)
    x = pt.matrix("x")
    labels = pt.ivector("labels")
    rng = np.random.RandomState(seed)
    lenet = LeNet5(rng, x, x.shape[0])
    net = Network(lenet, codes, published_params(lenet), x, labels)
    initialise_as_published(lenet, rng)
    codes_t = pt.constant(codes.astype(pytensor.config.floatX))
    features = lenet.F6.output
    penalties = rbf_penalties(features, codes_t)
    losses = map_loss(penalties, labels, j)
    curvature = gauss_newton_diagonal(lenet, output_curvature(features, codes_t, j))
    net.steps = [pytensor.shared(np.zeros_like(p.get_value(borrow=True)), name=f"step_{p.name}")
                 for p in net.params]
    return net, penalties, losses, curvature


class Trainer:
    """The compiled functions of one training run: SDLM on blocks of images, curvature, errors.

    ``train_block(start)`` runs through the images ``start .. start + block - 1``
    of the training set one after another, each moving every parameter by
    ``-steps * dE/dw`` before the next image is seen (a ``scan`` whose state
    is the parameters, so one call costs one dispatch for ``block`` updates);
    it returns the block's summed loss and its number of misclassified images
    (each seen before its own update).
    """

    def __init__(self, net: Network, penalties, losses, curvature, train_set, test_set, block: int, mode=None):
        mode = speedups.mode(mode)
        self.net, self.block = net, block
        self.train_x, self.train_y = train_set
        self.test_x, self.test_y = test_set
        loss = losses.sum()
        errors = pt.neq(pt.argmin(penalties, axis=1), net.y).sum()
        grads = pt.grad(loss, net.params)
        start = pt.lscalar("start")
        n = len(net.params)

        def one_image(x_t, y_t, *params_and_steps):
            params, steps = params_and_steps[:n], params_and_steps[n:]
            one = {net.x: x_t[None, :], net.y: y_t[None]} | dict(zip(net.params, params))
            loss_t, errors_t, *grads_t = graph_replace([loss, errors, *grads], one, strict=False)
            moved = [pt.specify_shape(p - s * g, p0.get_value(borrow=True).shape)
                     for p, s, g, p0 in zip(params, steps, grads_t, net.params)]
            return [*moved, loss_t, errors_t]

        stop = start + block
        outputs = pytensor.scan(one_image, sequences=[self.train_x[start:stop], self.train_y[start:stop]],
                                outputs_info=[*net.params, None, None], non_sequences=net.steps,
                                return_updates=False)
        self.train_block = pytensor.function(
            [start], [outputs[n].sum(), outputs[n + 1].sum()],
            updates=[(p, moved[-1]) for p, moved in zip(net.params, outputs[:n])], mode=mode)
        index = pt.lvector("index")
        self.curvature = pytensor.function(
            [index], [curvature[p] for p in net.params],
            givens=[(net.x, self.train_x[index])], mode=mode)
        self._errors = pytensor.function([net.x, net.y], errors, mode=mode)

    def set_steps(self, curvatures: Sequence[np.ndarray], eta: float, mu: float) -> None:
        """Every parameter's step ``eta / (mu + h_kk)`` for the coming pass."""
        for step, h in zip(self.net.steps, curvatures):
            step.set_value(np.asarray(eta / (mu + h), dtype=step.dtype))

    def error_rate(self, x, y, batch: int = 1000) -> float:
        """The fraction of the images ``x`` (a shared matrix) whose nearest code is not their label ``y``."""
        images, labels = x.get_value(borrow=True), y.eval()
        wrong = sum(int(self._errors(images[i:i + batch], labels[i:i + batch]))
                    for i in range(0, len(images), batch))
        return wrong / len(images)


def load_training_and_test(dataset="mnist.pkl.gz"):
    """The paper's data: all 60,000 training images (the tutorials' training and validation
    sets together) and the 10,000 test images, as shared (images, int32 labels) pairs."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_data(dataset)

    def shared(images, labels):
        return (pytensor.shared(np.asarray(images, dtype=pytensor.config.floatX), borrow=True),
                pytensor.shared(np.asarray(labels, dtype=np.int32), borrow=True))

    training = shared(np.concatenate([train_x.get_value(borrow=True), valid_x.get_value(borrow=True)]),
                      np.concatenate([train_y.eval(), valid_y.eval()]))
    return training, shared(test_x.get_value(borrow=True), test_y.eval())


@dataclass
class Progress:
    """Where a run stands: the pass and the next block in it, the pass's running sums, the
    curvature estimate of the pass, and one (pass, training error, test error, seconds) per pass done."""

    epoch: int = 0
    position: int = 0
    loss: float = 0.0
    errors: int = 0
    seconds: float = 0.0
    curvatures: list = field(default_factory=list)
    history: list = field(default_factory=list)


def save_checkpoint(path, config: dict, net: Network, progress: Progress) -> None:
    """Write the parameters, the curvature estimate and the progress to ``path``, atomically."""
    meta = dict(config=config, epoch=progress.epoch, position=progress.position, loss=progress.loss,
                errors=progress.errors, seconds=progress.seconds, history=progress.history)
    arrays = {f"param_{i}": p.get_value(borrow=True) for i, p in enumerate(net.params)}
    arrays |= {f"curvature_{i}": h for i, h in enumerate(progress.curvatures)}
    with atomic_write(path) as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)


def load_checkpoint(path, config: dict, net: Network) -> Progress:
    """Restore the parameters from a checkpoint of a run with the same ``config`` (``n_epochs`` may grow).

    Raises
    ------
    ValueError
        When the checkpoint was written by a run with other settings.
    """
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        mismatch = {k: (meta["config"].get(k), v) for k, v in config.items()
                    if k != "n_epochs" and meta["config"].get(k) != v}
        if mismatch:
            raise ValueError(f"{path} was written by a run with other settings "
                             f"({', '.join(f'{k}: {a!r} there, {b!r} here' for k, (a, b) in mismatch.items())}); "
                             f"run with those settings, or without --resume to start over")
        for i, p in enumerate(net.params):
            p.set_value(saved[f"param_{i}"], borrow=True)
        curvatures = [saved[f"curvature_{i}"] for i in range(len(net.params)) if f"curvature_{i}" in saved]
    return Progress(meta["epoch"], meta["position"], meta["loss"], meta["errors"], meta["seconds"],
                    curvatures, [tuple(row) for row in meta["history"]])


def check_settings(n_epochs, mu, etas, j, hessian_examples, block) -> None:
    """Raise ValueError naming the first impossible setting."""
    if not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be a positive number of passes, got {n_epochs!r}")
    if not mu > 0:
        raise ValueError(f"mu must be positive (it bounds each step by eta / mu where the curvature is 0), "
                         f"got {mu!r}")
    if len(etas) < n_epochs:
        raise ValueError(f"the eta schedule gives {len(etas)} rates for {n_epochs} passes; give one rate per "
                         f"pass (the paper's schedule, the default, keeps {ETA_AFTER} after pass 12)")
    bad = [eta for eta in etas if not eta > 0]
    if bad:
        raise ValueError(f"every eta must be positive, got {bad[0]!r}")
    if not j > 0:
        raise ValueError(f"j must be positive (exp(-j) is the share of the 'none of them' class), got {j!r}")
    if not isinstance(hessian_examples, int) or hessian_examples < 1:
        raise ValueError(f"hessian_examples must be a positive number of images, got {hessian_examples!r}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive number of images per compiled call, got {block!r}")


def format_pass(epoch: int, training_error: float, test_error: float, seconds: float) -> str:
    """The line printed after each pass, as the paper's Fig. 5 plots it."""
    return (f"pass {epoch:2d}: training error {training_error * 100:.2f} %, "
            f"test error {test_error * 100:.2f} %, {seconds:.1f} s")


def train_lenet5_as_published(n_epochs=20, dataset="mnist.pkl.gz", *, eta=(), mu=MU, j=J,
                              hessian_examples=HESSIAN_EXAMPLES, block=500, seed=23455, resume=False,
                              checkpoint_file="lenet5_published.ckpt.npz",
                              results_file="lenet5_published.json", figure_file="lenet5_published_fig5.png",
                              checkpoint_seconds=60.0):
    """Train LeNet-5 with RBF outputs, the MAP loss and stochastic diagonal Levenberg-Marquardt.

    Parameters
    ----------
    n_epochs : int
        Passes through the 60,000 training images (the paper: 20).
    dataset : str
        The tutorials' MNIST file (its training and validation sets make the 60,000).
    eta : sequence of float
        The global rate of each pass; empty: the paper's schedule
        (:func:`eta_schedule`), 0.00001 after pass 12.
    mu, j
        The Levenberg-Marquardt constant and the MAP criterion's constant.
    hessian_examples : int
        Images the curvature is estimated on before each pass, drawn anew for
        each pass from a generator seeded with ``seed + pass``.
    block : int
        Images per compiled call, updated one after another (the arithmetic does not depend on it).
    seed : int
        Seed of the RandomState the initial weights are drawn from.
    resume : bool
        Continue the run saved in ``checkpoint_file`` (exactly: same images, same order).
    checkpoint_file, results_file, figure_file
        Where the state of the run (written at least every
        ``checkpoint_seconds``, at each pass's end and on Ctrl-C), the
        per-pass errors and the plot of the paper's Fig. 5 are written.

    Returns
    -------
    Progress
        The passes done and their errors.
    """
    etas = list(eta) if len(eta) else eta_schedule(n_epochs)
    check_settings(n_epochs, mu, etas, j, hessian_examples, block)
    config = dict(dataset=str(dataset), mu=mu, j=j, eta=etas[:n_epochs], hessian_examples=hessian_examples,
                  seed=seed, floatX=pytensor.config.floatX, n_epochs=n_epochs)
    train_set, test_set = load_training_and_test(dataset)
    n_train = train_set[0].get_value(borrow=True).shape[0]
    print("... building the model")
    net, penalties, losses, curvature = build_network(seed, j)
    trainer = Trainer(net, penalties, losses, curvature, train_set, test_set, block)
    progress = Progress()
    if resume and Path(checkpoint_file).exists():
        progress = load_checkpoint(checkpoint_file, config, net)
        print(f"... resuming at pass {progress.epoch + 1}, image {progress.position}")
    for row in progress.history:
        print(format_pass(*row))
    print("... training")
    last_save = time.monotonic()
    with StopOnSignal("block of images") as stop:
        while progress.epoch < n_epochs:
            started = time.monotonic()
            if not progress.curvatures:
                chosen = np.random.RandomState(seed + progress.epoch).choice(n_train, hessian_examples, False)
                progress.curvatures = trainer.curvature(chosen)
            trainer.set_steps(progress.curvatures, etas[progress.epoch], mu)
            while progress.position < n_train and stop.requested is None:
                loss, errors = trainer.train_block(progress.position)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss} in pass {progress.epoch + 1}; "
                                             f"try smaller eta")
                progress.position = min(progress.position + block, n_train)  # the last block may be short
                progress.loss += float(loss)
                progress.errors += int(errors)
                if progress.position % 10000 == 0:
                    print(f"   pass {progress.epoch + 1}, image {progress.position}: running training error "
                          f"{progress.errors / progress.position * 100:.2f} %, mean loss "
                          f"{progress.loss / progress.position:.3f}, "
                          f"{progress.seconds + time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
                if time.monotonic() - last_save > checkpoint_seconds:
                    progress.seconds += time.monotonic() - started
                    started = time.monotonic()
                    save_checkpoint(checkpoint_file, config, net, progress)
                    last_save = time.monotonic()
            progress.seconds += time.monotonic() - started
            if stop.requested is not None:
                save_checkpoint(checkpoint_file, config, net, progress)
                print(f"Stopped in pass {progress.epoch + 1} at image {progress.position}; "
                      f"continue with --resume", file=sys.stderr)
                return progress
            row = (progress.epoch + 1, trainer.error_rate(*train_set), trainer.error_rate(*test_set),
                   progress.seconds)
            print(format_pass(*row), flush=True)
            progress = Progress(progress.epoch + 1, history=[*progress.history, row])
            save_checkpoint(checkpoint_file, config, net, progress)
            last_save = time.monotonic()
            write_results(results_file, figure_file, config, progress.history)
    return progress


def write_results(results_file, figure_file, config: dict, history) -> None:
    """The per-pass errors as JSON and the paper's Fig. 5: training and test error against passes."""
    rows = [dict(epoch=e, training_error=tr, test_error=te, seconds=s) for e, tr, te, s in history]
    with atomic_write(results_file, "w") as handle:
        json.dump(dict(program="lenet5_published", config=config, published_test_error=0.0095,
                       passes=rows), handle, indent=1)
    plot_error_curves(history, figure_file)


def plot_error_curves(history, path):
    """Training and test error (%) against the pass, as the paper's Fig. 5."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deeplearning_tutorial.utils import save_figure

    epochs = [row[0] for row in history]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.plot(epochs, [row[2] * 100 for row in history], "o-", label="test")
    axes.plot(epochs, [row[1] * 100 for row in history], "s-", label="training")
    axes.axhline(0.95, color="grey", linestyle=":", label="published test, 0.95 %")
    axes.set_xlabel("training set iterations (passes)")
    axes.set_ylabel("error rate (%)")
    axes.set_ylim(0, 1.05 * max([5.0, *(row[2] * 100 for row in history)]))
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path, dpi=100)


def draw_codes(path, bitmaps=DIGIT_BITMAPS):
    """Picture of the ten RBF codes as 7x12 bitmaps (+1 black, -1 white), for the documentation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from deeplearning_tutorial.utils import save_figure

    figure, axes = plt.subplots(1, 10, figsize=(7, 1.3))
    for digit, (ax, code) in enumerate(zip(axes, rbf_codes(bitmaps))):
        ax.imshow(code.reshape(BITMAP_SHAPE), cmap="gray_r", vmin=-1, vmax=1)
        ax.set_xticks(np.arange(-0.5, 7), minor=True)
        ax.set_yticks(np.arange(-0.5, 12), minor=True)
        ax.grid(which="minor", color="0.8", linewidth=0.3)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(str(digit), fontsize=9)
    return save_figure(figure, path, dpi=100, bbox_inches="tight")


def main(argv=None):
    """The command line: ``--n-epochs``, ``--resume`` and the other parameters of
    :func:`train_lenet5_as_published`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--n-epochs", type=int, default=20)
    parser.add_argument("--dataset", default="mnist.pkl.gz")
    parser.add_argument("--eta", type=float, nargs="+", default=[], help="one rate per pass (default: the paper's)")
    parser.add_argument("--mu", type=float, default=MU)
    parser.add_argument("--j", type=float, default=J)
    parser.add_argument("--hessian-examples", type=int, default=HESSIAN_EXAMPLES)
    parser.add_argument("--block", type=int, default=500)
    parser.add_argument("--seed", type=int, default=23455)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--checkpoint-file", default="lenet5_published.ckpt.npz")
    parser.add_argument("--results-file", default="lenet5_published.json")
    parser.add_argument("--figure-file", default="lenet5_published_fig5.png")
    args = parser.parse_args(argv)
    try:
        train_lenet5_as_published(args.n_epochs, args.dataset, eta=args.eta, mu=args.mu, j=args.j,
                                  hessian_examples=args.hessian_examples, block=args.block, seed=args.seed,
                                  resume=args.resume, checkpoint_file=args.checkpoint_file,
                                  results_file=args.results_file, figure_file=args.figure_file)
    except (ValueError, FloatingPointError, OSError) as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
