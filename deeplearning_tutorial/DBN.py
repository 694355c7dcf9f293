"""Deep belief network (DBN): a deep sigmoid network pre-trained as a stack of RBMs.

The network is an MLP of sigmoid hidden layers
(:class:`~deeplearning_tutorial.mlp.HiddenLayer`) below logistic regression
(:class:`~deeplearning_tutorial.logistic_sgd.LogisticRegression`).  Each
hidden layer shares its weights and hidden biases with a restricted Boltzmann
machine (:class:`~deeplearning_tutorial.rbm.RBM`) whose visible units are the
layer below's output.  Training has two stages:

1. *Pre-training*, greedy and unsupervised: the RBMs are trained one after
   the other, from the bottom, by contrastive divergence (CD-k), each on the
   mean activations of the layers already trained.
2. *Fine-tuning*, supervised: the whole network is trained as an MLP on the
   labels, with the early-stopping loop of the other tutorials
   (:func:`~deeplearning_tutorial.training.train`).

The construction is the stacked denoising autoencoders' (:mod:`deeplearning_tutorial.SdA`)
with RBMs in place of the autoencoders.  Published result (three layers of
1000 units, 100 pre-training epochs per layer at batch size 10, CD-1): 1.27 %
validation and 1.34 % test error.

Run it with ``python scripts/DBN.py`` or ``python -m deeplearning_tutorial.DBN``
(``--help`` for options).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from deeplearning_tutorial import speedups
from deeplearning_tutorial.compat.theano.compile import In
from deeplearning_tutorial.compat.theano.compile import function as theano_function
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.rbm import RBM
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.SdA import SdA, sigmoid_network
from deeplearning_tutorial.training import EpochLoopState, epoch_loop, say, train, warm_up
from deeplearning_tutorial.validation import (
    check_hidden_layers_sizes,
    check_hyperparameters,
    check_positive_ints,
    check_pretraining,
)

# the network test_DBN trains
HIDDEN_LAYERS_SIZES = [1000, 1000, 1000]


class DBN:
    """A deep belief network: sigmoid layers, each shared with an RBM, below logistic regression.

    Parameters
    ----------
    numpy_rng : numpy.random.RandomState
        Draws the seed of ``theano_rng`` (when none is given), then each layer's weights, from the bottom.
    theano_rng : MRG_RandomStreams, optional
        Draws the RBMs' Gibbs samples; by default a new one seeded with
        ``numpy_rng.randint(2**30)``.
    n_ins : int
        Input units (784 for MNIST's pixels).
    hidden_layers_sizes : list of int
        Units of each hidden layer, from the bottom; at least one.
    n_outs : int
        Number of classes.

    Attributes
    ----------
    x, y : pytensor variables
        The input matrix and the labels (int32 vector).
    sigmoid_layers : list of HiddenLayer
    rbm_layers : list of RBM
        The RBMs, sharing ``W`` and ``hbias`` with the sigmoid layers' ``W`` and ``b``;
        each has its own visible bias.
    logLayer : LogisticRegression
    params : list
        The parameters fine-tuning changes: each sigmoid layer's ``W`` and ``b``,
        then the logistic layer's (the RBMs' visible biases are not included).
    finetune_cost, errors : pytensor scalars
        The negative log-likelihood of ``y`` and the error rate.
    """

    def __init__(self, numpy_rng, theano_rng=None, n_ins=784, hidden_layers_sizes=[500, 500],  # noqa: B006
                 n_outs=10):  # (the original's default list; never changed)
        check_hidden_layers_sizes(hidden_layers_sizes)
        self.n_layers = len(hidden_layers_sizes)
        if theano_rng is None:
            theano_rng = MRG_RandomStreams(numpy_rng.randint(2 ** 30))
        self.x = pt.matrix("x")
        self.y = pt.ivector("y")
        self.sigmoid_layers, self.logLayer, self.params = sigmoid_network(
            numpy_rng, self.x, n_ins, hidden_layers_sizes, n_outs)
        # each RBM shares its layer's weights and hidden bias (and draws nothing from numpy_rng)
        self.rbm_layers = [RBM(numpy_rng=numpy_rng, theano_rng=theano_rng, input=layer.input,
                               n_visible=n_in, n_hidden=n_hidden, W=layer.W, hbias=layer.b)
                           for layer, n_in, n_hidden in zip(self.sigmoid_layers, [n_ins, *hidden_layers_sizes],
                                                            hidden_layers_sizes)]
        self.finetune_cost = self.logLayer.negative_log_likelihood(self.y)
        self.errors = self.logLayer.errors(self.y)

    def pretraining_functions(self, train_set_x, batch_size, k, mode=None):
        """One compiled function per layer that makes a CD-k step of its RBM on a minibatch.

        Each is called as ``fn(index=i, lr=r)`` (``lr`` 0.1 by default, through
        Theano's ``In(value=...)`` of :mod:`deeplearning_tutorial.compat.theano`)
        and returns the RBM's reconstruction cost on minibatch ``i``.  Building
        them gives each RBM's three binomial draws (the data's hidden sample,
        the chain's visible and hidden samples) their stream sets of
        ``theano_rng``, bottom first.
        """
        index = pt.lscalar("index")
        learning_rate = pt.scalar("lr")
        batch_begin = index * batch_size
        batch_end = batch_begin + batch_size
        pretrain_fns = []
        for rbm in self.rbm_layers:
            cost, updates = rbm.get_cost_updates(learning_rate, persistent=None, k=k)
            pretrain_fns.append(theano_function(
                inputs=[index, In(learning_rate, value=0.1)], outputs=cost, updates=updates,
                givens={self.x: train_set_x[batch_begin:batch_end]}, mode=speedups.mode(mode),
            ))
        return pretrain_fns

    # fine-tuning trains the same MLP as the SdA's, from the same attributes
    finetune_model = SdA.finetune_model
    build_finetune_functions = SdA.build_finetune_functions


def rebuild_classifier(x, config):
    """The DBN of a saved run on the image matrix ``x``, for
    :func:`~deeplearning_tutorial.programs.load_best_model`: the classifier, its predicted
    classes, its parameters (as fine-tuning saves them) and None (any batch size)."""
    dbn = DBN(numpy_rng=np.random.RandomState(0), theano_rng=MRG_RandomStreams(1), n_ins=28 * 28,
              hidden_layers_sizes=HIDDEN_LAYERS_SIZES, n_outs=10)
    y_pred = clone_replace(dbn.logLayer.y_pred, {dbn.x: x})
    return dbn, y_pred, dbn.params, None


def test_DBN(finetune_lr=0.1, pretraining_epochs=100, pretrain_lr=0.01, k=1, training_epochs=1000,
             dataset="mnist.pkl.gz", batch_size=10, *, seed=123):
    """Pre-train a DBN of three 1000-unit layers on MNIST by CD-k, then fine-tune it with early stopping.

    Each layer's RBM is trained for ``pretraining_epochs``, from the bottom;
    fine-tuning is the patience loop with a patience of 4 epochs.  Beyond the
    original: ``seed`` (the original's RandomState(123)) is an argument.

    Parameters
    ----------
    finetune_lr : float
        The fine-tuning's SGD step size.
    pretraining_epochs : int
        Epochs of pre-training per layer.
    pretrain_lr : float
        The pre-training's step size.
    k : int
        Gibbs steps of each contrastive-divergence update.
    training_epochs : int
        The most epochs of fine-tuning.
    dataset : str or path-like
        The dataset, as :func:`~deeplearning_tutorial.logistic_sgd.load_data` takes it.
    batch_size : int
        Examples per minibatch.
    seed : int
        Seed of the RandomState the Gibbs sampler's generator seed and the weights are drawn from.

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
    check_positive_ints("k", [k], count=1)
    train_set_x = datasets[0][0]
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    name = os.path.split(__file__)[1]

    numpy_rng = np.random.RandomState(seed)
    print("... building the model")
    dbn = DBN(numpy_rng=numpy_rng, n_ins=28 * 28, hidden_layers_sizes=HIDDEN_LAYERS_SIZES, n_outs=10)

    print("... getting the pretraining functions")
    pretraining_fns = dbn.pretraining_functions(train_set_x=train_set_x, batch_size=batch_size, k=k)
    warm_up(*pretraining_fns)

    print("... pre-training the model")
    pretraining = EpochLoopState()
    for i, pretrain_fn in enumerate(pretraining_fns):
        def train_minibatch(index, pretrain_fn=pretrain_fn):
            return pretrain_fn(index=index, lr=pretrain_lr)

        def report(epoch, costs, i=i):
            mean = np.mean(costs, dtype="float64")
            # the original prints the label, then (after a space) the mean as Python prints it
            say("Pre-training layer %i, epoch %d, cost " % (i, epoch) + " " + str(mean))
            return mean

        epoch_loop(train_minibatch, n_train_batches, pretraining_epochs, report, pretraining, f"layer {i}")
        if pretraining.stopped_by is not None:
            return pretraining
    print(f"The pretraining code for file {name} ran for {pretraining.elapsed / 60.0:.2f}m", file=sys.stderr)

    print("... getting the finetuning functions")
    model = dbn.finetune_model(datasets, batch_size, finetune_lr)
    print("... finetuning the model")
    state = train(model, training_epochs, patience=4 * n_train_batches)
    if state.stopped_by is not None:
        return state
    print(("Optimization complete with best validation score of %f %%, obtained at iteration %i, "
           "with test performance %f %%")
          % (state.best_validation_loss * 100.0, state.best_iter + 1, state.test_score * 100.0))
    print(f"The fine tuning code for file {name} ran for {state.elapsed / 60.0:.2f}m", file=sys.stderr)
    return state


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("DBN")
