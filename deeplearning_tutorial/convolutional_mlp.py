"""LeNet-5 on MNIST: two convolution + max-pooling layers, a tanh layer, a softmax.

The network of the tutorial (a simplified LeNet-5)::

    image 28x28 -> conv 5x5, nkerns[0] maps -> max-pool 2x2 -> tanh   (12x12)
                -> conv 5x5, nkerns[1] maps -> max-pool 2x2 -> tanh   (4x4)
                -> HiddenLayer(nkerns[1]*4*4 -> 500, tanh) -> LogisticRegression(500 -> 10)

trained with minibatch SGD and the patience loop.  Published result: 0.91 %
validation and 0.92 % test error.  Convolution and pooling come from
:mod:`deeplearning_tutorial.ops` (PyTensor has none of its own).

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

from deeplearning_tutorial import cli, speedups
from deeplearning_tutorial.checkpoints import RunFiles
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.mlp import HiddenLayer
from deeplearning_tutorial.ops import conv2d, pool_2d
from deeplearning_tutorial.training import CompiledModel, ReportIterations, train
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints


# start-snippet-1
class LeNetConvPoolLayer:
    """A convolution layer followed by max pooling and a tanh: ``tanh(pool(conv(x, W)) + b)``."""

    def __init__(self, rng, input, filter_shape, image_shape, poolsize=(2, 2)):
        """
        filter_shape: (number of filters, number of input feature maps, filter height, filter width)
        image_shape: (batch size, number of input feature maps, image height, image width)
        poolsize: the max-pooling window (rows, cols)
        """
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
        pooled_out = pool_2d(input=conv_out, ws=poolsize, ignore_border=True)
        # the bias is broadcast over the minibatch and the feature map's rows and columns
        self.output = pt.tanh(pooled_out + self.b.dimshuffle("x", 0, "x", "x"))
        self.params = [self.W, self.b]
# end-snippet-1


# start-snippet-2
def lenet_layers(rng, x, nkerns, batch_size):
    """The tutorial's four layers on the image matrix ``x`` (batch_size, 784), drawn from ``rng``.

    Returns
    -------
    list
        ``[layer0, layer1, layer2, layer3]``: the two :class:`LeNetConvPoolLayer`,
        the :class:`~deeplearning_tutorial.mlp.HiddenLayer` and the
        :class:`~deeplearning_tutorial.logistic_sgd.LogisticRegression` on top.
    """
    # (batch_size, 28 * 28) -> (batch_size, 1, 28, 28)
    layer0_input = x.reshape((batch_size, 1, 28, 28))
    # 28x28 -> conv 24x24 -> pool 12x12
    layer0 = LeNetConvPoolLayer(rng, input=layer0_input, image_shape=(batch_size, 1, 28, 28),
                                filter_shape=(nkerns[0], 1, 5, 5), poolsize=(2, 2))
    # 12x12 -> conv 8x8 -> pool 4x4
    layer1 = LeNetConvPoolLayer(rng, input=layer0.output, image_shape=(batch_size, nkerns[0], 12, 12),
                                filter_shape=(nkerns[1], nkerns[0], 5, 5), poolsize=(2, 2))
    # (batch_size, nkerns[1], 4, 4) -> (batch_size, nkerns[1] * 4 * 4)
    layer2_input = layer1.output.flatten(2)
    layer2 = HiddenLayer(rng, input=layer2_input, n_in=nkerns[1] * 4 * 4, n_out=500, activation=pt.tanh)
    layer3 = LogisticRegression(input=layer2.output, n_in=500, n_out=10)
    return [layer0, layer1, layer2, layer3]
# end-snippet-2


def build_model(datasets, learning_rate=0.1, nkerns=(20, 50), batch_size=500, seed=23455, mode=None):
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

    index = pt.lscalar()
    x = pt.matrix("x")  # rasterized images
    y = pt.ivector("y")

    print("... building the model")
    layer0, layer1, layer2, layer3 = lenet_layers(rng, x, nkerns, batch_size)
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
    return CompiledModel([layer0, layer1, layer2, layer3], params, train_model, validate_model, test_model,
                         n_train_batches, n_valid_batches, n_test_batches)


def rebuild_classifier(x, config):
    """LeNet of a saved run, on the image matrix ``x``, for :func:`~deeplearning_tutorial.checkpoints.load_best_model`.

    ``config`` holds the run's arguments; the weights drawn here are replaced
    by the saved ones.  Returns the layers, the predicted classes, the
    parameters (in ``build_model``'s order) and the batch size the graph takes.
    """
    nkerns, batch_size = config["nkerns"], config["batch_size"]
    check_positive_ints("nkerns", nkerns, count=2)
    check_positive_ints("batch_size", [batch_size], count=1)
    layer0, layer1, layer2, layer3 = lenet_layers(np.random.RandomState(0), x, nkerns, batch_size)
    params = layer3.params + layer2.params + layer1.params + layer0.params
    return [layer0, layer1, layer2, layer3], layer3.y_pred, params, batch_size


def evaluate_lenet5(learning_rate=0.1, n_epochs=200, dataset="mnist.pkl.gz", nkerns=[20, 50],
                    batch_size=500, *, seed=23455, resume=False, discard_checkpoint=False,
                    checkpoint_file="convolutional_mlp.ckpt", best_model_file="best_model_lenet.npz"):
    """Train LeNet on MNIST with minibatch SGD and early stopping.

    Beyond the original: ``seed`` replaces the original's RandomState(23455)
    seed; the best model is saved to ``best_model_file`` (load it with
    :func:`~deeplearning_tutorial.checkpoints.load_best_model`); Ctrl-C or
    SIGTERM stops cleanly, ``resume=True`` continues from ``checkpoint_file``,
    and ``discard_checkpoint=True`` starts over an interrupted run's checkpoint.
    """
    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets],
                          nkerns=nkerns)
    config = dict(learning_rate=learning_rate, n_epochs=n_epochs, dataset=str(dataset),
                  nkerns=list(nkerns), batch_size=batch_size, seed=seed, floatX=pytensor.config.floatX)
    files = RunFiles("convolutional_mlp", config, checkpoint_file, best_model_file, resume=resume,
                     discard_checkpoint=discard_checkpoint)

    model = build_model(datasets, learning_rate=learning_rate, nkerns=nkerns, batch_size=batch_size, seed=seed)

    print("... training")
    state = train(model, n_epochs, patience=10000, files=files, hooks=[ReportIterations(100)])
    if state.stopped_by is not None:
        return state
    print("Optimization complete.")
    print("Best validation score of %f %% obtained at iteration %i, with test performance %f %%"
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print("The code for file " + os.path.split(__file__)[1]
          + " ran for %.2fm" % (state.elapsed / 60.0), file=sys.stderr)
    return state


def main(argv=None):
    cli.run(evaluate_lenet5, argv)


if __name__ == "__main__":
    main()
