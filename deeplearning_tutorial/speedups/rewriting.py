"""The graph rewrites of the speed-ups, under their tag :data:`TAG`: the package's
Ops for products and float32 ``tanh`` (other roundings).

They are registered in PyTensor's rewrite database (``optdb``) under that tag
only, after specialisation and before elementwise fusion, so a mode includes
them only when asked, which is what :func:`deeplearning_tutorial.speedups.mode`
does.
"""

from __future__ import annotations

from pytensor.compile import optdb
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.scalar.basic import Tanh
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.math import Dot

from deeplearning_tutorial.speedups.dot import SplitDot
from deeplearning_tutorial.speedups.tanh import Float32Tanh, float32_tanh

TAG = "deeplearning_tutorial_speedups"
_FLOATS = {"float32", "float64"}
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


# Position 40: after "specialize" (2) and "uncanonicalize" (3), before elementwise fusion (49).
optdb.register("deeplearning_tutorial_speedup_rewrites", dfs_rewriter(local_split_dot, local_float32_tanh), TAG,
               position=40)
