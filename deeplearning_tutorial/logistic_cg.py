"""Logistic regression on MNIST, trained with SciPy's nonlinear conjugate gradient.

The fourth program of the original tutorial: the same softmax layer as
``logistic_sgd``, but instead of stepping along minibatch gradients it hands
the whole training objective to ``scipy.optimize.fmin_cg``.  PyTensor
compiles the cost and its gradient for one chunk of 600 training examples;
the objective is the mean of the chunk costs over the training set and its
gradient the mean of the chunk gradients.  So that SciPy can treat the model
as a point in a vector space, every parameter lives in one shared vector
``theta``; ``W`` and ``b`` are views of it.

After each CG iteration a callback prints the validation error and, on a new
best, measures the test error.  There is no early stopping: the run ends
after ``n_epochs`` iterations (or when CG converges).

Run it with ``python scripts/logistic_cg.py`` or
``python -m deeplearning_tutorial.logistic_cg`` (``--help`` for options).
"""

from __future__ import annotations

import os
import sys
import timeit
from dataclasses import dataclass, field

import numpy as np
import pytensor
import pytensor.tensor as pt
import scipy.optimize

from deeplearning_tutorial import logistic_sgd
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.training import LoopState, StopOnSignal, warm_up
from deeplearning_tutorial.validation import check_n_epochs

VALIDATION_LINE = "validation error %f %%"
FINAL_LINE = "Optimization complete with best validation score of %f %%, with test performance %f %%"
INTERRUPTED_LINE = ("Optimization interrupted after %i iterations, with best validation score of %f %%, "
                    "with test performance %f %%")


# start-snippet-1
class LogisticRegression(logistic_sgd.LogisticRegression):
    """Multi-class logistic regression whose parameters are one flat vector ``theta``.

    The model is logistic_sgd's, ``p(y|x) = softmax(x W + b)``, with the same
    ``negative_log_likelihood`` and ``errors``; only the storage differs.
    ``theta`` holds ``n_in * n_out`` weights (``W`` in row-major order)
    followed by ``n_out`` biases, so an optimiser that works on vectors
    (``fmin_cg``) can set the whole model at once.

    Parameters
    ----------
    input : pytensor matrix
        Symbolic (n_examples, n_in) batch of images.
    n_in : int
        Number of input units (pixels).
    n_out : int
        Number of classes.

    Attributes
    ----------
    theta : shared variable
        The floatX parameter vector, starting at zero.
    W, b : pytensor tensors
        The (n_in, n_out) weights and (n_out,) biases: views of ``theta``.
    p_y_given_x, y_pred
        As in logistic_sgd's ``LogisticRegression``.
    params : list
        ``[theta]``.
    """

    def __init__(self, input, n_in: int, n_out: int):
        self.theta = pytensor.shared(
            value=np.zeros(n_in * n_out + n_out, dtype=pytensor.config.floatX), name="theta", borrow=True
        )
        # W and b are views of theta: the graph below reads theta's own memory
        self.W = self.theta[0 : n_in * n_out].reshape((n_in, n_out))
        self.b = self.theta[n_in * n_out : n_in * n_out + n_out]
        self.p_y_given_x = pt.special.softmax(pt.dot(input, self.W) + self.b, axis=-1)
        self.y_pred = pt.argmax(self.p_y_given_x, axis=1)
        self.params = [self.theta]
        self.input = input
# end-snippet-1


