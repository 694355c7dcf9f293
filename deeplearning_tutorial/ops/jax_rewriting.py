"""Graph rewrites that let JAX compile graphs whose lengths are symbolic but fixed.

JAX traces a function once for all its calls and needs every array's shape
while tracing.  Two kinds of graphs that PyTensor builds routinely break that
rule although their lengths never change from call to call:

- :func:`local_constant_length_slice`: a slice ``x[a:b]`` whose bounds are
  symbolic but whose length ``b - a`` is a constant of the graph, like the
  tutorials' minibatch ``data[index * batch_size:(index + 1) * batch_size]``,
  becomes a :class:`~deeplearning_tutorial.ops.dynamic_slice.DynamicSlice`
  (XLA's dynamic slice: a start given at run time, a size fixed when
  tracing).  The difference is found by reading both bounds as integer affine
  functions of the same variables (sums, differences, negations and products
  by constants): ``(i + 1) * 100 - i * 100`` is 100.  The static length then
  reaches every shape computed from the slice: ``arange(y.shape[0])`` of the
  negative log-likelihood becomes ``arange(100)``, a constant, which JAX
  accepts.
- :func:`local_reshape_of_static_size`: a ``Reshape`` of a tensor whose
  static shape is fully known, to a shape computed at run time (as the
  gradient of ``theta[0:n].reshape(...)`` is, through ``minimum(n,
  theta.shape[0])``), gets its shape as a constant where the size determines
  it: for a vector, or where one entry is the only one not constant.

Both are registered in PyTensor's rewrite database ``optdb`` under the tag
``"jax"`` only, which the JAX mode includes and no other built-in mode does,
and they rewrite only nodes that the JAX backend could not compile otherwise:
graphs that compiled before are unchanged.  The slice rewrite runs before
"canonicalize", which computes shapes from the slices; the reshape one after
"specialize", once the shapes are simplified, and before PyTensor's own JAX
rewrites (position 100).  Nothing but JAX mode's graph changes: importing
:mod:`deeplearning_tutorial.ops` registers them, and imports no JAX.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
from pytensor.compile import optdb
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.rewriting.basic import dfs_rewriter, in2out, node_rewriter
from pytensor.scalar import basic as ps
from pytensor.tensor import as_tensor_variable, constant
from pytensor.tensor.basic import (
    MakeVector,
    NotScalarConstantError,
    ScalarFromTensor,
    TensorFromScalar,
    get_scalar_constant_value,
)
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.shape import Reshape
from pytensor.tensor.subtensor import Subtensor, basic_subtensor, indices_from_subtensor

from deeplearning_tutorial.ops.dynamic_slice import DynamicSlice
from deeplearning_tutorial.ops.mrg import MRGUniform

__all__ = ["local_constant_length_slice", "local_reshape_of_static_size", "constant_difference"]


def _scaled(terms: Counter[Variable], factor: int) -> Counter[Variable]:
    return Counter({leaf: factor * coefficient for leaf, coefficient in terms.items()})


def _affine_form(variable: Variable) -> tuple[Counter[Variable], int] | None:
    """``variable`` as ``sum(coefficient * leaf) + constant`` with integer coefficients,
    the leaves being the variables that are not sums, differences, negations or
    products by constants of others; None for a non-integer constant."""
    if isinstance(variable, Constant):
        value = np.asarray(variable.data)
        if value.ndim != 0 or value.dtype.kind not in "iu":
            return None
        return Counter(), int(value)
    node = variable.owner
    if node is None:
        return Counter({variable: 1}), 0
    if isinstance(node.op, ScalarFromTensor | TensorFromScalar):
        return _affine_form(node.inputs[0])
    scalar_op = node.op.scalar_op if isinstance(node.op, Elemwise) else node.op
    if not (isinstance(scalar_op, ps.Add | ps.Sub | ps.Neg | ps.Mul)
            and variable.type.dtype.startswith(("int", "uint"))):
        return Counter({variable: 1}), 0
    operands = [_affine_form(operand) for operand in node.inputs]
    forms = [form for form in operands if form is not None]
    if len(forms) < len(operands):
        return None
    if isinstance(scalar_op, ps.Mul):
        symbolic = [form for form in forms if any(form[0].values())]
        if len(symbolic) > 1:  # a product of variables: a leaf
            return Counter({variable: 1}), 0
        factor = math.prod(offset for terms, offset in forms if not any(terms.values()))
        terms, offset = symbolic[0] if symbolic else (Counter(), 1)
        return _scaled(terms, factor), factor * offset
    signs = [-1] if isinstance(scalar_op, ps.Neg) else [1, -1] if isinstance(scalar_op, ps.Sub) else [1] * len(forms)
    total: Counter[Variable] = Counter()
    for sign, (terms, _) in zip(signs, forms):
        total.update(_scaled(terms, sign))  # update, not +, which would drop negative coefficients
    return total, sum(sign * offset for sign, (_, offset) in zip(signs, forms))


def constant_difference(stop: Variable, start: Variable) -> int | None:
    """``stop - start`` where it is the same integer for every value of the graph's inputs, else None."""
    stop_form, start_form = _affine_form(stop), _affine_form(start)
    if stop_form is None or start_form is None:
        return None
    terms = Counter(stop_form[0])
    terms.subtract(start_form[0])
    if any(terms.values()):
        return None
    return stop_form[1] - start_form[1]


