"""Theano 1.0's names, for programs written for Theano: change the imports only.

    import deeplearning_tutorial.compat.theano as theano
    from deeplearning_tutorial.compat.theano import tensor as T
    from deeplearning_tutorial.compat.theano.sandbox.rng_mrg import MRG_RandomStreams

Each name is PyTensor's own where PyTensor keeps Theano's behaviour, and the
package's where it does not:

- ``function`` and ``In``: inputs with default values (``In(lr, value=0.1)``),
  which PyTensor refuses (:mod:`.compile`);
- ``scan``: returns ``(outputs, updates)`` as Theano's did (:mod:`.scan_module`);
- ``tensor``: PyTensor's ``pytensor.tensor`` with Theano's ``nnet``, ``signal``
  and ``shared_randomstreams`` (:mod:`.tensor`);
- ``sandbox.rng_mrg``: :mod:`deeplearning_tutorial.rng_mrg`, Theano's generator
  with its numbers;
- ``shared``, ``config``, ``printing``, ``grad``, ``gradient``: PyTensor's.

What PyTensor changed for every program is not patched here: a variable has
no truth value (``if not W:`` must be ``if W is None:``).  See the porting guide.
"""

from pytensor import config, grad, gradient, printing, shared

from deeplearning_tutorial.compat.theano import sandbox, tensor
from deeplearning_tutorial.compat.theano.compile import In, function
from deeplearning_tutorial.compat.theano.scan_module import scan

__all__ = ["In", "config", "function", "grad", "gradient", "printing", "sandbox", "scan", "shared", "tensor"]
