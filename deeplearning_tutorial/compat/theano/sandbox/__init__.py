"""Theano's ``theano.sandbox``: ``rng_mrg`` (:mod:`.rng_mrg`)."""

from deeplearning_tutorial.compat.theano.sandbox import rng_mrg

__all__ = ["rng_mrg"]
