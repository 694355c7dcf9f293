"""Logistic regression on MNIST, trained with minibatch SGD and early stopping.

The first deeplearning.net tutorial on PyTensor: a softmax layer
``p(y|x) = softmax(x W + b)`` trained by plain SGD on the negative
log-likelihood, minibatches taken from shared variables with ``givens``,
stopped by the patience loop.  With the default arguments it reaches the
published 7.500000 % validation and 7.489583 % test error after 74 epochs.

The training loop, the original's early stopping ("patience") written once
for every tutorial, is :func:`deeplearning_tutorial.training.patience_loop`.

Run it with ``python scripts/logistic_sgd.py`` or
``python -m deeplearning_tutorial.logistic_sgd`` (``--help`` for options).
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import speedups
from deeplearning_tutorial.checkpoints import RunFileError
from deeplearning_tutorial.files import atomic_write
from deeplearning_tutorial.mnist import ensure_dataset
from deeplearning_tutorial.training import CompiledModel, train
from deeplearning_tutorial.validation import check_hyperparameters


# start-snippet-1
class LogisticRegression:
    """Multi-class logistic regression: a softmax over ``dot(input, W) + b``.

    Parameters
    ----------
    input : pytensor matrix
        Symbolic (n_examples, n_in) batch of inputs, one example per row.
    n_in : int
        Number of input units (784 for MNIST's pixels).
    n_out : int
        Number of classes.

    Attributes
    ----------
    W, b : shared variables
        The (n_in, n_out) weights and the (n_out,) biases, floatX, both
        starting at zero.
    p_y_given_x : pytensor matrix
        The class probabilities, one row per example.
    y_pred : pytensor vector
        The predicted class of each example: the most probable one.
    params : list
        ``[W, b]``, the parameters training updates.
    input
        The ``input`` given.
    """

    def __init__(self, input, n_in: int, n_out: int):
        self.W = pytensor.shared(
            value=np.zeros((n_in, n_out), dtype=pytensor.config.floatX), name="W", borrow=True
        )
        self.b = pytensor.shared(
            value=np.zeros((n_out,), dtype=pytensor.config.floatX), name="b", borrow=True
        )
        # class-membership probabilities, one row per example
        self.p_y_given_x = pt.special.softmax(pt.dot(input, self.W) + self.b, axis=-1)
        # the predicted class: the most probable one
        self.y_pred = pt.argmax(self.p_y_given_x, axis=1)
        self.params = [self.W, self.b]
        self.input = input

    def negative_log_likelihood(self, y):
        """Mean negative log-probability of the correct labels ``y``.

        The mean, not the sum, keeps the learning rate independent of the
        minibatch size.

        Parameters
        ----------
        y : pytensor int vector
            The correct class of each example.

        Returns
        -------
        pytensor scalar
            ``-mean(log(p_y_given_x)[i, y[i]])`` over the examples.
        """
        return -pt.mean(pt.log(self.p_y_given_x)[pt.arange(y.shape[0]), y])

    def errors(self, y):
        """Fraction of the minibatch whose predicted class is not ``y``.

        Parameters
        ----------
        y : pytensor int vector
            The correct class of each example.

        Returns
        -------
        pytensor scalar
            The mean of ``y_pred != y`` (0 to 1).

        Raises
        ------
        TypeError
            If ``y`` is not a vector, as ``y_pred`` is.
        NotImplementedError
            If ``y`` is not of an integer dtype.
        """
        if y.ndim != self.y_pred.ndim:
            raise TypeError(
                "y should have the same shape as self.y_pred",
                ("y", y.type, "y_pred", self.y_pred.type),
            )
        if y.dtype.startswith("int"):
            return pt.mean(pt.neq(self.y_pred, y))
        raise NotImplementedError()
# end-snippet-1


def shared_dataset(data_xy, borrow=True):
    """One split ``(x, y)`` as ``load_data`` returns it: ``x`` a shared floatX matrix, ``y`` the
    labels stored as a shared floatX vector (so that they could live on a GPU, as in Theano) and
    cast to int32."""
    data_x, data_y = data_xy
    shared_x = pytensor.shared(np.asarray(data_x, dtype=pytensor.config.floatX), borrow=borrow)
    shared_y = pytensor.shared(np.asarray(data_y, dtype=pytensor.config.floatX), borrow=borrow)
    return shared_x, pt.cast(shared_y, "int32")


def load_data(dataset):
    """Load MNIST into shared variables: ``[(train_x, train_y), (valid_x, valid_y), (test_x, test_y)]``.

    The file is verified before it is used (see
    :func:`deeplearning_tutorial.datasets.read_dataset`).  The labels are
    stored as floatX (so that they could live on a GPU, as in Theano) and
    returned cast to int32.  Prints ``... loading data``.

    Parameters
    ----------
    dataset : str or path-like
        A path, or a bare name looked up in the repository's ``data/``
        folder.  A missing ``mnist.pkl.gz`` is downloaded first.

    Returns
    -------
    list of 3 pairs
        ``(x, y)`` for the training, validation and test sets: ``x`` a
        shared floatX (n, 784) matrix of pixels in [0, 1), ``y`` the labels
        as an int32 vector (a cast of a shared floatX vector).

    Raises
    ------
    DatasetError
        When the file is missing and cannot be downloaded (offline, the
        message says how to build it from the IDX files), cannot be read,
        is damaged, holds anything but NumPy arrays, or does not have the
        tutorials' structure (and MNIST's split sizes, for a file called
        ``mnist.pkl.gz``).
    """
    train_set, valid_set, test_set = ensure_dataset(dataset)
    print("... loading data")

    test_set_x, test_set_y = shared_dataset(test_set)
    valid_set_x, valid_set_y = shared_dataset(valid_set)
    train_set_x, train_set_y = shared_dataset(train_set)
    return [(train_set_x, train_set_y), (valid_set_x, valid_set_y), (test_set_x, test_set_y)]


def build_model(datasets, learning_rate=0.13, batch_size=600, mode=None):
    """Build the logistic regression and compile its minibatch functions.

    Parameters
    ----------
    datasets
        What :func:`load_data` returned: three ``(x, y)`` pairs of shared variables.
    learning_rate
        The SGD step size.
    batch_size
        Examples per minibatch.
    mode
        The PyTensor mode the functions are compiled in, with the package's
        speed-ups included (:func:`deeplearning_tutorial.speedups.mode`); None:
        PyTensor's default mode.

    Returns
    -------
    CompiledModel
        The classifier, its parameters, ``train_model``, ``validate_model``
        and ``test_model`` (each takes a minibatch index) and the number of
        minibatches of each split.
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
    index = pt.lscalar()  # index of a minibatch
    x = pt.matrix("x")  # rasterized images
    y = pt.ivector("y")  # labels
    classifier = LogisticRegression(input=x, n_in=28 * 28, n_out=10)
    cost = classifier.negative_log_likelihood(y)

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
    g_W = pt.grad(cost=cost, wrt=classifier.W)
    g_b = pt.grad(cost=cost, wrt=classifier.b)
    updates = [
        (classifier.W, classifier.W - learning_rate * g_W),
        (classifier.b, classifier.b - learning_rate * g_b),
    ]
    train_model = pytensor.function(
        inputs=[index], outputs=cost, updates=updates,
        givens={x: minibatch(train_set_x), y: minibatch(train_set_y)}, mode=mode,
    )
    # [end-train-model]
    return CompiledModel(classifier, classifier.params, train_model, validate_model, test_model,
                         n_train_batches, n_valid_batches, n_test_batches)


