"""A multilayer perceptron on MNIST: one tanh hidden layer below logistic regression.

Trained like logistic_sgd (minibatch SGD, ``givens``, the patience loop), with
L1 and L2 penalties on the weights.  Published result: 1.69 % validation and
1.65 % test error.

Run it with ``python scripts/mlp.py`` or ``python -m deeplearning_tutorial.mlp``
(``--help`` for options; ``--resume`` continues an interrupted run).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import cli, speedups
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.training import BestModel, run_with_checkpoints
from deeplearning_tutorial.validation import check_hyperparameters


class HiddenLayer:
    """A fully connected layer: ``activation(dot(input, W) + b)``."""

    def __init__(self, rng, input, n_in, n_out, W=None, b=None, activation=pt.tanh):
        """W is drawn from ``rng`` uniformly in +-sqrt(6 / (n_in + n_out)) (x4 for a
        sigmoid), the range that keeps tanh units in their linear regime at the start."""
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


class MLP:
    """A tanh hidden layer followed by a softmax (logistic regression) layer."""

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


def test_mlp(learning_rate=0.01, L1_reg=0.00, L2_reg=0.0001, n_epochs=1000, dataset="mnist.pkl.gz",
             batch_size=20, n_hidden=500, *, seed=1234, resume=False, checkpoint_file="mlp.ckpt",
             best_model_file="best_model_mlp.pkl"):
    """Train the MLP on MNIST with minibatch SGD and early stopping.

    Beyond the original: ``seed`` replaces the original's RandomState(1234)
    seed, the best model is pickled to ``best_model_file``, Ctrl-C stops
    cleanly and ``resume=True`` continues from ``checkpoint_file``.
    """
    datasets = load_data(dataset)
    train_set_x, train_set_y = datasets[0]
    valid_set_x, valid_set_y = datasets[1]
    test_set_x, test_set_y = datasets[2]
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets])
    if not (isinstance(n_hidden, int) and n_hidden > 0):
        raise ValueError(f"n_hidden must be a positive integer, got {n_hidden!r}")

    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
    n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size

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
        givens={x: minibatch(test_set_x), y: minibatch(test_set_y)}, mode=speedups.mode(),
    )
    validate_model = pytensor.function(
        inputs=[index], outputs=classifier.errors(y),
        givens={x: minibatch(valid_set_x), y: minibatch(valid_set_y)}, mode=speedups.mode(),
    )
    gparams = [pt.grad(cost, param) for param in classifier.params]
    updates = [(param, param - learning_rate * gparam) for param, gparam in zip(classifier.params, gparams)]
    train_model = pytensor.function(
        inputs=[index], outputs=cost, updates=updates,
        givens={x: minibatch(train_set_x), y: minibatch(train_set_y)}, mode=speedups.mode(),
    )

    print("... training")
    state = run_with_checkpoints(
        train_model, validate_model, test_model, (n_train_batches, n_valid_batches, n_test_batches),
        n_epochs=n_epochs, patience=10000, params=classifier.params,
        config=dict(learning_rate=learning_rate, L1_reg=L1_reg, L2_reg=L2_reg, n_epochs=n_epochs,
                    dataset=str(dataset), batch_size=batch_size, n_hidden=n_hidden, seed=seed),
        best_model=BestModel(x, classifier.logRegressionLayer.y_pred, [classifier]),
        best_model_file=best_model_file, checkpoint_file=checkpoint_file, resume=resume,
    )
    print(("Optimization complete. Best validation score of %f %% obtained at iteration %i, "
           "with test performance %f %%")
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print("The code for file " + os.path.split(__file__)[1]
          + " ran for %.2fm" % (state.elapsed / 60.0), file=sys.stderr)
    return state


def main(argv=None):
    cli.run(test_mlp, argv)


if __name__ == "__main__":
    # run the package's module, not this __main__ copy, so pickled models name an importable class
    from deeplearning_tutorial.mlp import main as package_main

    package_main()
