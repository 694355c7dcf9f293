"""The Op of a slice whose length is known before run time, at a start known only at run time.

:class:`DynamicSlice` is ``x[start:start + size]`` along one axis, with
``size`` one of its properties, so that its output has a static length: what
XLA calls a dynamic slice (``lax.dynamic_slice``), the only slice JAX can
compile when the start is computed at run time.  The rewrite that puts it
into graphs compiled in JAX mode is
:func:`deeplearning_tutorial.ops.jax_rewriting.local_constant_length_slice`;
its JAX implementation is in :mod:`deeplearning_tutorial.ops.link.jax.dispatch`.

The slice must lie inside the array (``0 <= start <= n - size``): the Op's
Python implementation raises ``IndexError`` otherwise, while in JAX, which
has no run-time errors, a window that does not fit is moved to fit (XLA
clamps the start), as JAX does for out-of-range indices.  NumPy slicing would
instead return fewer rows, or count a negative start from the end.
"""

from __future__ import annotations

from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.tensor import as_tensor_variable, constant, inc_subtensor, zeros_like

__all__ = ["DynamicSlice"]


class DynamicSlice(Op):
    """``x[start:start + size]`` along ``axis``, for a ``start`` known at run time.

    Parameters
    ----------
    axis : int
        The axis sliced (0 or more).
    size : int
        The slice's length, which the output's type holds as a static shape.

    Notes
    -----
    Applied as ``DynamicSlice(axis, size)(x, start)`` with an integer scalar
    ``start`` in ``[0, x.shape[axis] - size]`` (see the module's docstring
    for what happens outside it).  The output is a view of ``x``.
    """

    __props__ = ("axis", "size")
    view_map = {0: [0]}

    def __init__(self, axis: int, size: int):
        if axis < 0 or size < 0:
            raise ValueError(f"DynamicSlice needs a non-negative axis and size, not axis={axis}, size={size}")
        self.axis = int(axis)
        self.size = int(size)

    def make_node(self, x, start):
        x = as_tensor_variable(x)
        start = as_tensor_variable(start)
        if start.type.ndim != 0 or start.type.dtype not in ("int8", "int16", "int32", "int64", "uint8",
                                                              "uint16", "uint32", "uint64"):
            raise TypeError(f"DynamicSlice: the start must be an integer scalar, not {start.type}")
        if self.axis >= x.type.ndim:
            raise ValueError(f"DynamicSlice: axis {self.axis} of a {x.type.ndim}-d tensor")
        length = x.type.shape[self.axis]
        if length is not None and length < self.size:
            raise ValueError(f"DynamicSlice: a slice of {self.size} along axis {self.axis} of length {length}")
        shape = list(x.type.shape)
        shape[self.axis] = self.size
        return Apply(self, [x, start], [x.type.clone(shape=tuple(shape))()])

    def perform(self, node, inputs, output_storage):
        x, start = inputs
        start = int(start)
        if not 0 <= start <= x.shape[self.axis] - self.size:
            raise IndexError(f"DynamicSlice: the slice [{start}:{start + self.size}] of axis {self.axis} "
                             f"is not inside its length {x.shape[self.axis]}")
        output_storage[0][0] = x[self._slices(start)]

    def _slices(self, start):
        return (slice(None),) * self.axis + (slice(start, start + self.size),)

    def infer_shape(self, node, shapes):
        shape = list(shapes[0])
        shape[self.axis] = constant(self.size, dtype="int64")
        return [tuple(shape)]

    def connection_pattern(self, node):
        return [[True], [False]]

    def L_op(self, inputs, outputs, output_grads):
        x, start = inputs
        return [inc_subtensor(zeros_like(x)[self._slices(start)], output_grads[0]), DisconnectedType()()]
