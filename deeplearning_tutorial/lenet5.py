"""The classic LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998) on MNIST.

The network of the paper's Fig. 2::

    input 32x32 (MNIST's 28x28 padded by 2)
    -> C1: 6 maps, 5x5 convolutions        28x28     156 parameters
    -> S2: 2x2 subsampling                 14x14      12
    -> C3: 16 maps, 5x5, Table I           10x10   1,516 (2,416 with every S2 map)
    -> S4: 2x2 subsampling                   5x5      32
    -> C5: 120 maps, 5x5                     1x1  48,120
    -> F6: 84 units                                10,164
    -> 10 outputs, softmax                            850

Every unit computes a weighted sum plus a bias and passes it through the
squashing function ``f(a) = 1.7159 tanh(2a/3)`` (or plain tanh).  A
subsampling map, as in the paper, adds up each 2x2 window of its C map,
multiplies the sum by a trainable coefficient, adds a trainable bias and
squashes (``subsampling='lecun'``); any pooling kind of
:mod:`deeplearning_tutorial.ops` can replace it (``'max'`` is the tutorial's LeNet's
max pooling), without parameters.  Stochastic pooling needs non-negative
activations, so it pools the rectified maps ``max(C, 0)``; it draws in
training and takes the probability-weighted average for validation and test.

C3's map ``j`` sees only the S2 maps of row ``j`` of the connection table
(:data:`C3_TABLES`).  Its weights are stored per connection, one 5x5 filter
for each of the table's 60 pairs, and scattered into a (16, 6, 5, 5) filter
bank, zeros elsewhere, for one full convolution: the parameter count is that
of the paper, and the gradient reaches only the stored weights.

Departures from the paper, which trained with stochastic diagonal
Levenberg-Marquardt and Euclidean RBF output units: training is the
tutorials' minibatch SGD on the negative log-likelihood of a softmax, with
their patience loop.  The paper draws the initial weights uniformly in
``+-2.4 / fan_in``; with this training the signal then all but vanishes by
C5 and training makes no progress, so the weights start uniform in
``+-sqrt(3 / fan_in)``, standard deviation ``1 / sqrt(fan_in)``, which LeCun
et al.'s "Efficient BackProp" (1998) recommends for this squashing function.
The output layer starts at zero, as the tutorials' logistic regression.  The
pixels are scaled as LeCun did by default (background -0.1, foreground
1.175, so the input has mean about 0 and variance about 1);
``scaling='none'`` keeps the dataset's [0, 1) with a 0 background.

The training loop, the original's early stopping ("patience") written once
for every tutorial, is :func:`deeplearning_tutorial.training.patience_loop`.

Run it with ``python scripts/lenet5.py`` or ``python -m deeplearning_tutorial.lenet5``
(``--help`` for options, ``--summary`` for the table of layers, ``--resume``
to continue an interrupted run).  Published result: 0.95 % test error
without distortions.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.mlp import HiddenLayer
from deeplearning_tutorial.ops import conv2d, kernels, pool_2d, stochastic_pool_2d
from deeplearning_tutorial.training import CompiledModel, ReportIterations, train
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints

# Which S2 maps each C3 map sees: the paper's Table I, or all six.
C3_TABLES = {
    "lecun": (
        # maps 0-5: three contiguous S2 maps
        (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
        # maps 6-11: four contiguous
        (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
        # maps 12-14: four discontinuous; map 15: all six
        (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
        (0, 1, 2, 3, 4, 5),
    ),
    "full": tuple(tuple(range(6)) for _ in range(16)),
}


def lecun_squash(a):
    """LeCun's squashing function ``1.7159 tanh(2a/3)``: f(1) = 1 and f(-1) = -1."""
    return 1.7159 * pt.tanh(a * (2.0 / 3.0))


SQUASHING = {"lecun": lecun_squash, "tanh": pt.tanh}
# Pixel scaling: (scale, offset) applied to the dataset's values in [0, 1), and the background
SCALING = {
    "lecun": (1.275 * 256 / 255, -0.1),  # 0 -> -0.1, 255/256 (full ink) -> 1.175
    "none": (1.0, 0.0),
}
SUBSAMPLING = ("lecun", *kernels.POOL_MODES, "stochastic")
IMAGE, PADDED = 28, 32
PATIENCE_IMAGES = 10000 * 500  # the tutorial LeNet's patience, 10,000 minibatches of 500 images


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")


