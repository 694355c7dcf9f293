"""Theano's ``function`` and ``In``, with inputs that have default values.

    lr = T.scalar("lr")
    train = theano.function([index, theano.In(lr, value=0.1)], cost, updates=updates)
    train(3)            # lr = 0.1
    train(3, lr=0.05)   # by name, or train(3, 0.05)

PyTensor's ``In`` refuses a ``value``; this ``In`` keeps it and ``function``
fills it in for every call that does not give that input.  Without defaults,
``function`` is PyTensor's.
"""

from __future__ import annotations

import pytensor
from pytensor.compile.io import In as _PyTensorIn


class In:
    """An input of :func:`function`: Theano's ``In(variable, name=None, value=None, ...)``.

    Parameters
    ----------
    variable : Variable
        The graph's input.
    name : str, optional
        Its name for keyword arguments; by default the variable's name.
    value : optional
        The value used when a call does not give this input.
    mutable, strict, allow_downcast, borrow :
        As in PyTensor's ``In``.
    """

    def __init__(self, variable, name=None, value=None, mutable=None, strict=False, allow_downcast=None,
                 borrow=None):
        self.variable = variable
        self.name = name if name is not None else variable.name
        self.value = value
        self.options = dict(mutable=mutable, strict=strict, allow_downcast=allow_downcast, borrow=borrow)

    def pytensor_input(self):
        """PyTensor's ``In`` for this input, without the default value."""
        return _PyTensorIn(self.variable, name=self.name, **self.options)


class FunctionWithDefaults:
    """A compiled function whose missing inputs take their default values.

    Calls take the inputs in order, then by name; an input given neither way takes
    its default.  Everything else (``maker``, ``copy``...) is the PyTensor function's.
    """

    def __init__(self, function, names, defaults):
        self.function = function
        self.names = names
        self.defaults = defaults

    def __call__(self, *args, **kwargs):
        if len(args) > len(self.names):
            raise TypeError(f"the function takes {len(self.names)} inputs, {len(args)} given")
        values = list(args)
        for i in range(len(args), len(self.names)):
            name = self.names[i]
            if name is not None and name in kwargs:
                values.append(kwargs.pop(name))
            elif i in self.defaults:
                values.append(self.defaults[i])
            else:
                raise TypeError(f"the function's input {name or i} is missing and has no default value")
        if kwargs:
            raise TypeError(f"the function got unknown or repeated inputs {sorted(kwargs)}; "
                            f"its inputs are {self.names}")
        return self.function(*values)

    def __getattr__(self, name):
        if name == "function":  # not yet set (while unpickling)
            raise AttributeError(name)
        return getattr(self.function, name)


def function(inputs, outputs=None, mode=None, updates=None, givens=None, no_default_updates=None,
             accept_inplace=False, name=None, rebuild_strict=True, allow_input_downcast=None, profile=None,
             on_unused_input=None):
    """Theano's ``function``: PyTensor's, where inputs may be :class:`In` with a ``value``.

    Returns PyTensor's compiled function, or a :class:`FunctionWithDefaults` wrapping it
    when an input has a default value.
    """
    inputs = list(inputs)
    defaults = {i: inp.value for i, inp in enumerate(inputs) if isinstance(inp, In) and inp.value is not None}
    names = [inp.name if isinstance(inp, In) else getattr(inp, "name", None) for inp in inputs]
    kwargs = dict(mode=mode, updates=updates, givens=givens, accept_inplace=accept_inplace, name=name,
                  rebuild_strict=rebuild_strict, allow_input_downcast=allow_input_downcast, profile=profile,
                  on_unused_input=on_unused_input)
    if no_default_updates is not None:
        kwargs["no_default_updates"] = no_default_updates
    compiled = pytensor.function([inp.pytensor_input() if isinstance(inp, In) else inp for inp in inputs],
                                 outputs, **kwargs)
    if not defaults:
        return compiled
    return FunctionWithDefaults(compiled, names, defaults)