@node_rewriter([Subtensor])
def local_constant_length_slice(fgraph, node):
    """``x[..., a:b, ...]`` -> ``DynamicSlice(axis, b - a)(x, a)[..., :, ...]`` where ``a``
    or ``b`` is not a constant, ``b - a`` is one (>= 0) and the step is 1."""
    x, *index_variables = node.inputs
    indices = indices_from_subtensor(index_variables, node.op.idx_list)
    for axis, index in enumerate(indices):
        if not isinstance(index, slice) or index.start is None or index.stop is None:
            continue
        if isinstance(index.start, Constant) and isinstance(index.stop, Constant):
            continue  # JAX compiles slices with constant bounds as they are
        if index.step is not None and not (isinstance(index.step, Constant) and index.step.data == 1):
            continue
        size = constant_difference(index.stop, index.start)
        length = x.type.shape[axis]
        if size is None or size < 0 or (length is not None and size > length):
            continue
        window = DynamicSlice(axis, size)(x, as_tensor_variable(index.start))
        rest = [slice(None) if i == axis else entry for i, entry in enumerate(indices)]
        if all(isinstance(entry, slice) and (entry.start, entry.stop, entry.step) == (None, None, None)
               for entry in rest):
            return [window]
        return [basic_subtensor(window, *rest)]
    return None


def _constant_or_none(variable: Variable) -> int | None:
    try:
        return int(get_scalar_constant_value(variable))
    except NotScalarConstantError:
        return None


@node_rewriter([Reshape])
def local_reshape_of_static_size(fgraph, node):
    """``reshape(x, shape)`` -> ``reshape(x, constant)`` where ``x``'s static shape is fully
    known, ``shape`` is not a constant, and all its entries are constants but one (a
    vector's only one, or a -1), which the size of ``x`` then determines."""
    x, shape = node.inputs
    if isinstance(shape, Constant) or None in x.type.shape:
        return None
    size = int(np.prod(x.type.shape, dtype=np.int64))
    entries = [_constant_or_none(shape[i]) for i in range(node.op.ndim)]
    unknown = [i for i, entry in enumerate(entries) if entry is None or entry == -1]
    if len(unknown) != 1:
        return None
    known = int(np.prod([e for i, e in enumerate(entries) if i not in unknown], dtype=np.int64))
    if known == 0 or size % known:
        return None  # a reshape that fails at run time: left as it is
    entries[unknown[0]] = size // known
    return [node.op(x, constant(np.array(entries, dtype=np.int64)))]


# Position 0.9: after "useless" (0.6), before "canonicalize" (1), which computes shapes from the slices.
optdb.register("deeplearning_tutorial_constant_length_slice", dfs_rewriter(local_constant_length_slice), "jax",
               position=0.9)
# Position 3.5: after "specialize" (2) and "uncanonicalize" (3), before PyTensor's JAX rewrites (100).
optdb.register("deeplearning_tutorial_reshape_of_static_size", dfs_rewriter(local_reshape_of_static_size), "jax",
               position=3.5)


@node_rewriter([MRGUniform])
def mrg_size_as_tuple(fgraph, node):
    """A size built from scalars (``x.shape``, ``(n, 2)``) reaches the JAX function as a
    tuple of those scalars, whose values JAX knows when tracing where they are shapes,
    as PyTensor does for its own random variables.  Registered here, with the other
    rewrites of the JAX mode, so that it is in the database before the mode's first
    function is rewritten (the JAX backend is imported only when that function is linked)."""
    size = node.inputs[1]
    if size.owner is None or not isinstance(size.owner.op, MakeVector):
        return None
    from pytensor.link.jax.dispatch.shape import JAXShapeTuple  # JAX is imported only where this mode runs

    return node.clone_with_new_inputs([node.inputs[0], JAXShapeTuple()(*size.owner.inputs)]).outputs


optdb.register("jax_mrg_size_as_tuple", in2out(mrg_size_as_tuple), "jax", position=100)