@dataclass(frozen=True)
class LayerShape:
    """One row of the summary: a layer's name, its output shape (maps, rows, cols) and parameter count."""

    name: str
    shape: tuple[int, ...]
    params: int


def architecture(c3_table="lecun", subsampling="lecun", filter_sizes=(5, 5, 5)) -> list[LayerShape]:
    """The layers' output shapes and parameter counts, checked before anything is built.

    Raises
    ------
    ValueError
        An unknown table or subsampling kind, or filter sizes that do not fit
        (the error names the layer and the sizes).
    """
    _choice("c3_table", c3_table, C3_TABLES)
    _choice("subsampling", subsampling, SUBSAMPLING)
    if len(filter_sizes) != 3 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                         for k in filter_sizes):
        raise ValueError(f"filter_sizes must be three positive integers (C1, C3, C5), got {list(filter_sizes)!r}")
    table = C3_TABLES[c3_table]
    s_params = 2 if subsampling == "lecun" else 0  # per map: coefficient and bias
    layers = [LayerShape("input", (1, PADDED, PADDED), 0)]
    size = PADDED
    convolutions = [("C1", 6, 6 * 1), ("C3", 16, sum(map(len, table))), ("C5", 120, 120 * 16)]
    for (name, maps, connections), k in zip(convolutions, filter_sizes):
        if k > size:
            raise ValueError(f"{name}'s {k}x{k} filters do not fit its {size}x{size} input; "
                             f"use filter sizes of at most {size} there")
        size = size - k + 1
        layers.append(LayerShape(name, (maps, size, size), connections * k * k + maps))
        if name != "C5":
            if size < 2:
                raise ValueError(f"S{int(name[1]) + 1} cannot subsample {name}'s {size}x{size} maps by 2x2; "
                                 f"use smaller filters before it")
            size //= 2
            layers.append(LayerShape(f"S{int(name[1]) + 1}", (maps, size, size), s_params * maps))
    c5_units = 120 * size * size
    layers += [LayerShape("F6", (84,), c5_units * 84 + 84), LayerShape("output", (10,), 84 * 10 + 10)]
    return layers


def format_summary(layers: list[LayerShape]) -> str:
    """The per-layer table that ``--summary`` prints."""
    lines = [f"{'layer':<8}{'output shape':<16}{'parameters':>12}"]
    for layer in layers:
        lines.append(f"{layer.name:<8}{'x'.join(map(str, layer.shape)):<16}{layer.params:>12,}")
    lines.append(f"{'total':<24}{sum(layer.params for layer in layers):>12,}")
    return "\n".join(lines)


def _uniform(rng, fan_in, size):
    """Weights uniform in +-sqrt(3 / fan_in): standard deviation 1 / sqrt(fan_in), which keeps
    weighted sums of unit-variance inputs at unit variance (see the module docstring)."""
    bound = np.sqrt(3.0 / np.asarray(fan_in, dtype=float))
    return np.asarray(rng.uniform(-1.0, 1.0, size=size) * bound, dtype=pytensor.config.floatX)


# start-snippet-1
class ConvolutionLayer:
    """``squash(conv(x, W) + b)`` where output map j sees the input maps ``table[j]``.

    ``W`` holds one filter per connection, (connections, k, k); it is scattered
    into the full (maps out, maps in, k, k) filter bank, zeros elsewhere.
    """

    def __init__(self, rng, input, table, n_in_maps, filter_size, squash):
        self.input = input
        self.table = table
        n_out = len(table)
        k = filter_size
        self.out_maps = np.repeat(np.arange(n_out), [len(row) for row in table])
        self.in_maps = np.concatenate([np.asarray(row) for row in table])
        fan_in = np.repeat([len(row) * k * k for row in table], [len(row) for row in table])
        self.W = pytensor.shared(_uniform(rng, fan_in[:, None, None], (len(self.in_maps), k, k)), name="W",
                                 borrow=True)
        self.b = pytensor.shared(np.zeros(n_out, dtype=pytensor.config.floatX), name="b", borrow=True)
        self.filter_shape = (n_out, n_in_maps, k, k)
        if len(self.in_maps) == n_out * n_in_maps:  # every map sees every input map, in order
            self.filters = self.W.reshape(self.filter_shape)
        else:
            bank = pt.zeros(self.filter_shape, dtype=self.W.dtype)
            self.filters = pt.set_subtensor(bank[self.out_maps, self.in_maps], self.W)
        self.squash = squash
        self.output = self(input)
        self.params = [self.W, self.b]

    def __call__(self, input):
        return self.squash(conv2d(input, self.filters, filter_shape=self.filter_shape)
                           + self.b.dimshuffle("x", 0, "x", "x"))
