"""The denoising autoencoder (dA): learn to rebuild MNIST digits from corrupted copies of them.

The encoder maps an image ``x`` to hidden units ``y = sigmoid(x W + b)``; the
decoder maps them back to ``z = sigmoid(y W^T + b')`` with the same (tied)
weights.  Training lowers the reconstruction cross-entropy between ``z`` and
``x``.  A *denoising* autoencoder encodes a corrupted copy of ``x``, in which
a random fraction ``corruption_level`` of the pixels is set to 0, and must
still reconstruct the clean ``x``: it has to learn how the pixels depend on
each other instead of copying them.

The corruption is drawn from Theano's generator,
:class:`~deeplearning_tutorial.rng_mrg.MRG_RandomStreams`, seeded as the
original seeds it, so that for the same arguments the masks are the
original's.

Run it with ``python scripts/dA.py`` or ``python -m deeplearning_tutorial.dA``
(``--help`` for options): it trains without and with 30 % corruption and
writes the filters of each run as ``filters_corruption_0.png`` and
``filters_corruption_30.png``.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.mlp import sigmoid_weights
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.training import EpochLoopState, epoch_loop, say, warm_up
from deeplearning_tutorial.utils import save_image, tile_raster_images
from deeplearning_tutorial.validation import check_hyperparameters, check_positive_ints


def check_corruption_level(corruption_level) -> None:
    """Raise ValueError unless a numeric ``corruption_level`` lies in [0, 1); symbolic ones pass."""
    if isinstance(corruption_level, int | float | np.number) and not isinstance(corruption_level, bool) and not (
            0 <= corruption_level < 1):
        raise ValueError(f"corruption_level must be in [0, 1) (the fraction of inputs set to 0), "
                         f"got {corruption_level!r}")


# start-snippet-1
class dA:  # noqa: N801  (the original's name)
    """A denoising autoencoder with tied weights.

    Parameters
    ----------
    numpy_rng : numpy.random.RandomState
        Draws the seed of ``theano_rng`` (when none is given), then the initial weights.
    theano_rng : MRG_RandomStreams, optional
        Draws the corruption masks; by default a new one seeded with
        ``numpy_rng.randint(2**30)``.
    input : pytensor matrix, optional
        Symbolic (n_examples, n_visible) input; by default a new float64 matrix
        ``input`` (a dA stacked in an SdA gets the layer below's output).
    n_visible, n_hidden : int
        Units of the visible (input) and hidden layers.
    W, bhid, bvis : shared variables, optional
        Existing weights (n_visible, n_hidden), hidden biases (n_hidden,) and
        visible biases (n_visible,) to use, shared with another layer as the
        SdA does.  By default ``W`` is drawn uniformly in
        ``+-4 sqrt(6 / (n_hidden + n_visible))`` and the biases are zeros,
        all floatX.

    Attributes
    ----------
    W, b, b_prime : shared variables
        The weights, the hidden biases and the visible biases.
    W_prime : pytensor matrix
        ``W.T``: the decoder's weights are the encoder's, transposed.
    x : pytensor matrix
        The input.
    params : list
        ``[W, b, b_prime]``, what training changes.
    theano_rng : MRG_RandomStreams
        The corruption's generator.
    """

    def __init__(self, numpy_rng, theano_rng=None, input=None, n_visible=784, n_hidden=500,
                 W=None, bhid=None, bvis=None):
        check_positive_ints("n_visible", [n_visible], count=1)
        check_positive_ints("n_hidden", [n_hidden], count=1)
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        floatX = pytensor.config.floatX
        if theano_rng is None:
            theano_rng = MRG_RandomStreams(numpy_rng.randint(2 ** 30))
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
        self.theano_rng = theano_rng
        self.x = pt.dmatrix(name="input") if input is None else input
        self.params = [self.W, self.b, self.b_prime]
    # end-snippet-1

    # start-snippet-2
    def get_corrupted_input(self, input, corruption_level):
        """``input`` with each value kept with probability ``1 - corruption_level``, else set to 0.

        The mask is a binomial draw of ``theano_rng`` of ``input``'s shape
        (drawn even when ``corruption_level`` is 0).

        Raises
        ------
        ValueError
            When a numeric ``corruption_level`` is not in [0, 1).
        """
        check_corruption_level(corruption_level)
        mask = self.theano_rng.binomial(size=input.shape, n=1, p=1 - corruption_level,
                                        dtype=pytensor.config.floatX)
        return mask * input

    def get_hidden_values(self, input):
        """The code of ``input``: ``sigmoid(input W + b)``."""
        return pt.sigmoid(pt.dot(input, self.W) + self.b)

    def get_reconstructed_input(self, hidden):
        """The reconstruction of a code: ``sigmoid(hidden W^T + b')``."""
        return pt.sigmoid(pt.dot(hidden, self.W_prime) + self.b_prime)
    # end-snippet-2

    # start-snippet-3
    def get_cost_updates(self, corruption_level, learning_rate):
        """The minibatch's cost and one step of gradient descent on it.

        The cost is the mean over the minibatch's rows of the cross-entropy
        ``-sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]`` between the clean
        input ``x`` and ``z``, the reconstruction of its corrupted copy.

        Parameters
        ----------
        corruption_level : float or pytensor scalar
            The fraction of inputs set to 0, in [0, 1).
        learning_rate : float or pytensor scalar
            The step size.

        Returns
        -------
        cost : pytensor scalar
        updates : list of (shared variable, expression)
            ``p <- p - learning_rate * dcost/dp`` for ``params`` in order.
        """
        tilde_x = self.get_corrupted_input(self.x, corruption_level)
        y = self.get_hidden_values(tilde_x)
        z = self.get_reconstructed_input(y)
        L = -pt.sum(self.x * pt.log(z) + (1 - self.x) * pt.log(1 - z), axis=1)
        cost = pt.mean(L)
        gparams = pt.grad(cost, self.params)
        updates = [(param, param - learning_rate * gparam) for param, gparam in zip(self.params, gparams)]
        return cost, updates
    # end-snippet-3


def epoch_cost_line(epoch: int, costs) -> float:
    """Print an epoch's line, ``Training epoch 0, cost  <mean>``, and return the mean (in float64)."""
    mean = np.mean(costs, dtype="float64")
    say(" ".join(["Training epoch %d, cost " % epoch, str(mean)]))
    return mean


def train_dA(train_set_x, corruption_level, learning_rate, training_epochs, batch_size, state, phase,
             seed=123, mode=None):
    """Build a dA on fresh random generators and train it: one run of :func:`test_dA`.

    Returns the trained :class:`dA`; ``state`` (an
    :class:`~deeplearning_tutorial.training.EpochLoopState`) gets the run's
    curve under ``phase`` and, if a signal stopped it, ``stopped_by``.
    """
    index = pt.lscalar()
    x = pt.matrix("x")
    rng = np.random.RandomState(seed)
    theano_rng = MRG_RandomStreams(rng.randint(2 ** 30))
    da = dA(numpy_rng=rng, theano_rng=theano_rng, input=x, n_visible=28 * 28, n_hidden=500)
    cost, updates = da.get_cost_updates(corruption_level=corruption_level, learning_rate=learning_rate)
    train_da = pytensor.function(
        [index], cost, updates=updates,
        givens={x: train_set_x[index * batch_size : (index + 1) * batch_size]}, mode=speedups.mode(mode),
    )
    warm_up(train_da)
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    epoch_loop(train_da, n_train_batches, training_epochs, epoch_cost_line, state, phase)
    return da


def save_filters(W, path) -> None:
    """Write the first 100 hidden units' weights (columns of ``W``) as a 10 x 10 grid of 28 x 28 images."""
    image = tile_raster_images(X=W.get_value(borrow=True).T, img_shape=(28, 28), tile_shape=(10, 10),
                               tile_spacing=(1, 1))
    save_image(image, path)


def test_dA(learning_rate=0.1, training_epochs=15, dataset="mnist.pkl.gz", batch_size=20,
            output_folder="dA_plots", *, seed=123):
    """Train a dA of 500 hidden units on MNIST twice, without and with 30 % corruption.

    Each run starts from the same initial weights and corruption generator
    (both from ``RandomState(seed)``), trains ``training_epochs`` epochs of
    minibatch SGD printing the mean cost of each, and writes the filters it
    learnt into ``output_folder``.  Beyond the original: ``seed`` (the
    original's 123) is an argument.

    Parameters
    ----------
    learning_rate : float
        The SGD step size.
    training_epochs : int
        Epochs of each run.
    dataset : str or path-like
        The dataset, as :func:`~deeplearning_tutorial.logistic_sgd.load_data` takes it (only
        its training set is used).
    batch_size : int
        Examples per minibatch.
    output_folder : str or path-like
        Where ``filters_corruption_0.png`` and ``filters_corruption_30.png`` are written
        (created if missing).
    seed : int
        Seed of the RandomState both runs draw their generator's seed and weights from.

    Returns
    -------
    EpochLoopState
        The mean cost of each epoch of the two runs (``curves["corruption 0%"]``
        and ``curves["corruption 30%"]``) and ``stopped_by``, the signal that
        stopped the run early, or None.

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
    os.makedirs(output_folder, exist_ok=True)
    state = EpochLoopState()
    name = os.path.split(__file__)[1]
    for corruption_level, title, image in ((0.0, "no corruption", "filters_corruption_0.png"),
                                           (0.3, "30% corruption", "filters_corruption_30.png")):
        trained_before = state.elapsed
        da = train_dA(train_set_x, corruption_level, learning_rate, training_epochs, batch_size, state,
                      f"corruption {round(corruption_level * 100)}%", seed=seed)
        if state.stopped_by is not None:
            return state
        training_time = state.elapsed - trained_before
        print(f"The {title} code for file {name} ran for {training_time / 60.0:.2f}m", file=sys.stderr)
        save_filters(da.W, os.path.join(output_folder, image))
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("dA")