def rebuild_classifier(x, config):
    """The classifier of a saved run, on the image matrix ``x``, for
    :func:`~deeplearning_tutorial.programs.load_best_model`; returns it, its predicted
    classes, its parameters and None (any batch size)."""
    classifier = LogisticRegression(input=x, n_in=28 * 28, n_out=10)
    return classifier, classifier.y_pred, classifier.params, None


def sgd_optimization_mnist(learning_rate=0.13, n_epochs=1000, dataset="mnist.pkl.gz", batch_size=600):
    """Train logistic regression on MNIST with minibatch SGD and early stopping.

    The training is the patience loop of
    :func:`~deeplearning_tutorial.training.patience_loop`, with a patience
    of 5000 minibatches, as in the original.  Each new best model is pickled
    to ``best_model.pkl`` (in the current folder), which :func:`predict`
    reloads, as in the original.  Run as a command, the program also saves it
    to ``best_model_logistic.npz``, a format that cannot run code (load it
    with :func:`~deeplearning_tutorial.programs.load_best_model`).

    Parameters
    ----------
    learning_rate : float
        The SGD step size.
    n_epochs : int
        The most epochs (passes over the training set) to train.
    dataset : str or path-like
        The dataset, as :func:`load_data` takes it.
    batch_size : int
        Examples per minibatch.

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
        For hyper-parameters no run can use (a learning rate not > 0, an
        ``n_epochs`` or ``batch_size`` not an integer >= 1, a minibatch
        larger than a split), before anything is compiled.
    DatasetError
        When the dataset cannot be loaded (see :func:`load_data`).
    RunFileError
        When ``best_model.pkl`` cannot be written.
    DivergenceError
        When the training cost becomes NaN or infinite.
    """
    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=learning_rate, n_epochs=n_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets])
    model = build_model(datasets, learning_rate=learning_rate, batch_size=batch_size)

    print("... training the model")

    def save_best_model():
        try:
            with atomic_write("best_model.pkl") as f:
                pickle.dump(model.classifier, f)
        except OSError as exc:
            raise RunFileError(f"could not write {exc.filename}: {exc.strerror}; the earlier file (if any) is "
                               f"unchanged. Free some space or run in another folder.") from None

    state = train(model, n_epochs, patience=5000, on_new_best=save_best_model)
    if state.stopped_by is not None:
        return state
    print(
        "Optimization complete with best validation score of %f %%,"
        "with test performance %f %%" % (state.best_validation_loss * 100.0, state.test_score * 100.0)
    )
    print("The code run for %d epochs, with %f epochs/sec" % (state.epoch, 1.0 * state.epoch / state.elapsed))
    print("The code for file " + os.path.split(__file__)[1]
          + " ran for %.1fs" % state.elapsed, file=sys.stderr)
    return state


