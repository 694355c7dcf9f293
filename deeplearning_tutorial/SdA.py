"""Stacked denoising autoencoders (SdA): a deep sigmoid network pre-trained one layer at a time.

The network is an MLP of sigmoid hidden layers
(:class:`~deeplearning_tutorial.mlp.HiddenLayer`) below logistic regression
(:class:`~deeplearning_tutorial.logistic_sgd.LogisticRegression`).  Each
hidden layer shares its weights and hidden biases with a denoising
autoencoder (:class:`~deeplearning_tutorial.dA.dA`) whose input is the layer
below's output.  Training has two stages:

1. *Pre-training*, greedy and unsupervised: the autoencoders are trained one
   after the other, from the bottom, each to rebuild its (corrupted) input.
2. *Fine-tuning*, supervised: the whole network is trained as an MLP on the
   labels, with the early-stopping loop of the other tutorials
   (:func:`~deeplearning_tutorial.training.train`).

Published result (15 pre-training epochs per layer, batch size 1): 1.39 %
validation and 1.3 % test error.

Run it with ``python scripts/SdA.py`` or ``python -m deeplearning_tutorial.SdA``
(``--help`` for options).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from deeplearning_tutorial import speedups
from deeplearning_tutorial.compat.theano.compile import In
from deeplearning_tutorial.compat.theano.compile import function as theano_function
from deeplearning_tutorial.dA import check_corruption_level, dA
from deeplearning_tutorial.logistic_sgd import LogisticRegression, load_data
from deeplearning_tutorial.mlp import HiddenLayer
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.training import CompiledModel, EpochLoopState, epoch_loop, say, train, warm_up
from deeplearning_tutorial.validation import check_hidden_layers_sizes, check_hyperparameters, check_pretraining

# the network test_SdA trains
HIDDEN_LAYERS_SIZES = [1000, 1000, 1000]
CORRUPTION_LEVELS = [0.1, 0.2, 0.3]


def check_layers(hidden_layers_sizes, corruption_levels) -> None:
    """Raise ValueError unless there is at least one layer, each of a positive size, and one
    corruption level in [0, 1) per layer."""
    check_hidden_layers_sizes(hidden_layers_sizes)
    if not isinstance(corruption_levels, list | tuple) or len(corruption_levels) != len(hidden_layers_sizes):
        raise ValueError(f"corruption_levels must give one level per layer ({len(hidden_layers_sizes)}), "
                         f"got {corruption_levels!r}")
    for level in corruption_levels:
        check_corruption_level(level)


def sigmoid_network(numpy_rng, x, n_ins, hidden_layers_sizes, n_outs):
    """The supervised network that an SdA or a DBN pre-trains layer by layer.

    Sigmoid :class:`~deeplearning_tutorial.mlp.HiddenLayer` s of ``hidden_layers_sizes``
    units on ``x``, drawn from ``numpy_rng`` bottom first, and a
    :class:`~deeplearning_tutorial.logistic_sgd.LogisticRegression` of ``n_outs``
    classes on top.  Returns the hidden layers, the logistic layer and the
    parameters (each hidden layer's ``W, b`` bottom first, then the logistic
    layer's), the order fine-tuning updates and saves them in.
    """
    sigmoid_layers: list[HiddenLayer] = []
    for i, n_hidden in enumerate(hidden_layers_sizes):
        sigmoid_layers.append(HiddenLayer(rng=numpy_rng, input=x if i == 0 else sigmoid_layers[-1].output,
                                          n_in=n_ins if i == 0 else hidden_layers_sizes[i - 1], n_out=n_hidden,
                                          activation=pt.sigmoid))
    log_layer = LogisticRegression(input=sigmoid_layers[-1].output, n_in=hidden_layers_sizes[-1], n_out=n_outs)
    params = [param for layer in [*sigmoid_layers, log_layer] for param in layer.params]
    return sigmoid_layers, log_layer, params


class SdA:
    """Stacked denoising autoencoders: sigmoid layers, each shared with a dA, below logistic regression.

    Parameters
    ----------
    numpy_rng : numpy.random.RandomState
        Draws the seed of ``theano_rng`` (when none is given), then each layer's weights, from the bottom.
    theano_rng : MRG_RandomStreams, optional
        Draws the autoencoders' corruption; by default a new one seeded with
        ``numpy_rng.randint(2**30)``.
    n_ins : int
        Input units (784 for MNIST's pixels).
    hidden_layers_sizes : list of int
        Units of each hidden layer, from the bottom; at least one.
    n_outs : int
        Number of classes.
    corruption_levels : list of float
        One per layer; accepted and checked but, as in the original, not
        used: the levels are given to the pre-training functions.

    Attributes
    ----------
    x, y : pytensor variables
        The input matrix and the labels (int32 vector).
    sigmoid_layers : list of HiddenLayer
    dA_layers : list of dA
        The autoencoders, sharing ``W`` and ``b`` with the sigmoid layers.
    logLayer : LogisticRegression
    params : list
        The parameters fine-tuning changes: each sigmoid layer's ``W`` and ``b``,
        then the logistic layer's (the autoencoders' visible biases are not included).
    finetune_cost, errors : pytensor scalars
        The negative log-likelihood of ``y`` and the error rate.
    """

    def __init__(self, numpy_rng, theano_rng=None, n_ins=784, hidden_layers_sizes=[500, 500], n_outs=10,  # noqa: B006
                 corruption_levels=[0.1, 0.1]):  # noqa: B006  (the original's defaults; never changed)
        check_layers(hidden_layers_sizes, corruption_levels)
        self.n_layers = len(hidden_layers_sizes)
        if theano_rng is None:
            theano_rng = MRG_RandomStreams(numpy_rng.randint(2 ** 30))
        self.x = pt.matrix("x")
        self.y = pt.ivector("y")
        self.sigmoid_layers, self.logLayer, self.params = sigmoid_network(
            numpy_rng, self.x, n_ins, hidden_layers_sizes, n_outs)
        # each dA shares its layer's weights and hidden bias (and draws nothing from numpy_rng)
        self.dA_layers = [dA(numpy_rng=numpy_rng, theano_rng=theano_rng, input=layer.input,
                             n_visible=n_in, n_hidden=n_hidden, W=layer.W, bhid=layer.b)
                          for layer, n_in, n_hidden in zip(self.sigmoid_layers, [n_ins, *hidden_layers_sizes],
                                                           hidden_layers_sizes)]
        self.finetune_cost = self.logLayer.negative_log_likelihood(self.y)
        self.errors = self.logLayer.errors(self.y)

    def pretraining_functions(self, train_set_x, batch_size, mode=None):
        """One compiled function per layer that trains its dA on a minibatch.

        Each is called as ``fn(index=i, corruption=c, lr=r)`` (``corruption``
        0.2 and ``lr`` 0.1 by default, through Theano's ``In(value=...)`` of
        :mod:`deeplearning_tutorial.compat.theano`) and returns the dA's cost on minibatch ``i``.
        Building them gives each dA's corruption its stream set of ``theano_rng``, bottom first.
        """
        index = pt.lscalar("index")
        corruption_level = pt.scalar("corruption")
        learning_rate = pt.scalar("lr")
        batch_begin = index * batch_size
        batch_end = batch_begin + batch_size
        pretrain_fns = []
        for da in self.dA_layers:
            cost, updates = da.get_cost_updates(corruption_level, learning_rate)
            pretrain_fns.append(theano_function(
                inputs=[index, In(corruption_level, value=0.2), In(learning_rate, value=0.1)],
                outputs=cost, updates=updates, givens={self.x: train_set_x[batch_begin:batch_end]},
                mode=speedups.mode(mode),
            ))
        return pretrain_fns

    def finetune_model(self, datasets, batch_size, learning_rate, mode=None) -> CompiledModel:
        """The fine-tuning's compiled minibatch functions, as :func:`~deeplearning_tutorial.training.train`
        takes them: SGD on ``finetune_cost`` and the error rate of a validation or test minibatch."""
        (train_set_x, train_set_y), (valid_set_x, valid_set_y), (test_set_x, test_set_y) = datasets
        n_valid_batches = valid_set_x.get_value(borrow=True).shape[0] // batch_size
        n_test_batches = test_set_x.get_value(borrow=True).shape[0] // batch_size
        n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
        index = pt.lscalar("index")
        mode = speedups.mode(mode)

        def minibatch(data):
            return data[index * batch_size : (index + 1) * batch_size]

        gparams = [pt.grad(self.finetune_cost, param) for param in self.params]
        updates = [(param, param - gparam * learning_rate) for param, gparam in zip(self.params, gparams)]
        train_fn = pytensor.function([index], self.finetune_cost, updates=updates, name="train", mode=mode,
                                     givens={self.x: minibatch(train_set_x), self.y: minibatch(train_set_y)})
        test_score_i = pytensor.function([index], self.errors, name="test", mode=mode,
                                         givens={self.x: minibatch(test_set_x), self.y: minibatch(test_set_y)})
        valid_score_i = pytensor.function([index], self.errors, name="valid", mode=mode,
                                          givens={self.x: minibatch(valid_set_x), self.y: minibatch(valid_set_y)})
        return CompiledModel(self, self.params, train_fn, valid_score_i, test_score_i,
                             n_train_batches, n_valid_batches, n_test_batches)

    def build_finetune_functions(self, datasets, batch_size, learning_rate):
        """``(train_fn, valid_score, test_score)``: ``train_fn(index)`` fine-tunes on a minibatch and
        returns its cost; ``valid_score()`` and ``test_score()`` list the error of every whole
        minibatch of the validation and test sets."""
        model = self.finetune_model(datasets, batch_size, learning_rate)

        def valid_score():
            return [model.validate_model(i) for i in range(model.n_valid_batches)]

        def test_score():
            return [model.test_model(i) for i in range(model.n_test_batches)]

        return model.train_model, valid_score, test_score


def rebuild_classifier(x, config):
    """The SdA of a saved run on the image matrix ``x``, for
    :func:`~deeplearning_tutorial.programs.load_best_model`: the classifier, its predicted
    classes, its parameters (as fine-tuning saves them) and None (any batch size)."""
    sda = SdA(numpy_rng=np.random.RandomState(0), theano_rng=MRG_RandomStreams(1), n_ins=28 * 28,
              hidden_layers_sizes=HIDDEN_LAYERS_SIZES, n_outs=10, corruption_levels=CORRUPTION_LEVELS)
    y_pred = clone_replace(sda.logLayer.y_pred, {sda.x: x})
    return sda, y_pred, sda.params, None


def test_SdA(finetune_lr=0.1, pretraining_epochs=15, pretrain_lr=0.001, training_epochs=1000,
             dataset="mnist.pkl.gz", batch_size=1, *, seed=89677):
    """Pre-train an SdA of three 1000-unit layers on MNIST, then fine-tune it with early stopping.

    Each layer's dA is trained for ``pretraining_epochs`` with corruption
    0.1, 0.2 and 0.3 from the bottom; fine-tuning is the patience loop with
    a patience of 10 epochs.  Beyond the original: ``seed`` (the original's
    RandomState(89677)) is an argument.

    Parameters
    ----------
    finetune_lr : float
        The fine-tuning's SGD step size.
    pretraining_epochs : int
        Epochs of pre-training per layer.
    pretrain_lr : float
        The pre-training's step size.
    training_epochs : int
        The most epochs of fine-tuning.
    dataset : str or path-like
        The dataset, as :func:`~deeplearning_tutorial.logistic_sgd.load_data` takes it.
    batch_size : int
        Examples per minibatch.
    seed : int
        Seed of the RandomState the corruption's generator seed and the weights are drawn from.

    Returns
    -------
    LoopState or EpochLoopState
        The fine-tuning's final state (as the other tutorials return it);
        the pre-training's record if a signal stopped the run during it.

    Raises
    ------
    ValueError
        For arguments no run can use, before anything is compiled.
    DatasetError
        When the dataset cannot be loaded.
    """
    datasets = load_data(dataset)
    check_hyperparameters(learning_rate=finetune_lr, n_epochs=training_epochs, batch_size=batch_size,
                          split_sizes=[s[0].get_value(borrow=True).shape[0] for s in datasets])
    check_pretraining(pretrain_lr, pretraining_epochs)
    train_set_x = datasets[0][0]
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    name = os.path.split(__file__)[1]

    numpy_rng = np.random.RandomState(seed)
    print("... building the model")
    sda = SdA(numpy_rng=numpy_rng, n_ins=28 * 28, hidden_layers_sizes=HIDDEN_LAYERS_SIZES, n_outs=10,
              corruption_levels=CORRUPTION_LEVELS)

    print("... getting the pretraining functions")
    pretraining_fns = sda.pretraining_functions(train_set_x=train_set_x, batch_size=batch_size)
    warm_up(*pretraining_fns)

    print("... pre-training the model")
    pretraining = EpochLoopState()
    for i, (pretrain_fn, level) in enumerate(zip(pretraining_fns, CORRUPTION_LEVELS)):
        def train_minibatch(index, pretrain_fn=pretrain_fn, level=level):
            return pretrain_fn(index=index, corruption=level, lr=pretrain_lr)

        def report(epoch, costs, i=i):
            mean = np.mean(costs, dtype="float64")
            say("Pre-training layer %i, epoch %d, cost %f" % (i, epoch, mean))
            return mean

        epoch_loop(train_minibatch, n_train_batches, pretraining_epochs, report, pretraining, f"layer {i}")
        if pretraining.stopped_by is not None:
            return pretraining
    print(f"The pretraining code for file {name} ran for {pretraining.elapsed / 60.0:.2f}m", file=sys.stderr)

    print("... getting the finetuning functions")
    model = sda.finetune_model(datasets, batch_size, finetune_lr)
    print("... finetunning the model")
    state = train(model, training_epochs, patience=10 * n_train_batches)
    if state.stopped_by is not None:
        return state
    print(("Optimization complete with best validation score of %f %%, on iteration %i, "
           "with test performance %f %%")
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print(f"The training code for file {name} ran for {state.elapsed / 60.0:.2f}m", file=sys.stderr)
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("SdA")
