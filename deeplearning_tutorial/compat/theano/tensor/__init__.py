"""Theano's ``theano.tensor``: PyTensor's ``pytensor.tensor``, with Theano's submodules
``nnet`` (:mod:`.nnet`), ``signal`` (:mod:`.signal`), ``shared_randomstreams``
and ``xlogx``.

Every other name (``T.matrix``, ``T.dot``...) is looked up in ``pytensor.tensor``.
"""

import pytensor.tensor as _pytensor_tensor

from deeplearning_tutorial.compat.theano.tensor import nnet, shared_randomstreams, signal, xlogx

__all__ = ["nnet", "shared_randomstreams", "signal", "xlogx"]


def __getattr__(name):
    return getattr(_pytensor_tensor, name)


def __dir__():
    return sorted(set(dir(_pytensor_tensor)) | set(__all__))
