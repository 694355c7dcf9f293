"""Theano's ``scan``, which returns ``(outputs, updates)``.

PyTensor's ``scan`` still does, but warns that it will return the outputs
alone; Theano programs unpack both, and the updates carry the states of
random variables drawn in the loop (pass them to ``function``).
"""

from __future__ import annotations

import warnings

import pytensor


def scan(fn, sequences=None, outputs_info=None, non_sequences=None, n_steps=None, truncate_gradient=-1,
         go_backwards=False, mode=None, name=None, profile=False, allow_gc=None, strict=False, return_list=False):
    """PyTensor's ``scan`` with Theano's signature and return value ``(outputs, updates)``."""
    with warnings.catch_warnings():
        # the announcement of the new return value, and the loop's own handling of the random
        # states' default updates (it moves them into the returned updates)
        warnings.filterwarnings("ignore", message="Scan return signature will change", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Setting default_update is deprecated",
                                category=DeprecationWarning)
        return pytensor.scan(fn, sequences=sequences, outputs_info=outputs_info, non_sequences=non_sequences,
                             n_steps=n_steps, truncate_gradient=truncate_gradient, go_backwards=go_backwards,
                             mode=mode, name=name, profile=profile, allow_gc=allow_gc, strict=strict,
                             return_list=return_list, return_updates=True)