# end-snippet-1


class SubsamplingLayer:
    """2x2 subsampling: the paper's ``squash(coefficient * window sum + bias)`` per map
    (``kind='lecun'``), or a pooling kind of :mod:`deeplearning_tutorial.ops` without parameters."""

    def __init__(self, rng, input, n_maps, kind, squash, draws=None):
        self.input, self.kind, self.squash, self.draws = input, kind, squash, draws
        self.params = []
        if kind == "lecun":
            self.coefficient = pytensor.shared(_uniform(rng, 4, n_maps), name="coefficient", borrow=True)
            self.b = pytensor.shared(np.zeros(n_maps, dtype=pytensor.config.floatX), name="b", borrow=True)
            self.params = [self.coefficient, self.b]
        self.output = self(input, deterministic=True)

    def __call__(self, input, deterministic):
        if self.kind == "lecun":
            sums = pool_2d(input, (2, 2), ignore_border=True, mode="sum")
            return self.squash(sums * self.coefficient.dimshuffle("x", 0, "x", "x")
                               + self.b.dimshuffle("x", 0, "x", "x"))
        if self.kind == "stochastic":
            return stochastic_pool_2d(pt.maximum(input, 0), (2, 2), rng=self.draws, deterministic=deterministic)
        return pool_2d(input, (2, 2), ignore_border=True, mode=self.kind)