def predict():
    """Load ``best_model.pkl`` and print its predictions for the first 10 test images.

    ``best_model.pkl`` (in the current folder, as :func:`sgd_optimization_mnist`
    writes it) is a pickle, as in the original: loading a pickle runs
    whatever code it names, so give this function only files you trust (ones
    you trained yourself).  To share or load other people's models, use
    ``best_model_logistic.npz`` and
    :func:`~deeplearning_tutorial.programs.load_best_model`, which hold and
    read only arrays.  The test images are those of ``mnist.pkl.gz``
    (:func:`load_data`).

    Returns
    -------
    numpy.ndarray
        The predicted classes of the first 10 test images.

    Raises
    ------
    FileNotFoundError
        When there is no ``best_model.pkl`` in the current folder.
    DatasetError
        When ``mnist.pkl.gz`` cannot be loaded (see :func:`load_data`).
    """
    with open("best_model.pkl", "rb") as f:
        classifier = pickle.load(f)  # trusted files only: see above
    predict_model = pytensor.function(inputs=[classifier.input], outputs=classifier.y_pred)

    dataset = "mnist.pkl.gz"
    datasets = load_data(dataset)
    test_set_x, test_set_y = datasets[2]
    test_set_x = test_set_x.get_value()

    predicted_values = predict_model(test_set_x[:10])
    print("Predicted values for the first 10 examples in test set:")
    print(predicted_values)
    return predicted_values


if __name__ == "__main__":
    # the registry runs the package's module, not this __main__ copy, so pickled models name an importable class
    from deeplearning_tutorial.cli import run

    run("logistic_sgd")
