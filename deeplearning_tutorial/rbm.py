"""The restricted Boltzmann machine (RBM), trained on MNIST by persistent contrastive divergence.

An RBM is an energy-based model of binary visible units ``v`` and hidden units
``h``: ``E(v, h) = -b'v - c'h - h'W'v`` (``b`` the visible bias ``vbias``,
``c`` the hidden bias ``hbias``, ``W`` a visible x hidden matrix).  With no
connections inside a layer, the units of one layer are independent given the
other: ``P(h_j = 1 | v) = sigm(c_j + (v W)_j)`` and
``P(v_i = 1 | h) = sigm(b_i + (W h)_i)``, so Gibbs sampling alternates whole
layers.  Summing the hidden units out gives the free energy
``F(v) = -b'v - sum_j log(1 + exp(c_j + (v W)_j))``, and the log-likelihood's
gradient is ``-dF(v)/dtheta`` at the data minus its expectation under the
model, estimated at the end of a Gibbs chain: contrastive divergence (CD-k)
starts that chain at the data, persistent CD (PCD-k) continues it from one
minibatch to the next.

The Gibbs chain runs in :func:`pytensor.scan`; its binomial draws come from
:class:`~deeplearning_tutorial.rng_mrg.MRG_RandomStreams`, whose states scan
returns as updates that the compiled function applies, so every call continues
the random streams where the last stopped.
"""

from __future__ import annotations

import os
import timeit
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial.compat.theano.scan_module import scan
from deeplearning_tutorial.logistic_sgd import load_data
from deeplearning_tutorial.mlp import sigmoid_weights
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams
from deeplearning_tutorial.training import LoopState
from deeplearning_tutorial.utils import save_image, tile_raster_images