@dataclass
class CGModel:
    """The classifier, its compiled chunk functions, and the training objective.

    Each compiled function takes a chunk *offset* (the index of the chunk's
    first example) and sees ``batch_size`` examples from there on:
    ``test_model`` and ``validate_model`` give the chunk's error rate,
    ``batch_cost_and_grad`` its mean negative log-likelihood and the gradient
    of that cost with respect to ``theta``.  The original compiled the cost
    and the gradient as two functions; one function giving both reads each
    chunk of images once less, with the same values to the bit (the tests
    check it against two separate functions).

    ``fmin_cg`` asks for the objective and then for its gradient at the same
    point; both come from one pass over the training set, remembered for the
    last point asked.
    """

    classifier: LogisticRegression
    batch_size: int
    n_train_batches: int
    n_valid_batches: int
    n_test_batches: int
    test_model: pytensor.compile.Function
    validate_model: pytensor.compile.Function
    batch_cost_and_grad: pytensor.compile.Function
    _last_point: tuple[np.ndarray, float, np.ndarray] | None = field(default=None, repr=False)

    def set_theta(self, theta_value: np.ndarray) -> None:
        """Put ``theta_value`` into the model, cast to floatX (SciPy may hand over float64)."""
        self.classifier.theta.set_value(np.asarray(theta_value, dtype=self.classifier.theta.dtype))

    def offsets(self, n_batches: int) -> range:
        """The offsets of the first ``n_batches`` chunks of a split."""
        return range(0, n_batches * self.batch_size, self.batch_size)

    def cost_and_grad(self, theta_value: np.ndarray) -> tuple[float, np.ndarray]:
        """The training objective and its gradient at ``theta_value``.

        The objective is the mean of the chunk costs; the gradient is the sum
        of the chunk gradients (added in chunk order) divided by their
        number, as in the original.
        """
        theta_value = np.asarray(theta_value, dtype=self.classifier.theta.dtype)
        if self._last_point is None or not np.array_equal(self._last_point[0], theta_value):
            self.set_theta(theta_value)
            train_losses, grad = [], None
            for offset in self.offsets(self.n_train_batches):
                cost, chunk_grad = self.batch_cost_and_grad(offset)
                train_losses.append(cost)
                if grad is None:
                    grad = chunk_grad
                else:
                    grad += chunk_grad
            assert grad is not None  # a split has at least one chunk (checked when the model is built)
            self._last_point = (theta_value.copy(), float(np.mean(train_losses)), grad / self.n_train_batches)
        _, cost, grad = self._last_point
        return cost, grad.astype(np.float64)  # a copy, in the dtype SciPy's line search works in

    def train_fn(self, theta_value: np.ndarray) -> float:
        """The objective of CG: the mean of the chunk costs over the training set at ``theta_value``."""
        return self.cost_and_grad(theta_value)[0]

    def train_fn_grad(self, theta_value: np.ndarray) -> np.ndarray:
        """Its gradient: the sum of the chunk gradients divided by their number (as float64)."""
        return self.cost_and_grad(theta_value)[1]

    def validation_error(self) -> float:
        """Mean error rate over the validation chunks, at the current ``theta``."""
        return float(np.mean([self.validate_model(offset) for offset in self.offsets(self.n_valid_batches)]))

    def test_error(self) -> float:
        """Mean error rate over the test chunks, at the current ``theta``."""
        return float(np.mean([self.test_model(offset) for offset in self.offsets(self.n_test_batches)]))


def build_cg_model(datasets, batch_size: int = 600, n_in: int = 28 * 28, n_out: int = 10) -> CGModel:
    """Build the classifier and compile its chunk functions on the data of :func:`load_data`.

    Parameters
    ----------
    datasets : list
        ``[(train_x, train_y), (valid_x, valid_y), (test_x, test_y)]``:
        shared images and int32 labels, as returned by :func:`load_data`.
    batch_size : int
        Size of the chunks the splits are cut into (only whole chunks count).
    n_in, n_out : int
        Input size and number of classes.

    Returns
    -------
    CGModel
        The model at ``theta = 0``, its functions compiled.

    Raises
    ------
    ValueError
        If a split has fewer than ``batch_size`` examples (it would have no chunk).
    """
    (train_set_x, train_set_y), (valid_set_x, valid_set_y), (test_set_x, test_set_y) = datasets
    sizes = {name: split[0].get_value(borrow=True).shape[0]
             for name, split in zip(("training", "validation", "test"), datasets)}
    for name, size in sizes.items():
        if size < batch_size:
            raise ValueError(f"the {name} split has {size} examples, fewer than one chunk of {batch_size}: "
                             f"logistic_cg needs at least {batch_size} examples in every split")

    minibatch_offset = pt.lscalar("minibatch_offset")  # index of a chunk's first example
    x = pt.matrix("x")  # rasterized images
    y = pt.ivector("y")  # labels
    classifier = LogisticRegression(input=x, n_in=n_in, n_out=n_out)
    cost = classifier.negative_log_likelihood(y)

    def chunk(data):
        return data[minibatch_offset : minibatch_offset + batch_size]

    # PyTensor's own mode, not speedups.mode(): the thread-split products there round
    # differently (other bits on MNIST's chunks), and here the arithmetic is kept the original's
    def compile_on(outputs, data_x, data_y):
        return pytensor.function([minibatch_offset], outputs, givens={x: chunk(data_x), y: chunk(data_y)})

    return CGModel(
        classifier=classifier,
        batch_size=batch_size,
        n_train_batches=sizes["training"] // batch_size,
        n_valid_batches=sizes["validation"] // batch_size,
        n_test_batches=sizes["test"] // batch_size,
        test_model=compile_on(classifier.errors(y), test_set_x, test_set_y),
        validate_model=compile_on(classifier.errors(y), valid_set_x, valid_set_y),
        batch_cost_and_grad=compile_on([cost, pt.grad(cost, classifier.theta)], train_set_x, train_set_y),
    )