class LeNet5:
    """LeNet-5 on a minibatch of MNIST images ``input`` (batch_size, 784).

    ``y_pred``, ``p_y_given_x`` and :meth:`errors` are the network's
    predictions (stochastic pooling: its test-time average);
    :meth:`negative_log_likelihood` is the training cost (with stochastic
    pooling: drawn anew at each call of a compiled function).  ``layers``
    lists C1, S2, C3, S4, C5, F6 and the output layer; ``params`` their
    parameters, output layer first as in the tutorials.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Draws the initial weights, layer after layer (and, for stochastic
        pooling, the seeds of its two random generators).
    input : pytensor matrix
        Symbolic (batch_size, 784) images with pixels in [0, 1).
    batch_size : int
        The number of images the graph is built for.
    c3_table, subsampling, squashing, scaling, filter_sizes
        The network, as in :func:`train_lenet5`.

    Attributes
    ----------
    summary : list of LayerShape
        Each layer's output shape and parameter count (:func:`architecture`).
    padded_input : pytensor 4-D tensor
        The scaled images, padded to (batch_size, 1, 32, 32).
    C1, S2, C3, S4, C5, F6, output_layer
        The layers.
    layers, params : list
        The layers in order, and their parameters.
    p_y_given_x, y_pred
        The output layer's class probabilities and predicted classes.

    Raises
    ------
    ValueError
        For an unknown table, subsampling, squashing or scaling, or filter
        sizes that do not fit (:func:`architecture`).
    """

    def __init__(self, rng, input, batch_size, c3_table="lecun", subsampling="lecun", squashing="lecun",
                 scaling="lecun", filter_sizes=(5, 5, 5)):
        _choice("squashing", squashing, SQUASHING)
        _choice("scaling", scaling, SCALING)
        self.summary = architecture(c3_table, subsampling, filter_sizes)
        self.input = input
        squash = SQUASHING[squashing]
        scale, offset = SCALING[scaling]
        # (batch, 784) in [0, 1) -> (batch, 1, 32, 32), the 2-pixel border at the background level
        images = (input * scale + offset).reshape((batch_size, 1, IMAGE, IMAGE))
        border = (PADDED - IMAGE) // 2
        padded = pt.set_subtensor(
            pt.full((batch_size, 1, PADDED, PADDED), offset, dtype=input.dtype)[:, :, border:-border, border:-border],
            images)
        self.padded_input = padded

        k1, k3, k5 = filter_sizes
        draws = [pt.random.shared_rng(np.random.default_rng(rng.randint(2**31))) if subsampling == "stochastic"
                 else None for _ in range(2)]
        self.C1 = ConvolutionLayer(rng, padded, ((0,),) * 6, 1, k1, squash)
        self.S2 = SubsamplingLayer(rng, self.C1.output, 6, subsampling, squash, draws[0])
        self.C3 = ConvolutionLayer(rng, self.S2.output, C3_TABLES[c3_table], 6, k3, squash)
        self.S4 = SubsamplingLayer(rng, self.C3.output, 16, subsampling, squash, draws[1])
        self.C5 = ConvolutionLayer(rng, self.S4.output, (tuple(range(16)),) * 120, 16, k5, squash)
        c5_units = int(np.prod(self.summary[-3].shape))
        self.F6 = HiddenLayer(rng, self.C5.output.flatten(2), c5_units, 84,
                              W=pytensor.shared(_uniform(rng, c5_units, (c5_units, 84)), name="W", borrow=True),
                              activation=squash)
        self.output_layer = LogisticRegression(self.F6.output, 84, 10)
        self.layers = [self.C1, self.S2, self.C3, self.S4, self.C5, self.F6, self.output_layer]
        self.params = [p for layer in reversed(self.layers) for p in layer.params]
        self.p_y_given_x = self.output_layer.p_y_given_x
        self.y_pred = self.output_layer.y_pred
        self.errors = self.output_layer.errors
        self._training_p_y_given_x = (self._stochastic_forward(padded) if subsampling == "stochastic"
                                      else self.p_y_given_x)

    def _stochastic_forward(self, padded):
        """The class probabilities with the subsampling layers drawing (training)."""
        s2 = self.S2(self.C1(padded), deterministic=False)
        s4 = self.S4(self.C3(s2), deterministic=False)
        hidden = self.C5.squash(pt.dot(self.C5(s4).flatten(2), self.F6.W) + self.F6.b)
        return pt.special.softmax(pt.dot(hidden, self.output_layer.W) + self.output_layer.b, axis=-1)

    def negative_log_likelihood(self, y):
        """The training cost: mean negative log-probability of the labels ``y``."""
        p = self._training_p_y_given_x
        return -pt.mean(pt.log(p)[pt.arange(y.shape[0]), y])


def build_model(datasets, learning_rate=0.05, batch_size=100, *, c3_table="lecun", subsampling="lecun",
                squashing="lecun", scaling="lecun", filter_sizes=(5, 5, 5), seed=23455, mode=None):
    """Build LeNet-5 and compile its minibatch functions.

    Parameters
    ----------
    datasets
        What :func:`~deeplearning_tutorial.logistic_sgd.load_data` returned.
    learning_rate, batch_size
        The SGD step size and the examples per minibatch.
    c3_table, subsampling, squashing, scaling, filter_sizes
        The network, as in :func:`train_lenet5`.
    seed
        Seed of the RandomState all weights are drawn from, layer after layer.
    mode
        The PyTensor mode the functions are compiled in, with the package's
        speed-ups (:func:`deeplearning_tutorial.speedups.mode`); None:
        PyTensor's default mode.

    Returns
    -------
    CompiledModel
        The :class:`LeNet5` (``classifier``), its parameters, the three
        compiled minibatch functions and the number of minibatches of each split.
    """
    mode = speedups.mode(mode)
    rng = np.random.RandomState(seed)
    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size

    index = pt.lscalar()
    x = pt.matrix("x")
    y = pt.ivector("y")

    print("... building the model")
    network = LeNet5(rng, x, batch_size, c3_table=c3_table, subsampling=subsampling, squashing=squashing,
                     scaling=scaling, filter_sizes=tuple(filter_sizes))
    cost = network.negative_log_likelihood(y)

    def minibatch(data):
        return data[index * batch_size: (index + 1) * batch_size]

    test_model = pytensor.function([index], network.errors(y),
                                   givens={x: minibatch(test_set_x), y: minibatch(test_set_y)}, mode=mode)
    validate_model = pytensor.function([index], network.errors(y),
                                       givens={x: minibatch(valid_set_x), y: minibatch(valid_set_y)}, mode=mode)
    grads = pt.grad(cost, network.params)
    updates = [(p, p - learning_rate * g) for p, g in zip(network.params, grads)]
    train_model = pytensor.function([index], cost, updates=updates,
                                    givens={x: minibatch(train_set_x), y: minibatch(train_set_y)}, mode=mode)
    return CompiledModel(network, network.params, train_model, validate_model, test_model,
                         n_train_batches, n_valid_batches, n_test_batches)