class RBM:
    """A restricted Boltzmann machine with binary units.

    Parameters
    ----------
    input : symbolic matrix, optional
        The minibatch of visible vectors, one per row (a new matrix when absent).
    n_visible, n_hidden : int
        The numbers of visible and hidden units.
    W : shared (n_visible, n_hidden) matrix, optional
        The weights, to share them with another model (a deep belief network's
        layer); drawn uniformly in ``+-4 sqrt(6 / (n_hidden + n_visible))`` when absent.
    hbias, vbias : shared vectors, optional
        The hidden and visible biases; zeros when absent.
    numpy_rng : numpy.random.RandomState, optional
        Draws the weights; ``RandomState(1234)`` when absent.
    theano_rng : MRG_RandomStreams, optional
        Draws the Gibbs samples; seeded from ``numpy_rng`` when absent (before the weights are drawn).
    """

    def __init__(self, input=None, n_visible=784, n_hidden=500, W=None, hbias=None, vbias=None,
                 numpy_rng=None, theano_rng=None):
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        floatX = pytensor.config.floatX
        if numpy_rng is None:
            numpy_rng = np.random.RandomState(1234)
        if theano_rng is None:
            theano_rng = MRG_RandomStreams(numpy_rng.randint(2**30))
        if W is None:
            W = sigmoid_weights(numpy_rng, n_visible, n_hidden)
        if hbias is None:
            hbias = pytensor.shared(value=np.zeros(n_hidden, dtype=floatX), name="hbias", borrow=True)
        if vbias is None:
            vbias = pytensor.shared(value=np.zeros(n_visible, dtype=floatX), name="vbias", borrow=True)
        self.input = input if input is not None else pt.matrix("input")
        self.W = W
        self.hbias = hbias
        self.vbias = vbias
        self.theano_rng = theano_rng
        self.params = [self.W, self.hbias, self.vbias]

    def free_energy(self, v_sample):
        """``F(v) = -v . vbias - sum_j softplus((v W + hbias)_j)`` of each row."""
        wx_b = pt.dot(v_sample, self.W) + self.hbias
        vbias_term = pt.dot(v_sample, self.vbias)
        # log(1 + exp(x)), in the form that neither overflows nor loses small values
        hidden_term = pt.sum(pt.softplus(wx_b), axis=1)
        return -hidden_term - vbias_term

    def propup(self, vis):
        """The hidden units' pre-sigmoid activations and their probabilities of being on, given ``vis``."""
        pre_sigmoid_activation = pt.dot(vis, self.W) + self.hbias
        return [pre_sigmoid_activation, pt.sigmoid(pre_sigmoid_activation)]

    def sample_h_given_v(self, v0_sample):
        """The hidden layer given the visible: pre-sigmoid activations, means and a binary sample."""
        pre_sigmoid_h1, h1_mean = self.propup(v0_sample)
        h1_sample = self.theano_rng.binomial(size=h1_mean.shape, n=1, p=h1_mean, dtype=pytensor.config.floatX)
        return [pre_sigmoid_h1, h1_mean, h1_sample]

    def propdown(self, hid):
        """The visible units' pre-sigmoid activations and their probabilities of being on, given ``hid``."""
        pre_sigmoid_activation = pt.dot(hid, self.W.T) + self.vbias
        return [pre_sigmoid_activation, pt.sigmoid(pre_sigmoid_activation)]

    def sample_v_given_h(self, h0_sample):
        """The visible layer given the hidden: pre-sigmoid activations, means and a binary sample."""
        pre_sigmoid_v1, v1_mean = self.propdown(h0_sample)
        v1_sample = self.theano_rng.binomial(size=v1_mean.shape, n=1, p=v1_mean, dtype=pytensor.config.floatX)
        return [pre_sigmoid_v1, v1_mean, v1_sample]

    def gibbs_hvh(self, h0_sample):
        """One Gibbs step from the hidden layer: v given h, then h given that v (six values)."""
        pre_sigmoid_v1, v1_mean, v1_sample = self.sample_v_given_h(h0_sample)
        pre_sigmoid_h1, h1_mean, h1_sample = self.sample_h_given_v(v1_sample)
        return [pre_sigmoid_v1, v1_mean, v1_sample, pre_sigmoid_h1, h1_mean, h1_sample]

    def gibbs_vhv(self, v0_sample):
        """One Gibbs step from the visible layer: h given v, then v given that h (six values)."""
        pre_sigmoid_h1, h1_mean, h1_sample = self.sample_h_given_v(v0_sample)
        pre_sigmoid_v1, v1_mean, v1_sample = self.sample_v_given_h(h1_sample)
        return [pre_sigmoid_h1, h1_mean, h1_sample, pre_sigmoid_v1, v1_mean, v1_sample]

    def get_cost_updates(self, lr=0.1, persistent=None, k=1):
        """One step of CD-k (``persistent`` None) or PCD-k: a monitoring cost and the updates.

        Parameters
        ----------
        lr : float or scalar
            The learning rate.
        persistent : shared (batch, n_hidden) matrix, optional
            The hidden state of the persistent chains (PCD); each call continues
            them and stores where they ended.  None: CD, the chain starts at the
            hidden sample of the data.
        k : int
            Gibbs steps per update.

        Returns
        -------
        (monitoring_cost, updates)
            The pseudo-likelihood (PCD) or reconstruction (CD) cost, and the
            updates of the parameters, the chains and the random streams.
        """
        if not (isinstance(k, int | np.integer) and k >= 1):
            raise ValueError(f"RBM.get_cost_updates: k={k!r} must be a positive integer (Gibbs steps per update)")
        if persistent is not None:
            shape = persistent.get_value(borrow=True).shape
            if len(shape) != 2 or shape[1] != self.n_hidden:
                raise ValueError(f"RBM.get_cost_updates: the persistent chains have shape {shape}; they must be "
                                 f"(batch_size, n_hidden={self.n_hidden}), one row per example of a minibatch")
        # positive phase
        pre_sigmoid_ph, ph_mean, ph_sample = self.sample_h_given_v(self.input)
        chain_start = ph_sample if persistent is None else persistent
        # negative phase: k Gibbs steps; the updates carry the random streams' states
        (
            [pre_sigmoid_nvs, nv_means, nv_samples, pre_sigmoid_nhs, nh_means, nh_samples],
            updates,
        ) = scan(self.gibbs_hvh, outputs_info=[None, None, None, None, None, chain_start],
                 n_steps=k, name="gibbs_hvh")
        updates = dict(updates)
        chain_end = nv_samples[-1]
        cost = pt.mean(self.free_energy(self.input)) - pt.mean(self.free_energy(chain_end))
        # the chain's end is a sample, not a function of the parameters to differentiate
        gparams = pytensor.grad(cost, self.params, consider_constant=[chain_end])
        for gparam, param in zip(gparams, self.params):
            updates[param] = param - gparam * pt.cast(lr, dtype=pytensor.config.floatX)
        if persistent is not None:
            updates[persistent] = nh_samples[-1]
            monitoring_cost = self.get_pseudo_likelihood_cost(updates)
        else:
            monitoring_cost = self.get_reconstruction_cost(updates, pre_sigmoid_nvs[-1])
        return monitoring_cost, updates

    def get_pseudo_likelihood_cost(self, updates):
        """A stochastic estimate of the pseudo-likelihood: ``n_visible log sigm(F(x~) - F(x))``.

        ``x`` is the rounded input and ``x~`` the same with one bit flipped; the
        bit's index is a shared counter, stepped (cyclically) by an update added
        to ``updates``, so successive calls visit every bit.
        """
        bit_i_idx = pytensor.shared(value=0, name="bit_i_idx")
        xi = pt.round(self.input, mode="half_to_even")
        fe_xi = self.free_energy(xi)
        xi_flip = pt.set_subtensor(xi[:, bit_i_idx], 1 - xi[:, bit_i_idx])
        fe_xi_flip = self.free_energy(xi_flip)
        cost = pt.mean(self.n_visible * pt.log(pt.sigmoid(fe_xi_flip - fe_xi)))
        updates[bit_i_idx] = (bit_i_idx + 1) % self.n_visible
        return cost

    def get_reconstruction_cost(self, updates, pre_sigmoid_nv):
        """The mean over rows of ``sum_i x_i log sigm(a_i) + (1 - x_i) log(1 - sigm(a_i))``,
        ``a`` the chain's last pre-sigmoid visible activations (a negative number)."""
        return pt.mean(pt.sum(self.input * pt.log(pt.sigmoid(pre_sigmoid_nv))
                              + (1 - self.input) * pt.log(1 - pt.sigmoid(pre_sigmoid_nv)), axis=1))