def cg_optimization_mnist(n_epochs=50, mnist_pkl_gz="mnist.pkl.gz"):
    """Train logistic regression on MNIST with ``scipy.optimize.fmin_cg``.

    Parameters
    ----------
    n_epochs : int
        Maximal number of CG iterations; each evaluates the objective and its
        gradient over the whole training set once or more (its line search).
    mnist_pkl_gz : str
        The dataset: a path, or a bare name looked up in ``data/``.

    Returns
    -------
    training.LoopState
        The same record as the patience-loop tutorials return, one CG
        iteration standing for an epoch: ``epoch`` iterations run, the best
        validation error, its 0-based ``best_iter`` and test error, one
        ``history`` entry per iteration, ``elapsed`` optimisation seconds and
        ``stopped_by``, the signal (Ctrl-C, SIGTERM) that ended the run
        early, or None.

    Raises
    ------
    ValueError
        If ``n_epochs`` is not an integer >= 1, or a split is smaller than a chunk.
    DatasetError
        If the dataset is missing or not a valid MNIST-like file.
    TrainingAborted
        When a second Ctrl-C (or SIGTERM) comes before the current CG
        iteration has ended.
    """
    check_n_epochs(n_epochs)
    datasets = load_data(mnist_pkl_gz)
    batch_size = 600  # only the size of the chunks the data are cut into

    print("... building the model")
    model = build_cg_model(datasets, batch_size=batch_size)
    classifier = model.classifier
    state = LoopState(patience=n_epochs)  # no early stopping: patience is never the limit

    def callback(theta_value):
        model.set_theta(theta_value)
        this_validation_loss = model.validation_error()
        print(VALIDATION_LINE % (this_validation_loss * 100.0), flush=True)
        new_test_score = None
        if this_validation_loss < state.best_validation_loss:
            state.best_validation_loss = this_validation_loss
            state.best_iter = state.epoch
            state.test_score = new_test_score = model.test_error()
        state.history.append((state.epoch, this_validation_loss, new_test_score))
        state.epoch += 1
        if stop.requested is not None:
            state.stopped_by = stop.requested
            raise StopIteration  # fmin_cg ends cleanly after this iteration

    warm_up(model.test_model, model.validate_model, model.batch_cost_and_grad)
    n_theta = classifier.theta.get_value(borrow=True).size
    print("Optimizing using scipy.optimize.fmin_cg...")
    start_time = timeit.default_timer()
    with StopOnSignal(step="iteration") as stop:
        scipy.optimize.fmin_cg(
            f=model.train_fn,
            # SciPy iterates in float64 whatever floatX is (its line search keeps bounds of
            # 1e100, which overflow float32); the model casts each point to floatX
            x0=np.zeros(n_theta, dtype=np.float64),
            fprime=model.train_fn_grad,
            callback=callback,
            disp=0,
            maxiter=n_epochs,
        )
    end_time = timeit.default_timer()
    state.elapsed = end_time - start_time
    state.done_looping = state.stopped_by is None

    scores = (state.best_validation_loss * 100.0, state.test_score * 100.0)
    if state.epoch == 0:
        print("Optimization ended before its first iteration: no validation score", file=sys.stderr)
    elif state.stopped_by is not None:
        print(INTERRUPTED_LINE % (state.epoch, *scores))
    else:
        print(FINAL_LINE % scores)
    print("The code for file " + os.path.split(__file__)[1] + " ran for %.1fs" % state.elapsed,
          file=sys.stderr)
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("logistic_cg")