def rebuild_classifier(x, config):
    """LeNet-5 of a saved run on the image matrix ``x``, for :func:`~.programs.load_best_model`.

    ``config`` holds the run's arguments; the weights drawn here are replaced
    by the saved ones.  Returns the :class:`LeNet5`, its predicted classes,
    its parameters (in ``build_model``'s order) and the batch size the graph takes.
    """
    batch_size = config["batch_size"]
    check_positive_ints("batch_size", [batch_size], count=1)
    network = LeNet5(np.random.RandomState(0), x, batch_size, c3_table=config["c3_table"],
                     subsampling=config["subsampling"], squashing=config["squashing"], scaling=config["scaling"],
                     filter_sizes=tuple(config["filter_sizes"]))
    return network, network.y_pred, network.params, batch_size


def train_lenet5(learning_rate=0.05, n_epochs=60, dataset="mnist.pkl.gz", batch_size=100, *,
                 c3_table="lecun", subsampling="lecun", squashing="lecun", scaling="lecun",
                 filter_sizes=(5, 5, 5), summary=False, seed=23455):
    """Train the classic LeNet-5 on MNIST with minibatch SGD and early stopping.

    Parameters
    ----------
    learning_rate, n_epochs, dataset, batch_size
        As in the tutorials' ``evaluate_lenet5``.  The patience (in minibatches)
        is that of the tutorial's LeNet in images, 10,000 minibatches of 500:
        ``5,000,000 // batch_size``.
    c3_table : {'lecun', 'full'}
        C3's connections: the paper's Table I or every S2 map.
    subsampling : {'lecun', 'max', 'sum', 'average_inc_pad', 'average_exc_pad', 'l2', 'stochastic'}
        The paper's trainable subsampling, or a pooling kind without parameters.
    squashing : {'lecun', 'tanh'}
        ``1.7159 tanh(2a/3)`` or ``tanh(a)``.
    scaling : {'lecun', 'none'}
        Pixels scaled to background -0.1 / foreground 1.175, or left in [0, 1).
    filter_sizes : three ints
        The filter sizes of C1, C3 and C5.
    summary : bool
        Print the table of layers (output shape, parameters) and return without training.
    seed : int
        Seed of the RandomState all weights are drawn from.

    Returns
    -------
    LoopState or list of LayerShape
        The final state of the patience loop (``stopped_by`` set when Ctrl-C
        or SIGTERM stopped it); with ``summary``, the layers.

    Raises
    ------
    ValueError
        Unknown table, kind or function names, filter sizes that do not fit
        (all before the data are loaded), impossible hyper-parameters; all
        before anything is compiled.
    DatasetError
        When the dataset cannot be loaded (see
        :func:`~deeplearning_tutorial.logistic_sgd.load_data`).
    DivergenceError
        When the training cost becomes NaN or infinite.
    """
    layers = architecture(c3_table, subsampling, filter_sizes)
    _choice("squashing", squashing, SQUASHING)
    _choice("scaling", scaling, SCALING)
    if summary:
        print(format_summary(layers))
        return layers

    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets])

    model = build_model(datasets, learning_rate=learning_rate, batch_size=batch_size, c3_table=c3_table,
                        subsampling=subsampling, squashing=squashing, scaling=scaling,
                        filter_sizes=filter_sizes, seed=seed)

    print("... training")
    state = train(model, n_epochs, patience=PATIENCE_IMAGES // batch_size, hooks=[ReportIterations(100)])
    if state.stopped_by is not None:
        return state
    print("Optimization complete.")
    print("Best validation score of %f %% obtained at iteration %i, with test performance %f %%"
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print("The code for file " + os.path.split(__file__)[1]
          + " ran for %.2fm" % (state.elapsed / 60.0), file=sys.stderr)
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("lenet5")