def test_rbm(learning_rate=0.1, training_epochs=15, dataset="mnist.pkl.gz", batch_size=20, n_chains=20,
             n_samples=10, output_folder="rbm_plots", n_hidden=500):
    """Train an RBM on MNIST with PCD-15, then draw samples from it by Gibbs sampling.

    After each epoch it prints the mean pseudo-likelihood cost and writes the
    first 100 filters to ``filters_at_epoch_<epoch>.png``; then ``n_chains``
    chains started from test images run ``n_samples`` times 1000 Gibbs steps,
    one row of ``samples.png`` each.

    Parameters
    ----------
    learning_rate : float
        The learning rate of the gradient steps.
    training_epochs : int
        Passes over the training set.
    dataset : str
        The dataset: a path, or a bare name looked up in ``data/``.
    batch_size : int
        Examples per minibatch, and the number of persistent chains.
    n_chains : int
        Sampling chains, run side by side.
    n_samples : int
        Rows of the samples' picture.
    output_folder : str
        Where the pictures are written (created if missing).
    n_hidden : int
        Hidden units.

    Returns
    -------
    training.LoopState
        ``epoch`` the epochs trained and ``elapsed`` the training seconds
        (writing the pictures excluded).
    """
    for name, value in (("training_epochs", training_epochs), ("batch_size", batch_size),
                        ("n_chains", n_chains), ("n_samples", n_samples), ("n_hidden", n_hidden)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"test_rbm: {name}={value!r} must be a positive integer")
    datasets = load_data(dataset)
    train_set_x = datasets[0][0]
    test_set_x = datasets[2][0]
    n_train_batches = train_set_x.get_value(borrow=True).shape[0] // batch_size
    number_of_test_samples = test_set_x.get_value(borrow=True).shape[0]
    if n_train_batches < 1:
        raise ValueError(f"test_rbm: batch_size={batch_size} is larger than the training set "
                         f"({train_set_x.get_value(borrow=True).shape[0]} examples)")
    if n_chains >= number_of_test_samples:
        raise ValueError(f"test_rbm: n_chains={n_chains} must be below the number of test images "
                         f"({number_of_test_samples}), where the chains start")

    index = pt.lscalar()  # index to a minibatch
    x = pt.matrix("x")  # the data, one image per row
    rng = np.random.RandomState(123)
    theano_rng = MRG_RandomStreams(rng.randint(2**30))
    # the hidden state of the persistent chains, one per example of a minibatch
    persistent_chain = pytensor.shared(np.zeros((batch_size, n_hidden), dtype=pytensor.config.floatX), borrow=True)
    rbm = RBM(input=x, n_visible=28 * 28, n_hidden=n_hidden, numpy_rng=rng, theano_rng=theano_rng)
    cost, updates = rbm.get_cost_updates(lr=learning_rate, persistent=persistent_chain, k=15)

    folder = Path(output_folder)
    os.makedirs(folder, exist_ok=True)
    train_rbm = pytensor.function([index], cost, updates=updates,
                                  givens={x: train_set_x[index * batch_size: (index + 1) * batch_size]},
                                  name="train_rbm")

    plotting_time = 0.0
    start_time = timeit.default_timer()
    for epoch in range(training_epochs):
        mean_cost = [train_rbm(batch_index) for batch_index in range(n_train_batches)]
        print("Training epoch %d, cost is " % epoch, np.mean(mean_cost), flush=True)
        plotting_start = timeit.default_timer()
        filters = tile_raster_images(rbm.W.get_value(borrow=True).T, img_shape=(28, 28), tile_shape=(10, 10),
                                     tile_spacing=(1, 1))
        save_image(filters, folder / ("filters_at_epoch_%i.png" % epoch), cmap="gray", vmin=0, vmax=255)
        plotting_time += timeit.default_timer() - plotting_start
    end_time = timeit.default_timer()
    pretraining_time = (end_time - start_time) - plotting_time
    print("Training took %f minutes" % (pretraining_time / 60.0))

    # sampling: chains started from test images, 1000 Gibbs steps between pictures
    test_idx = rng.randint(number_of_test_samples - n_chains)
    persistent_vis_chain = pytensor.shared(
        np.asarray(test_set_x.get_value(borrow=True)[test_idx:test_idx + n_chains], dtype=pytensor.config.floatX))
    plot_every = 1000
    (
        [presig_hids, hid_mfs, hid_samples, presig_vis, vis_mfs, vis_samples],
        sample_updates,
    ) = scan(rbm.gibbs_vhv, outputs_info=[None, None, None, None, None, persistent_vis_chain],
             n_steps=plot_every, name="gibbs_vhv")
    sample_updates = dict(sample_updates)
    sample_updates[persistent_vis_chain] = vis_samples[-1]
    sample_fn = pytensor.function([], [vis_mfs[-1], vis_samples[-1]], updates=sample_updates, name="sample_fn")

    image_data = np.zeros((29 * n_samples + 1, 29 * n_chains - 1), dtype="uint8")
    for idx in range(n_samples):
        vis_mf, vis_sample = sample_fn()
        print(" ... plotting sample %d" % idx, flush=True)
        image_data[29 * idx:29 * idx + 28, :] = tile_raster_images(
            X=vis_mf, img_shape=(28, 28), tile_shape=(1, n_chains), tile_spacing=(1, 1))
    save_image(image_data, folder / "samples.png", cmap="gray", vmin=0, vmax=255)
    return LoopState(patience=training_epochs, epoch=training_epochs, elapsed=pretraining_time)


if __name__ == "__main__":
    from deeplearning_tutorial.cli import run

    run("rbm")
