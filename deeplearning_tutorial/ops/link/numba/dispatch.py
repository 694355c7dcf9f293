"""Numba-backend implementations of the convolution and pooling Ops (the default mode).

PyTensor's default (NUMBA) mode compiles a whole graph into one Numba
function; registering these lets it call the kernels (:mod:`deeplearning_tutorial.ops.kernels`,
whose C code is compiled ahead of time) directly instead of falling back to Python
for each Op.  Each implementation binds the Op's props as constants.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba
import numpy as np
from numba.np.unsafe.ndarray import to_fixed_tuple
from pytensor.link.numba.dispatch.basic import numba_njit, register_funcify_and_cache_key

from deeplearning_tutorial.ops import conv as conv_module
from deeplearning_tutorial.ops import kernels, mrg
from deeplearning_tutorial.ops import pool as pool_module
from deeplearning_tutorial.ops import pool_kinds as pool_kinds_module
from deeplearning_tutorial.ops.conv import Corr2d, Corr2dGradInputs, Corr2dGradWeights
from deeplearning_tutorial.ops.kernels import stochastic
from deeplearning_tutorial.ops.pool import AveragePoolGrad, L2PoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool
from deeplearning_tutorial.ops.pool import as_3d as pool_as_3d
from deeplearning_tutorial.ops.pool_kinds import (
    StochasticPool,
    StochasticPoolGrad,
    WeightedAveragePool,
    WeightedAveragePoolGrad,
)


def source_hash(*sources: str) -> str:
    """A short hash of the given source files, for cache keys.

    PyTensor caches compiled graphs on disk under a key per Op; the key must
    change whenever the compiled code does, so it includes the code's source.
    """
    return hashlib.sha256(b"".join(Path(source).read_bytes() for source in sources)).hexdigest()[:16]


# the modules whose code the implementations compile in: the kernels' bindings and the Ops' params
_SOURCE_HASH = source_hash(kernels.__file__, stochastic.__file__, conv_module.__file__, pool_module.__file__,
                           pool_kinds_module.__file__, mrg.__file__, __file__)


def _register(op_type, node_key=lambda node: ""):
    """Register a Numba implementation of ``op_type`` with a cache key of its props, our source,
    the thread count, which the implementation receives as ``threads`` (the kernels split
    their work by it), and ``node_key(node)`` for what else of the node it compiles in."""

    def decorator(funcify):
        def funcify_and_key(op, node, **kwargs):
            threads = numba.get_num_threads()
            key = (f"{op_type.__module__}.{op_type.__qualname__}{op._props()}{node_key(node)}-{_SOURCE_HASH}"
                   f"-threads{threads}")
            return funcify(op, node, threads=threads, **kwargs), key

        register_funcify_and_cache_key(op_type)(funcify_and_key)
        return funcify

    return decorator


@_register(Corr2d)
def numba_funcify_Corr2d(op, node, threads, **kwargs):
    params = op.params

    @numba_njit
    def corr2d(img, kern):
        return kernels.corr2d(img, kern, *params, threads)

    return corr2d


@_register(Corr2dGradWeights)
def numba_funcify_Corr2dGradWeights(op, node, threads, **kwargs):
    params = op.params

    @numba_njit
    def corr2d_grad_weights(img, gout, kernel_shape):
        return kernels.corr2d_grad_weights(img, gout, kernel_shape[0], kernel_shape[1], *params, threads)

    return corr2d_grad_weights


@_register(Corr2dGradInputs)
def numba_funcify_Corr2dGradInputs(op, node, threads, **kwargs):
    params = op.params

    @numba_njit
    def corr2d_grad_inputs(kern, gout, image_shape):
        return kernels.corr2d_grad_inputs(kern, gout, image_shape[0], image_shape[1], *params, threads)

    return corr2d_grad_inputs


as_3d = numba_njit(pool_as_3d)


@_register(Pool)
def numba_funcify_Pool(op, node, threads, **kwargs):
    params, ignore_border, mode = op.window_params, op.ignore_border, kernels.POOL_MODES[op.mode]

    @numba_njit
    def pool(x):
        out = kernels.pool(as_3d(x), *params, ignore_border, mode, threads)
        return out.reshape(x.shape[:-2] + out.shape[-2:])

    return pool


@_register(MaxPoolGrad)
def numba_funcify_MaxPoolGrad(op, node, threads, **kwargs):
    params, ignore_border = op.window_params, op.ignore_border

    @numba_njit
    def max_pool_grad(x, maxout, gz):
        return kernels.max_pool_grad(as_3d(x), as_3d(maxout), as_3d(gz), *params, ignore_border,
                                     threads).reshape(x.shape)

    return max_pool_grad


@_register(MaxPoolGradGrad)
def numba_funcify_MaxPoolGradGrad(op, node, threads, **kwargs):
    params, ignore_border = op.window_params, op.ignore_border

    @numba_njit
    def max_pool_grad_grad(x, maxout, ggx):
        return kernels.max_pool_grad_grad(as_3d(x), as_3d(maxout), as_3d(ggx), *params, ignore_border,
                                          threads).reshape(maxout.shape)

    return max_pool_grad_grad


@_register(AveragePoolGrad)
def numba_funcify_AveragePoolGrad(op, node, threads, **kwargs):
    params, ignore_border, mode = op.window_params, op.ignore_border, kernels.POOL_MODES[op.mode]

    @numba_njit
    def average_pool_grad(x, gz):
        gx = kernels.average_pool_grad(as_3d(gz), x.shape[-2], x.shape[-1], *params, ignore_border, mode, threads)
        return gx.reshape(x.shape)

    return average_pool_grad


@_register(L2PoolGrad)
def numba_funcify_L2PoolGrad(op, node, threads, **kwargs):
    params, ignore_border = op.window_params, op.ignore_border

    @numba_njit
    def l2_pool_grad(x, out, gz):
        return kernels.l2_pool_grad(as_3d(x), as_3d(out), as_3d(gz), *params, ignore_border, threads).reshape(x.shape)

    return l2_pool_grad


@_register(StochasticPool)
def numba_funcify_StochasticPool(op, node, threads, **kwargs):
    wh, ww, sh, sw, _, _ = op.window_params
    ignore_border = op.ignore_border

    @numba_njit
    def stochastic_pool_node(x, seed):
        out, picked = kernels.stochastic_pool(as_3d(x), seed.item(), wh, ww, sh, sw, ignore_border, threads)
        shape = x.shape[:-2] + out.shape[-2:]
        return out.reshape(shape), picked.reshape(shape)

    return stochastic_pool_node


@_register(StochasticPoolGrad)
def numba_funcify_StochasticPoolGrad(op, node, threads, **kwargs):
    @numba_njit
    def stochastic_pool_grad_node(x, picked, gz):
        gx = stochastic.stochastic_pool_grad(as_3d(picked), as_3d(gz), x.shape[-2], x.shape[-1])
        return gx.reshape(x.shape)

    return stochastic_pool_grad_node


@_register(WeightedAveragePool)
def numba_funcify_WeightedAveragePool(op, node, threads, **kwargs):
    wh, ww, sh, sw, _, _ = op.window_params
    ignore_border = op.ignore_border

    @numba_njit
    def weighted_average_pool_node(x):
        out = stochastic.weighted_average_pool(as_3d(x), wh, ww, sh, sw, ignore_border)
        return out.reshape(x.shape[:-2] + out.shape[-2:])

    return weighted_average_pool_node


@_register(WeightedAveragePoolGrad)
def numba_funcify_WeightedAveragePoolGrad(op, node, threads, **kwargs):
    wh, ww, sh, sw, _, _ = op.window_params

    @numba_njit
    def weighted_average_pool_grad_node(x, out, gz):
        return stochastic.weighted_average_pool_grad(as_3d(x), as_3d(out), as_3d(gz), wh, ww, sh,
                                                     sw).reshape(x.shape)

    return weighted_average_pool_grad_node


@_register(mrg.MRGUniform, node_key=lambda node: f"-ndim{node.outputs[1].type.ndim}")
def numba_funcify_MRGUniform(op, node, threads, **kwargs):
    kernel = mrg.UNIFORM_KERNELS[op.dtype]
    dtype = np.dtype(op.dtype).type
    ndim = node.outputs[1].type.ndim
    max_elements = mrg.M1

    @numba_njit
    def mrg_uniform(rstate, size):
        n = 1
        for s in size:
            if s < 0:
                raise ValueError("MRG_RandomStreams: the size has a negative entry; sizes must be >= 0")
            n *= s
        if n > max_elements:
            raise ValueError("MRG_RandomStreams: the draw is too large; at most 2**31 - 1 elements")
        out = np.empty(n, dtype=dtype)
        new_state = kernel(rstate, n, out)
        return new_state, out.reshape(to_fixed_tuple(size, ndim))

    return mrg_uniform


@_register(mrg.BoxMuller, node_key=lambda node: f"-{node.inputs[0].type.dtype}")
def numba_funcify_BoxMuller(op, node, threads, **kwargs):
    kernel = mrg.BOX_MULLER_KERNELS[node.inputs[0].type.dtype]

    @numba_njit
    def box_muller(u):
        return kernel(u)

    return box_muller
