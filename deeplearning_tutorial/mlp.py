"""A multilayer perceptron on MNIST: one tanh hidden layer below logistic regression.

Trained like logistic_sgd (minibatch SGD, ``givens``, the patience loop), with
L1 and L2 penalties on the weights.  Published result: 1.69 % validation and
1.65 % test error.

The training loop, the original's early stopping ("patience") written once
for every tutorial, is :func:`deeplearning_tutorial.training.patience_loop`.

Run it with ``python scripts/mlp.py`` or ``python -m deeplearning_tutorial.mlp``
(``--help`` for options; ``--resume`` continues an interrupted run).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.training import CompiledModel, train
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints


# start-snippet-1
def sigmoid_weights(rng, n_in, n_out, name="W"):
    """A shared floatX (n_in, n_out) weight matrix drawn from ``rng`` uniformly in
    ``+-4 sqrt(6 / (n_in + n_out))``: the sigmoid's range of Glorot and Bengio (2010),
    as the original's autoencoders and RBM draw their weights (in one draw, not the
    tanh range times four as :class:`HiddenLayer` does)."""
    bound = 4 * np.sqrt(6.0 / (n_in + n_out))
    values = np.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)), dtype=pytensor.config.floatX)
    return pytensor.shared(value=values, name=name, borrow=True)


class HiddenLayer:
    """A fully connected layer: ``activation(dot(input, W) + b)``.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Draws the initial weights.
    input : pytensor matrix
        Symbolic (n_examples, n_in) input.
    n_in, n_out : int
        Units below and in this layer.
    W, b : shared variables, optional
        Existing (n_in, n_out) weights and (n_out,) biases to use.  By
        default ``W`` is drawn from ``rng`` uniformly in
        ``+-sqrt(6 / (n_in + n_out))`` (4 times that for ``pt.sigmoid``), the
        range that keeps tanh units in their linear regime at the start, and
        ``b`` starts at zero, both floatX.
    activation : callable or None
        The nonlinearity applied to ``dot(input, W) + b``; None: none (a
        linear layer).

    Attributes
    ----------
    W, b : shared variables
        The layer's weights and biases.
    output : pytensor matrix
        The layer's (n_examples, n_out) output.
    params : list
        ``[W, b]``.
    input
        The ``input`` given.
    """

    def __init__(self, rng, input, n_in, n_out, W=None, b=None, activation=pt.tanh):
        self.input = input
        if W is None:
            bound = np.sqrt(6.0 / (n_in + n_out))
            W_values = np.asarray(rng.uniform(low=-bound, high=bound, size=(n_in, n_out)),
                                  dtype=pytensor.config.floatX)
            if activation is pt.sigmoid:
                W_values *= 4
            W = pytensor.shared(value=W_values, name="W", borrow=True)
        if b is None:
            b_values = np.zeros((n_out,), dtype=pytensor.config.floatX)
            b = pytensor.shared(value=b_values, name="b", borrow=True)
        self.W = W
        self.b = b
        lin_output = pt.dot(input, self.W) + self.b
        self.output = lin_output if activation is None else activation(lin_output)
        self.params = [self.W, self.b]
# end-snippet-1


# start-snippet-2
class MLP:
    """A tanh hidden layer followed by a softmax (logistic regression) layer.

    Parameters
    ----------
    rng : numpy.random.RandomState
        Draws the hidden layer's initial weights.
    input : pytensor matrix
        Symbolic (n_examples, n_in) input.
    n_in : int
        Input units (784 for MNIST's pixels).
    n_hidden : int
        Units of the hidden layer.
    n_out : int
        Number of classes.

    Attributes
    ----------
    hiddenLayer : HiddenLayer
        The tanh layer.
    logRegressionLayer : LogisticRegression
        The softmax layer on top of it.
    L1, L2_sqr : pytensor scalars
        The L1 norm and the squared L2 norm of both layers' weights (not the
        biases), the regularisers of the cost.
    negative_log_likelihood, errors
        Those of ``logRegressionLayer``.
    params : list
        The parameters of both layers, hidden layer first.
    input
        The ``input`` given.
    """

    def __init__(self, rng, input, n_in, n_hidden, n_out):
        self.hiddenLayer = HiddenLayer(rng=rng, input=input, n_in=n_in, n_out=n_hidden, activation=pt.tanh)
        self.logRegressionLayer = LogisticRegression(input=self.hiddenLayer.output, n_in=n_hidden, n_out=n_out)
        # regularisers: L1 norm and squared L2 norm of the weights
        self.L1 = abs(self.hiddenLayer.W).sum() + abs(self.logRegressionLayer.W).sum()
        self.L2_sqr = (self.hiddenLayer.W ** 2).sum() + (self.logRegressionLayer.W ** 2).sum()
        self.negative_log_likelihood = self.logRegressionLayer.negative_log_likelihood
        self.errors = self.logRegressionLayer.errors
        self.params = self.hiddenLayer.params + self.logRegressionLayer.params
        self.input = input
# end-snippet-2


def build_model(datasets, learning_rate=0.01, L1_reg=0.00, L2_reg=0.0001, batch_size=20, n_hidden=500,
                seed=1234, mode=None):
    """Build the MLP and compile its minibatch functions.

    Parameters
    ----------
    datasets
        What :func:`~deeplearning_tutorial.logistic_sgd.load_data` returned.
    learning_rate
        The SGD step size.
    L1_reg, L2_reg
        Weights of the L1 norm and of the squared L2 norm of the weights in the cost.
    batch_size
        Examples per minibatch.
    n_hidden
        Units of the hidden layer.
    seed
        Seed of the RandomState the hidden layer's weights are drawn from.
    mode
        The PyTensor mode the functions are compiled in, with the package's
        speed-ups included (:func:`deeplearning_tutorial.speedups.mode`); None:
        PyTensor's default mode.

    Returns
    -------
    CompiledModel
        The :class:`MLP`, its parameters, the three compiled minibatch
        functions and the number of minibatches of each split.
    """
    mode = speedups.mode(mode)
    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]

    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size

    # [start-train-model]
    print("... building the model")
    index = pt.lscalar()
    x = pt.matrix("x")
    y = pt.ivector("y")
    rng = np.random.RandomState(seed)
    classifier = MLP(rng=rng, input=x, n_in=28 * 28, n_hidden=n_hidden, n_out=10)
    cost = classifier.negative_log_likelihood(y) + L1_reg * classifier.L1 + L2_reg * classifier.L2_sqr

    def minibatch(data):
        return data[index * batch_size : (index + 1) * batch_size]

    test_model = pytensor.function(
        inputs=[index], outputs=classifier.errors(y),
        givens={x: minibatch(test_set_x), y: minibatch(test_set_y)}, mode=mode,
    )
    validate_model = pytensor.function(
        inputs=[index], outputs=classifier.errors(y),
        givens={x: minibatch(valid_set_x), y: minibatch(valid_set_y)}, mode=mode,
    )
    gparams = [pt.grad(cost, param) for param in classifier.params]
    updates = [(param, param - learning_rate * gparam) for param, gparam in zip(classifier.params, gparams)]
    train_model = pytensor.function(
        inputs=[index], outputs=cost, updates=updates,
        givens={x: minibatch(train_set_x), y: minibatch(train_set_y)}, mode=mode,
    )
    # [end-train-model]
    return CompiledModel(classifier, classifier.params, train_model, validate_model, test_model,
                         n_train_batches, n_valid_batches, n_test_batches)


def rebuild_classifier(x, config):
    """The MLP of a saved run on the image matrix ``x``, for
    :func:`~deeplearning_tutorial.programs.load_best_model`.

    ``config`` holds the run's arguments; the weights drawn here are replaced by the saved ones.
    Returns the classifier, its predicted classes, its parameters and None (any batch size).
    """
    n_hidden = config["n_hidden"]
    check_positive_ints("n_hidden", [n_hidden], count=1)
    classifier = MLP(rng=np.random.RandomState(0), input=x, n_in=28 * 28, n_hidden=n_hidden, n_out=10)
    return classifier, classifier.logRegressionLayer.y_pred, classifier.params, None


def test_mlp(learning_rate=0.01, L1_reg=0.00, L2_reg=0.0001, n_epochs=1000, dataset="mnist.pkl.gz",
             batch_size=20, n_hidden=500, *, seed=1234):
    """Train the MLP on MNIST with minibatch SGD and early stopping.

    The training is the patience loop of
    :func:`~deeplearning_tutorial.training.patience_loop`, with a patience
    of 10000 minibatches, as in the original.  Beyond the original: ``seed``
    (the original's RandomState(1234) by default) is an argument.

    Parameters
    ----------
    learning_rate : float
        The SGD step size.
    L1_reg, L2_reg : float
        Weights of the L1 norm and of the squared L2 norm of the weights in
        the cost (finite, >= 0; 0 turns a penalty off).
    n_epochs : int
        The most epochs (passes over the training set) to train.
    dataset : str or path-like
        The dataset, as :func:`~deeplearning_tutorial.logistic_sgd.load_data` takes it.
    batch_size : int
        Examples per minibatch.
    n_hidden : int
        Units of the hidden layer.
    seed : int
        Seed of the RandomState the hidden layer's weights are drawn from.

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
        For arguments no run can use (a learning rate not > 0, an
        ``n_epochs``, ``batch_size`` or ``n_hidden`` not a positive integer,
        a minibatch larger than a split, a penalty that is not a finite
        number >= 0), before anything is compiled.
    DatasetError
        When the dataset cannot be loaded (see
        :func:`~deeplearning_tutorial.logistic_sgd.load_data`).
    DivergenceError
        When the training cost becomes NaN or infinite.
    """
    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets],
                          penalties={"L1_reg": L1_reg, "L2_reg": L2_reg})
    check_positive_ints("n_hidden", [n_hidden], count=1)

    model = build_model(datasets, learning_rate=learning_rate, L1_reg=L1_reg, L2_reg=L2_reg,
                        batch_size=batch_size, n_hidden=n_hidden, seed=seed)

    print("... training")
    state = train(model, n_epochs, patience=10000)
    if state.stopped_by is not None:
        return state
    print(("Optimization complete. Best validation score of %f %% obtained at iteration %i, "
           "with test performance %f %%")
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print("The code for file " + os.path.split(__file__)[1]
          + " ran for %.2fm" % (state.elapsed / 60.0), file=sys.stderr)
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("mlp")
