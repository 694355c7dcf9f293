"""Theano's ``theano.sandbox.rng_mrg``: the names of :mod:`deeplearning_tutorial.rng_mrg`."""

from deeplearning_tutorial.rng_mrg import MRG_RandomStreams, guess_n_streams

__all__ = ["MRG_RandomStreams", "guess_n_streams"]
