"""Theano's ``theano.tensor.shared_randomstreams``: ``RandomStreams`` is PyTensor's
``RandomStream``, which draws from NumPy's generators: other numbers than Theano's,
and its ``binomial`` takes no ``dtype``.  PyTensor deprecates it in favour of
``pytensor.tensor.random.shared_rng`` (see the porting guide)."""

from pytensor.tensor.random.utils import RandomStream as RandomStreams

__all__ = ["RandomStreams"]
