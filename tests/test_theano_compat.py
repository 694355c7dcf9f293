"""Programs written in Theano 1.0's idiom run on deeplearning_tutorial.compat.theano with
their imports changed and nothing else, with no warnings, and give the numbers of
NumPy references (the MRG draws from test_rng_mrg's plain-Python MRG31k3p)."""

from __future__ import annotations

import contextlib
import warnings

import numpy
import pytest
from test_rng_mrg import RefStreams, ref_draw

# the ported imports: these lines are all that a Theano program changes
import deeplearning_tutorial.compat.theano as theano
import deeplearning_tutorial.compat.theano.tensor as T
from deeplearning_tutorial.compat.theano.sandbox.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.compat.theano.tensor.nnet import conv
from deeplearning_tutorial.compat.theano.tensor.shared_randomstreams import RandomStreams
from deeplearning_tutorial.compat.theano.tensor.signal import pool


@pytest.fixture(autouse=True)
def float64_by_default():
    """Theano's default floatX, float64, whatever the process was started with."""
    with theano.config.change_flags(floatX="float64"):
        yield


@contextlib.contextmanager
def no_warnings():
    """A context in which any warning is an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------
# A small denoising autoencoder, as the tutorial writes one
# ----------------------------------------------------------------------------


class TinyDA:
    def __init__(self, numpy_rng, theano_rng=None, input=None, n_visible=6, n_hidden=4, W=None):
        if theano_rng is None:
            theano_rng = MRG_RandomStreams(numpy_rng.randint(2 ** 30))
        if W is None:  # Theano's `if not W:` raises in PyTensor: the one edit left
            bound = 4 * numpy.sqrt(6. / (n_hidden + n_visible))
            W = theano.shared(numpy.asarray(numpy_rng.uniform(-bound, bound, (n_visible, n_hidden)),
                                            dtype=theano.config.floatX), name='W', borrow=True)
        self.W = W
        self.b = theano.shared(numpy.zeros(n_hidden, dtype=theano.config.floatX), name='b', borrow=True)
        self.b_prime = theano.shared(numpy.zeros(n_visible, dtype=theano.config.floatX), name='bvis', borrow=True)
        self.theano_rng = theano_rng
        self.x = T.dmatrix(name='input') if input is None else input
        self.params = [self.W, self.b, self.b_prime]

    def get_corrupted_input(self, input, corruption_level):
        return self.theano_rng.binomial(size=input.shape, n=1, p=1 - corruption_level,
                                        dtype=theano.config.floatX) * input

    def get_cost_updates(self, corruption_level, learning_rate):
        tilde_x = self.get_corrupted_input(self.x, corruption_level)
        y = T.nnet.sigmoid(T.dot(tilde_x, self.W) + self.b)
        z = T.nnet.sigmoid(T.dot(y, self.W.T) + self.b_prime)
        L = T.sum(T.nnet.binary_crossentropy(z, self.x), axis=1)
        cost = T.mean(L)
        gparams = T.grad(cost, self.params)
        updates = [(param, param - learning_rate * gparam) for param, gparam in zip(self.params, gparams)]
        return cost, updates


def numpy_da_cost(W, b, b_prime, x, mask):
    sigmoid = lambda a: 1 / (1 + numpy.exp(-a))  # noqa: E731
    y = sigmoid((mask * x) @ W + b)
    z = sigmoid(y @ W.T + b_prime)
    return numpy.mean(numpy.sum(-(x * numpy.log(z) + (1 - x) * numpy.log(1 - z)), axis=1))


def test_a_denoising_autoencoder_with_in_defaults_and_mrg_corruption():
    data = numpy.random.RandomState(0).uniform(0.05, 0.95, (8, 6))
    with no_warnings():
        train_set_x = theano.shared(numpy.asarray(data, dtype=theano.config.floatX), borrow=True)
        index = T.lscalar('index')
        lr = T.scalar('lr')
        x = T.matrix('x')
        rng = numpy.random.RandomState(123)
        da = TinyDA(numpy_rng=rng, input=x)
        cost, updates = da.get_cost_updates(corruption_level=0.3, learning_rate=lr)
        batch_size = 4
        train_da = theano.function(
            [index, theano.In(lr, value=0.1)], cost, updates=updates,
            givens={x: train_set_x[index * batch_size: (index + 1) * batch_size]})
        W0 = da.W.get_value()
        costs = [train_da(0), train_da(1, lr=0.2), train_da(index=0)]
    # the reference: the same seed (RandomState(123).randint(2 ** 30)), 15360 streams for x.shape
    states = RefStreams(numpy.random.RandomState(123).randint(2 ** 30)).new_set(15360)
    mask = (ref_draw(states, 24, "float64") < 0.7).reshape(4, 6)
    assert costs[0] == pytest.approx(numpy_da_cost(W0, 0, 0, data[:4], mask), rel=1e-12)
    assert all(numpy.isfinite(costs)) and costs[0] != costs[2]
    with pytest.raises(TypeError, match="input index is missing and has no default value"):
        train_da(lr=0.1)


def test_a_gibbs_chain_in_scan_continues_its_mrg_streams_across_calls():
    with no_warnings():
        theano_rng = MRG_RandomStreams(1234)
        v0 = T.matrix('v0')

        def gibbs_step(v):
            p = v * 0.5 + 0.25  # exact probabilities 0.25 and 0.75
            return theano_rng.binomial(size=v.shape, n=1, p=p, dtype=theano.config.floatX)

        chain, updates = theano.scan(gibbs_step, outputs_info=[v0], n_steps=3)
        sample_fn = theano.function([v0], chain[-1], updates=updates)
        v_start = numpy.array([[0., 1., 1.], [1., 0., 0.]])
        got = [sample_fn(v_start), sample_fn(v_start)]
    states = RefStreams(1234).new_set(15360)  # one stream set, threaded through the steps and calls
    for result in got:
        v = v_start
        for _ in range(3):
            v = (ref_draw(states, 6, "float64").reshape(2, 3) < v * 0.5 + 0.25).astype("float64")
        numpy.testing.assert_array_equal(result, v)


def test_the_other_moved_names():
    with no_warnings():
        x = T.matrix('x')
        f = theano.function([x], [T.nnet.softmax(x), T.xlogx.xlogx(x), T.nnet.relu(x - 0.5)])
        xv = numpy.array([[0.0, 1.0, 2.0], [0.5, 0.25, 3.0]])
        softmax, xlogx, relu = f(xv)
        printed = theano.printing.pprint(T.nnet.sigmoid(x))
    e = numpy.exp(xv - xv.max(axis=1, keepdims=True))
    numpy.testing.assert_allclose(softmax, e / e.sum(axis=1, keepdims=True), rtol=1e-14)
    numpy.testing.assert_allclose(xlogx, numpy.where(xv > 0, xv * numpy.log(numpy.where(xv > 0, xv, 1)), 0),
                                  rtol=1e-14)
    numpy.testing.assert_array_equal(relu, numpy.maximum(xv - 0.5, 0))
    assert printed == "Sigmoid(x)"
    from deeplearning_tutorial.compat.theano.tensor.signal.pool import pool_2d

    from deeplearning_tutorial import ops
    assert pool is ops.pool and pool_2d is ops.pool_2d and conv is ops.conv and T.nnet.conv2d is ops.conv2d


def test_categorical_crossentropy_of_classes_and_of_one_hot_rows():
    p = T.matrix('p')
    y = T.ivector('y')
    one_hot = T.matrix('one_hot')
    f = theano.function([p, y, one_hot], [T.nnet.categorical_crossentropy(p, y),
                                          T.nnet.categorical_crossentropy(p, one_hot)])
    pv = numpy.array([[0.2, 0.8], [0.6, 0.4]])
    by_class, by_row = f(pv, numpy.array([1, 0], dtype="int32"), numpy.eye(2)[[1, 0]])
    numpy.testing.assert_allclose(by_class, -numpy.log([0.8, 0.6]), rtol=1e-14)
    numpy.testing.assert_allclose(by_row, -numpy.log([0.8, 0.6]), rtol=1e-14)


def test_shared_randomstreams_is_pytensors_random_stream():
    # PyTensor deprecates it (its numbers are NumPy's): it runs, with PyTensor's warnings
    with pytest.warns(FutureWarning, match="RandomStream is deprecated"):
        srng = RandomStreams(seed=234)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mask = srng.binomial(size=(2, 3), n=1, p=0.5)
        values = theano.function([], mask)()
    assert values.shape == (2, 3) and set(numpy.unique(values)) <= {0, 1}
