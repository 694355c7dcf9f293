"""The graph rewrites of the speed-ups, under two tags.

They are registered in PyTensor's rewrite database (``optdb``) under their
tags only, after specialisation and before elementwise fusion, so a mode
includes them only when asked, which is what
:func:`deeplearning_tutorial.speedups.mode` does:

* :data:`TAG`: the package's Ops for products and float32 ``tanh``
  (other roundings);
* :data:`EXACT_TAG`: rewrites that keep every result to the bit.
"""

from __future__ import annotations

from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.scalar.basic import Tanh
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.math import Dot

from deeplearning_tutorial.speedups.dot import SplitDot
from deeplearning_tutorial.speedups.tanh import Float32Tanh, float32_tanh

TAG = "deeplearning_tutorial_speedups"
EXACT_TAG = "deeplearning_tutorial_exact_speedups"
_FLOATS = {"float32", "float64"}
NARROW = 16  # columns of a "narrow" matrix, for local_narrow_product_of_transpose
split_dot = SplitDot()


@node_rewriter([Dot])
def local_split_dot(fgraph, node):
    """``Dot`` -> ``SplitDot`` where both operands and the result share a float dtype."""
    if type(node.op) is not Dot:
        return None
    dtypes = {variable.type.dtype for variable in (*node.inputs, *node.outputs)}
    if len(dtypes) != 1 or not dtypes <= _FLOATS:
        return None
    return [split_dot(*node.inputs)]


@node_rewriter([Elemwise])
def local_float32_tanh(fgraph, node):
    """Elementwise float32 ``tanh`` -> the vectorisable ``float32_tanh``."""
    scalar_op = node.op.scalar_op
    if not isinstance(scalar_op, Tanh) or isinstance(scalar_op, Float32Tanh):
        return None
    if node.outputs[0].type.dtype != "float32" or node.op.inplace_pattern:
        return None
    return [Elemwise(float32_tanh)(*node.inputs)]


def _transposed_matrix(variable):
    """The matrix ``m`` if ``variable`` is ``m.T``, else None."""
    node = variable.owner
    if node is not None and isinstance(node.op, DimShuffle) and node.op.new_order == (1, 0):
        return node.inputs[0]
    return None


@node_rewriter([Dot])
def local_narrow_product_of_transpose(fgraph, node):
    """``dot(m.T, narrow)`` -> ``dot(narrow.T, m).T`` for float matrices, ``narrow``
    of at most :data:`NARROW` columns (and fewer than ``m``'s).

    The same matrix product, handed to BLAS with its operands the other way
    round.  Such products are the weight gradients of a small output layer
    (``x.T @ delta``); BLAS takes them faster this way, with the same bits.
    PyTensor's canonical form lifts the transpose the other way, so this
    rewrite runs after canonicalisation.
    """
    if type(node.op) is not Dot:
        return None
    transposed, narrow = node.inputs
    m = _transposed_matrix(transposed)
    if m is None or m.ndim != 2 or narrow.ndim != 2:
        return None
    if {v.type.dtype for v in (m, narrow, *node.outputs)} - _FLOATS:
        return None
    columns, m_columns = narrow.type.shape[1], m.type.shape[1]
    if columns is None or columns > NARROW or (m_columns is not None and m_columns <= columns):
        return None
    return [node.op(narrow.T, m).T]


# Position 40: after "specialize" (2) and "uncanonicalize" (3), before elementwise fusion (49).
optdb.register("deeplearning_tutorial_speedup_rewrites", dfs_rewriter(local_split_dot, local_float32_tanh), TAG,
               position=40)
optdb.register("deeplearning_tutorial_exact_rewrites", dfs_rewriter(local_narrow_product_of_transpose), EXACT_TAG,
               position=39)
