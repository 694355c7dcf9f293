"""The contractive autoencoder (cA): an autoencoder penalised by the Jacobian of its code.

The encoder ``h = sigmoid(x W + b)`` and the tied decoder
``z = sigmoid(h W^T + b')`` are those of the denoising autoencoder
(:mod:`deeplearning_tutorial.dA`), without corruption.  Instead the cost adds
``contraction_level`` times the squared Frobenius norm of the Jacobian
``dh/dx``, whose entries are ``h_j (1 - h_j) W_ij``: a code that changes
little when the input moves is pushed to keep only the directions the data
vary along.

As in the original, the penalty is ``sum(J**2) // n_batchsize``: the floor
division makes it a whole number with a zero gradient, so the contraction
term is reported but does not change the training (the weights learnt are
those with ``contraction_level=0``).

Run it with ``python scripts/cA.py`` or ``python -m deeplearning_tutorial.cA``
(``--help`` for options); it writes the filters learnt as ``cae_filters.png``.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.dA import save_filters
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.mlp import sigmoid_weights
from deeplearning_tutorial.training import EpochLoopState, epoch_loop, say, warm_up
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints


def check_contraction_level(contraction_level) -> None:
    """Raise ValueError unless a numeric ``contraction_level`` is a finite number >= 0; symbolic ones pass."""
    if isinstance(contraction_level, int | float | np.number) and not isinstance(contraction_level, bool) and not (
            0 <= contraction_level < math.inf):
        raise ValueError(f"contraction_level must be a finite number >= 0 (0 turns the penalty off), "
                         f"got {contraction_level!r}")


class cA:  # noqa: N801  (the original's name)
    """A contractive autoencoder with tied weights.

    Parameters
    ----------
    numpy_rng : numpy.random.RandomState
        Draws the initial weights.
    input : pytensor matrix, optional
        Symbolic (n_batchsize, n_visible) input; by default a new float64 matrix ``input``.
    n_visible, n_hidden : int
        Units of the visible (input) and hidden layers.
    n_batchsize : int
        Rows of every minibatch: the Jacobian is built for exactly this many.
    W, bhid, bvis : shared variables, optional
        Existing weights (n_visible, n_hidden), hidden and visible biases.
        By default ``W`` is drawn uniformly in ``+-4 sqrt(6 / (n_hidden + n_visible))``
        and the biases are zeros, all floatX.

    Attributes
    ----------
    W, b, b_prime : shared variables
        The weights, the hidden biases and the visible biases.
    W_prime : pytensor matrix
        ``W.T``, the decoder's weights.
    x : pytensor matrix
        The input.
    params : list
        ``[W, b, b_prime]``.
    L_rec, L_jacob : pytensor variables
        Set by :meth:`get_cost_updates`: each row's reconstruction
        cross-entropy, and the contraction penalty.
    """

    def __init__(self, numpy_rng, input=None, n_visible=784, n_hidden=100, n_batchsize=1,
                 W=None, bhid=None, bvis=None):
        check_positive_ints("n_visible", [n_visible], count=1)
        check_positive_ints("n_hidden", [n_hidden], count=1)
        check_positive_ints("n_batchsize", [n_batchsize], count=1)
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.n_batchsize = n_batchsize
        floatX = pytensor.config.floatX
        if W is None:
            W = sigmoid_weights(numpy_rng, n_visible, n_hidden)
        if bvis is None:
            bvis = pytensor.shared(value=np.zeros(n_visible, dtype=floatX), borrow=True)
        if bhid is None:
            bhid = pytensor.shared(value=np.zeros(n_hidden, dtype=floatX), name="b", borrow=True)
        self.W = W
        self.b = bhid
        self.b_prime = bvis
        self.W_prime = self.W.T
        self.x = pt.dmatrix(name="input") if input is None else input
        self.params = [self.W, self.b, self.b_prime]

    def get_hidden_values(self, input):
        """The code of ``input``: ``sigmoid(input W + b)``."""
        return pt.sigmoid(pt.dot(input, self.W) + self.b)

    def get_jacobian(self, hidden, W):
        """The Jacobian of the code of each row: ``J[n, i, j] = h[n, j] (1 - h[n, j]) W[i, j]``,
        of shape (n_batchsize, n_visible, n_hidden)."""
        slope = pt.reshape(hidden * (1 - hidden), (self.n_batchsize, 1, self.n_hidden))
        return slope * pt.reshape(W, (1, self.n_visible, self.n_hidden))

    def get_reconstructed_input(self, hidden):
        """The reconstruction of a code: ``sigmoid(hidden W^T + b')``."""
        return pt.sigmoid(pt.dot(hidden, self.W_prime) + self.b_prime)

    def get_cost_updates(self, contraction_level, learning_rate):
        """The minibatch's cost and one step of gradient descent on it.

        The cost is the mean reconstruction cross-entropy plus
        ``contraction_level`` times ``sum(J**2) // n_batchsize``.

        Returns
        -------
        cost : pytensor scalar
        updates : list of (shared variable, expression)
            ``p <- p - learning_rate * dcost/dp`` for ``params`` in order.

        Raises
        ------
        ValueError
            When a numeric ``contraction_level`` is negative or not finite.
        """
        check_contraction_level(contraction_level)
        y = self.get_hidden_values(self.x)
        z = self.get_reconstructed_input(y)
        J = self.get_jacobian(y, self.W)
        self.L_rec = -pt.sum(self.x * pt.log(z) + (1 - self.x) * pt.log(1 - z), axis=1)
        self.L_jacob = pt.sum(J ** 2) // self.n_batchsize
        cost = pt.mean(self.L_rec) + contraction_level * pt.mean(self.L_jacob)
        gparams = pt.grad(cost, self.params)
        updates = [(param, param - learning_rate * gparam) for param, gparam in zip(self.params, gparams)]
        return cost, updates


def epoch_line(epoch: int, outputs) -> float:
    """Print the original's epoch line and return the epoch's mean reconstruction cost.

    ``outputs`` holds ``[mean(L_rec), L_jacob]`` of each minibatch.  As in
    the original, the printed "reconstruction cost" is the mean of the
    FIRST minibatch's two numbers and the "jacobian norm" the mean of the
    square roots of the SECOND minibatch's two (row 0 and row 1 of the
    stacked outputs), each a floatX number.
    """
    c_array = np.vstack(outputs)
    say(" ".join(["Training epoch %d, reconstruction cost " % epoch, str(np.mean(c_array[0])),
                  " jacobian norm ", str(np.mean(np.sqrt(c_array[1])))]))
    return float(np.mean(c_array[:, 0], dtype="float64"))


def test_cA(learning_rate=0.01, training_epochs=20, dataset="mnist.pkl.gz", batch_size=10,
            output_folder="cA_plots", contraction_level=0.1, *, seed=123):
    """Train a cA of 500 hidden units on MNIST and write its filters.

    Beyond the original: ``seed`` (the original's RandomState(123)) is an argument.

    Parameters
    ----------
    learning_rate : float
        The SGD step size.
    training_epochs : int
        Epochs to train.
    dataset : str or path-like
        The dataset (only its training set is used).
    batch_size : int
        Examples per minibatch (the cA's ``n_batchsize``).
    output_folder : str or path-like
        Where ``cae_filters.png`` is written (created if missing).
    contraction_level : float
        The weight of the contraction penalty, >= 0.
    seed : int
        Seed of the RandomState the weights are drawn from.

    Returns
    -------
    EpochLoopState
        ``curves["cA"]``: the mean reconstruction cost of each epoch; and
        ``stopped_by``, the signal that stopped the run early, or None.

    Raises
    ------
    ValueError
        For arguments no run can use, before anything is compiled.
    DatasetError
        When the dataset cannot be loaded.
    """
    datasets = load_data(dataset)
    train_set_x = datasets[0][0]
    check_hyperparameters(learning_rate=learning_rate, n_epochs=training_epochs, batch_size=batch_size,
                          split_sizes=[train_set_x.get_value(borrow=True).shape[0]])
    check_contraction_level(contraction_level)
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size

    index = pt.lscalar()
    x = pt.matrix("x")
    os.makedirs(output_folder, exist_ok=True)
    rng = np.random.RandomState(seed)
    ca = cA(numpy_rng=rng, input=x, n_visible=28 * 28, n_hidden=500, n_batchsize=batch_size)
    cost, updates = ca.get_cost_updates(contraction_level=contraction_level, learning_rate=learning_rate)
    train_ca = pytensor.function(
        [index], [pt.mean(ca.L_rec), ca.L_jacob], updates=updates,
        givens={x: train_set_x[index * batch_size : (index + 1) * batch_size]}, mode=speedups.mode(None),
    )
    warm_up(train_ca)
    state = epoch_loop(train_ca, n_train_batches, training_epochs, epoch_line, EpochLoopState(), "cA")
    if state.stopped_by is not None:
        return state
    print(f"The code for file {os.path.split(__file__)[1]} ran for {state.elapsed / 60.0:.2f}m", file=sys.stderr)
    save_filters(ca.W, os.path.join(output_folder, "cae_filters.png"))
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("cA")
