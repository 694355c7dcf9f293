"""LeNet-5 on MNIST: two convolution + max-pooling layers, a tanh layer, a softmax.

The network of the tutorial (a simplified LeNet-5)::

    image 28x28 -> conv 5x5, nkerns[0] maps -> max-pool 2x2 -> tanh   (12x12)
                -> conv 5x5, nkerns[1] maps -> max-pool 2x2 -> tanh   (4x4)
                -> HiddenLayer(nkerns[1]*4*4 -> 500, tanh) -> LogisticRegression(500 -> 10)

trained with minibatch SGD and the patience loop.  Published result: 0.91 %
validation and 0.92 % test error.  Convolution and pooling come from
:mod:`deeplearning_tutorial.ops` (PyTensor has none of its own).

The training loop, the original's early stopping ("patience") written once
for every tutorial, is :func:`deeplearning_tutorial.training.patience_loop`.

Run it with ``python scripts/convolutional_mlp.py`` or
``python -m deeplearning_tutorial.convolutional_mlp`` (``--help`` for options;
``--resume`` continues an interrupted run).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.mlp import HiddenLayer
from deeplearning_tutorial.ops import conv2d, kernels, pool_2d
from deeplearning_tutorial.training import CompiledModel, ReportIterations, train
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints


# start-snippet-1
class LeNetConvPoolLayer:
    """A convolution layer followed by max pooling and a tanh: ``tanh(pool(conv(x, W)) + b)``.

    The filters are drawn from ``rng`` uniformly in
    ``+-sqrt(6 / (fan_in + fan_out))``, where ``fan_in`` is input maps x
    filter height x filter width and ``fan_out`` is filters x filter height x
    filter width / pooling window size; the biases start at zero.  Pooling
    uses ``ignore_border=True``.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Draws the initial filters.
    input : pytensor 4-D tensor
        Symbolic input of shape ``image_shape``.
    filter_shape : tuple of 4 ints
        (number of filters, number of input feature maps, filter height, filter width).
    image_shape : tuple of 4 ints
        (batch size, number of input feature maps, image height, image width);
        its input feature maps must be ``filter_shape[1]`` (asserted).
    poolsize : (int, int)
        The pooling window (rows, cols).
    pool_stride : (int, int) or None
        Beyond the original: the pooling's strides; None: the window.
    pool_mode : str
        Beyond the original: a :func:`~deeplearning_tutorial.ops.pool_2d`
        mode ('max', the original's, by default).

    Attributes
    ----------
    W, b : shared variables
        The filters (``filter_shape``) and one bias per filter, floatX.
    output : pytensor 4-D tensor
        (batch size, filters, pooled rows, pooled cols).
    params : list
        ``[W, b]``.
    input
        The ``input`` given.
    """

    def __init__(self, rng, input, filter_shape, image_shape, poolsize=(2, 2), *, pool_stride=None, pool_mode="max"):
        assert image_shape[1] == filter_shape[1]
        self.input = input

        # each hidden unit sees n_input_maps * fh * fw inputs; each lower unit
        # receives gradients from n_filters * fh * fw / pooling size units
        fan_in = np.prod(filter_shape[1:])
        fan_out = filter_shape[0] * np.prod(filter_shape[2:]) // np.prod(poolsize)
        W_bound = np.sqrt(6.0 / (fan_in + fan_out))
        self.W = pytensor.shared(
            np.asarray(rng.uniform(low=-W_bound, high=W_bound, size=filter_shape),
                       dtype=pytensor.config.floatX),
            borrow=True,
        )
        b_values = np.zeros((filter_shape[0],), dtype=pytensor.config.floatX)
        self.b = pytensor.shared(value=b_values, borrow=True)

        conv_out = conv2d(input=input, filters=self.W, filter_shape=filter_shape, input_shape=image_shape)
        pooled_out = pool_2d(input=conv_out, ws=poolsize, ignore_border=True, stride=pool_stride, mode=pool_mode)
        # the bias is broadcast over the minibatch and the feature map's rows and columns
        self.output = pt.tanh(pooled_out + self.b.dimshuffle("x", 0, "x", "x"))
        self.params = [self.W, self.b]
# end-snippet-1


POOL_MODES = tuple(kernels.POOL_MODES)  # the deterministic modes of pool_2d


def _pairs(name, values):
    """Two (rows, cols) pairs, one per convolution layer, from ints (squares) or pairs, as the
    command line gives ints."""
    if len(values) != 2:
        raise ValueError(f"{name} needs 2 entries, one per convolution layer; got {list(values)!r}")
    pairs = [tuple(v) if isinstance(v, (list, tuple)) else (v, v) for v in values]
    if not all(len(p) == 2 and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in p)
               for p in pairs):
        raise ValueError(f"{name} must be positive integers or (rows, cols) pairs of them; got {list(values)!r}")
    return pairs


def feature_map_sizes(filter_sizes, poolsizes, pool_strides, image=(28, 28)):
    """The (rows, cols) after each convolution + pooling layer; ValueError naming the layer
    whose map would shrink below 1x1."""
    sizes, size = [], image
    for layer, (k, ws, st) in enumerate(zip(filter_sizes, poolsizes, pool_strides)):
        conv = (size[0] - k[0] + 1, size[1] - k[1] + 1)
        if min(conv) < 1:
            raise ValueError(f"layer{layer}: {k[0]}x{k[1]} filters do not fit its {size[0]}x{size[1]} input")
        if ws[0] > conv[0] or ws[1] > conv[1]:
            raise ValueError(f"layer{layer}: the {ws[0]}x{ws[1]} pooling window does not fit its "
                             f"{conv[0]}x{conv[1]} convolution output (input {size[0]}x{size[1]}, "
                             f"{k[0]}x{k[1]} filters)")
        size = ((conv[0] - ws[0]) // st[0] + 1, (conv[1] - ws[1]) // st[1] + 1)
        sizes.append(size)
    return sizes


def network_options(filter_sizes=(5, 5), poolsizes=((2, 2), (2, 2)), pool_strides=None, pool_mode="max",
                    n_hidden=500):
    """Check LeNet's tunable network and put it in the form :func:`lenet_layers` takes.

    Parameters
    ----------
    filter_sizes, poolsizes, pool_strides
        One entry per convolution layer: an int (a square) or a (rows, cols)
        pair; ``pool_strides`` None (or equal to the windows) means the
        window, smaller strides overlap.
    pool_mode
        A ``pool_2d`` mode, 'l2' included.
    n_hidden
        Units of the tanh layer.

    Returns
    -------
    dict
        The same keys, with (rows, cols) tuples and ``pool_strides`` None
        when the strides are the windows.

    Raises
    ------
    ValueError
        Saying which option is wrong, or which layer's map would shrink below 1x1.
    """
    filter_sizes, poolsizes = _pairs("filter_sizes", filter_sizes), _pairs("poolsizes", poolsizes)
    pool_strides = poolsizes if pool_strides is None else _pairs("pool_strides", pool_strides)
    if pool_mode not in POOL_MODES:
        raise ValueError(f"pool_mode must be one of {', '.join(POOL_MODES)}; got {pool_mode!r} (stochastic pooling "
                         f"needs non-negative activations: see deeplearning_tutorial.lenet5 --subsampling stochastic)")
    check_positive_ints("n_hidden", [n_hidden], count=1)
    feature_map_sizes(filter_sizes, poolsizes, pool_strides)
    return dict(filter_sizes=filter_sizes, poolsizes=poolsizes,
                pool_strides=None if pool_strides == poolsizes else pool_strides, pool_mode=pool_mode,
                n_hidden=n_hidden)


ORIGINAL_NETWORK = network_options()


# start-snippet-2
def lenet_layers(rng, x, nkerns, batch_size, network=ORIGINAL_NETWORK):
    """The tutorial's four layers on the image matrix ``x`` (batch_size, 784), drawn from ``rng``.

    ``network`` is what :func:`network_options` returned; the default is the
    tutorial's (5x5 filters, 2x2 max pooling, 500 hidden units).

    Returns
    -------
    list
        ``[layer0, layer1, layer2, layer3]``: the two :class:`LeNetConvPoolLayer`,
        the :class:`~deeplearning_tutorial.mlp.HiddenLayer` and the
        :class:`~deeplearning_tutorial.logistic_sgd.LogisticRegression` on top.
    """
    filter_sizes, poolsizes, strides = network["filter_sizes"], network["poolsizes"], network["pool_strides"]
    pool_mode, n_hidden = network["pool_mode"], network["n_hidden"]
    (h0, w0), (h1, w1) = feature_map_sizes(filter_sizes, poolsizes, strides or poolsizes)
    # (batch_size, 28 * 28) -> (batch_size, 1, 28, 28)
    layer0_input = x.reshape((batch_size, 1, 28, 28))
    # by default 28x28 -> conv 24x24 -> pool 12x12
    layer0 = LeNetConvPoolLayer(rng, input=layer0_input, image_shape=(batch_size, 1, 28, 28),
                                filter_shape=(nkerns[0], 1, *filter_sizes[0]), poolsize=poolsizes[0],
                                pool_stride=strides and strides[0], pool_mode=pool_mode)
    # by default 12x12 -> conv 8x8 -> pool 4x4
    layer1 = LeNetConvPoolLayer(rng, input=layer0.output, image_shape=(batch_size, nkerns[0], h0, w0),
                                filter_shape=(nkerns[1], nkerns[0], *filter_sizes[1]), poolsize=poolsizes[1],
                                pool_stride=strides and strides[1], pool_mode=pool_mode)
    # (batch_size, nkerns[1], 4, 4) -> (batch_size, nkerns[1] * 4 * 4)
    layer2_input = layer1.output.flatten(2)
    layer2 = HiddenLayer(rng, input=layer2_input, n_in=nkerns[1] * h1 * w1, n_out=n_hidden, activation=pt.tanh)
    layer3 = LogisticRegression(input=layer2.output, n_in=n_hidden, n_out=10)
    return [layer0, layer1, layer2, layer3]
# end-snippet-2


def build_model(datasets, learning_rate=0.1, nkerns=(20, 50), batch_size=500, seed=23455, mode=None,
                network=ORIGINAL_NETWORK):
    """Build LeNet and compile its minibatch functions.

    Parameters
    ----------
    datasets
        What :func:`~deeplearning_tutorial.logistic_sgd.load_data` returned.
    learning_rate
        The SGD step size.
    nkerns
        Feature maps of the two convolution layers.
    batch_size
        Examples per minibatch (the graph is built for exactly this many).
    seed
        Seed of the RandomState all weights are drawn from, layer after layer.
    mode
        The PyTensor mode the functions are compiled in, with the package's
        speed-ups included (:func:`deeplearning_tutorial.speedups.mode`); None:
        PyTensor's default mode.
    network
        The tunable network, as :func:`network_options` returned it.

    Returns
    -------
    CompiledModel
        The layers (``classifier`` is ``[layer0, layer1, layer2, layer3]``),
        their parameters, the three compiled minibatch functions and the
        number of minibatches of each split.
    """
    mode = speedups.mode(mode)
    rng = np.random.RandomState(seed)
    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]

    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size

    # [start-train-model]
    index = pt.lscalar()
    x = pt.matrix("x")  # rasterized images
    y = pt.ivector("y")

    print("... building the model")
    layer0, layer1, layer2, layer3 = lenet_layers(rng, x, nkerns, batch_size, network)
    cost = layer3.negative_log_likelihood(y)

    def minibatch(data):
        return data[index * batch_size : (index + 1) * batch_size]

    test_model = pytensor.function(
        [index], layer3.errors(y), givens={x: minibatch(test_set_x), y: minibatch(test_set_y)}, mode=mode,
    )
    validate_model = pytensor.function(
        [index], layer3.errors(y), givens={x: minibatch(valid_set_x), y: minibatch(valid_set_y)}, mode=mode,
    )
    params = layer3.params + layer2.params + layer1.params + layer0.params
    grads = pt.grad(cost, params)
    updates = [(param_i, param_i - learning_rate * grad_i) for param_i, grad_i in zip(params, grads)]
    train_model = pytensor.function(
        [index], cost, updates=updates, givens={x: minibatch(train_set_x), y: minibatch(train_set_y)},
        mode=mode,
    )
    # [end-train-model]
    return CompiledModel([layer0, layer1, layer2, layer3], params, train_model, validate_model, test_model,
                         n_train_batches, n_valid_batches, n_test_batches)


def rebuild_classifier(x, config):
    """LeNet of a saved run, on the image matrix ``x``, for :func:`~deeplearning_tutorial.programs.load_best_model`.

    ``config`` holds the run's arguments (the network's options only where
    they are not the tutorial's); the weights drawn here are replaced
    by the saved ones.  Returns the layers, the predicted classes, the
    parameters (in ``build_model``'s order) and the batch size the graph takes.
    """
    nkerns, batch_size = config["nkerns"], config["batch_size"]
    check_positive_ints("nkerns", nkerns, count=2)
    check_positive_ints("batch_size", [batch_size], count=1)
    network = network_options(**{key: config[key] for key in ORIGINAL_NETWORK if key in config})
    layer0, layer1, layer2, layer3 = lenet_layers(np.random.RandomState(0), x, nkerns, batch_size, network)
    params = layer3.params + layer2.params + layer1.params + layer0.params
    return [layer0, layer1, layer2, layer3], layer3.y_pred, params, batch_size


def evaluate_lenet5(learning_rate=0.1, n_epochs=200, dataset="mnist.pkl.gz", nkerns=[20, 50],  # noqa: B006 (the original's signature)
                    batch_size=500, *, filter_sizes=(5, 5), poolsizes=((2, 2), (2, 2)),
                    pool_strides: tuple | None = None, pool_mode="max", n_hidden=500, seed=23455):
    """Train LeNet on MNIST with minibatch SGD and early stopping.

    The training is the patience loop of
    :func:`~deeplearning_tutorial.training.patience_loop`, with a patience
    of 10000 minibatches and a ``training @ iter`` line every 100 iterations,
    as in the original.  Beyond the original: ``seed`` (the original's
    RandomState(23455) by default) and the network's shape are arguments:
    ``filter_sizes`` (one per convolution layer, an int for a square or a
    pair), ``poolsizes`` and ``pool_strides`` (None: the window; smaller
    strides overlap), ``pool_mode`` (a ``pool_2d`` mode, 'l2' included) and
    ``n_hidden``; combinations that shrink a map below 1x1 are refused
    before anything is loaded or compiled.

    Parameters
    ----------
    learning_rate : float
        The SGD step size.
    n_epochs : int
        The most epochs (passes over the training set) to train.
    dataset : str or path-like
        The dataset, as :func:`~deeplearning_tutorial.logistic_sgd.load_data` takes it.
    nkerns : list of 2 ints
        Feature maps of the two convolution layers.
    batch_size : int
        Examples per minibatch.
    filter_sizes, poolsizes, pool_strides, pool_mode, n_hidden
        The tunable network, as :func:`network_options` takes it.
    seed : int
        Seed of the RandomState all weights are drawn from.

    Returns
    -------
    LoopState
        The final state of the patience loop
        (:class:`~deeplearning_tutorial.training.LoopState`): the best
        validation error, its iteration and test error, the history of
        validations, and ``stopped_by``, the signal that stopped the run
        early, or None.

    Raises
    ------
    ValueError
        For a network that :func:`network_options` refuses, before the data
        are loaded, and for hyper-parameters no run can use (a learning rate
        not > 0, an ``n_epochs`` or ``batch_size`` not a positive integer, a
        minibatch larger than a split, ``nkerns`` not two positive
        integers), before anything is compiled.
    DatasetError
        When the dataset cannot be loaded (see
        :func:`~deeplearning_tutorial.logistic_sgd.load_data`).
    DivergenceError
        When the training cost becomes NaN or infinite.
    """
    network = network_options(filter_sizes, poolsizes, pool_strides, pool_mode, n_hidden)
    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets],
                          nkerns=nkerns)

    model = build_model(datasets, learning_rate=learning_rate, nkerns=nkerns, batch_size=batch_size, seed=seed,
                        network=network)

    print("... training")
    state = train(model, n_epochs, patience=10000, hooks=[ReportIterations(100)])
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

    run("convolutional_mlp")
