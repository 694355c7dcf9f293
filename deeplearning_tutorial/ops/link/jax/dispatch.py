"""JAX-backend implementations of the convolution, pooling and DynamicSlice Ops (``mode="JAX"``).

Registered when JAX is installed.  The forward Ops map onto XLA's own
operations, ``lax.conv_general_dilated`` and ``lax.reduce_window``, so they run
wherever JAX does, GPUs included.  The gradient Ops are the vector-Jacobian
products of those forward functions (both are linear in the argument
differentiated), except max pooling's, which sends each window's gradient to
every input equal to its maximum, as Theano does (``jax.grad`` of a max
picks one).  JAX needs static shapes: with strides, the gradients need the
filter and image sizes before run time (conv2d's ``filter_shape`` and
``input_shape``, or tensors with static shapes), and so does the filter
gradient with ``border_mode`` 'full' or 'half'.

The MRG generator's uniforms (:mod:`deeplearning_tutorial.rng_mrg`) are Theano's
numbers here too, computed in uint32 arithmetic (32-bit even without JAX's
64-bit mode), for sizes known before run time (constants or shapes of
inputs).  Its normal values use XLA's ``log``, ``cos`` and ``sin``, which can
differ from the C library's in the last bit.
``DynamicSlice`` is XLA's dynamic slice (:mod:`deeplearning_tutorial.ops.dynamic_slice`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from pytensor.graph.basic import Constant
from pytensor.link.jax.dispatch import jax_funcify

from deeplearning_tutorial.ops import kernels, mrg
from deeplearning_tutorial.ops.conv import Corr2d, Corr2dGradInputs, Corr2dGradWeights
from deeplearning_tutorial.ops.dynamic_slice import DynamicSlice
from deeplearning_tutorial.ops.pool import AveragePoolGrad, L2PoolGrad, MaxPoolGrad, MaxPoolGradGrad, Pool
from deeplearning_tutorial.ops.pool_kinds import WeightedAveragePool, WeightedAveragePoolGrad


def _padding(op, kh: int, kw: int) -> tuple[int, int]:
    """The Op's zero padding (rows, cols) for (kh, kw) filters."""
    ph, pw, _, _, dh, dw, *_ = op.params
    return kernels.conv_padding(ph, kh, dh), kernels.conv_padding(pw, kw, dw)


def _correlation(op):
    """The Op's forward function, (img, kern) -> result, on (n, c, h, w) and (f, c/groups, kh, kw) arrays."""
    _, _, sh, sw, dh, dw, groups, flip = op.params

    def correlate(img, kern):
        ph, pw = _padding(op, *kern.shape[2:])
        if flip:
            kern = kern[:, :, ::-1, ::-1]
        return lax.conv_general_dilated(img, kern, window_strides=(sh, sw), padding=((ph, ph), (pw, pw)),
                                        rhs_dilation=(dh, dw), dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                        feature_group_count=groups)

    return correlate


def _static_size_pair(node) -> tuple[int, int] | None:
    """The (rows, cols) a gradient Op produces, where known before run time: from its
    output type or its constant size input."""
    rows, cols = node.outputs[0].type.shape[2:]
    if rows is not None and cols is not None:
        return rows, cols
    size = node.inputs[2]
    if isinstance(size, Constant):
        return int(size.data[0]), int(size.data[1])
    return None


def _sizes_or_unit_strides(op, node, what: str) -> tuple[int, int] | None:
    """The static (rows, cols) of a gradient Op's result; None where unit strides (and,
    for the filters, explicit padding) let the arrays' shapes determine them; an error
    otherwise (JAX needs static shapes)."""
    sizes = _static_size_pair(node)
    derived_padding = what == "filter" and any(isinstance(b, str) for b in op.border)
    if sizes is None and (op.subsample != (1, 1) or derived_padding):
        cause = "strided" if op.subsample != (1, 1) else f"padding {op.border!r}"
        raise NotImplementedError(f"the JAX backend needs the {what} size of {op} ({cause}, so not "
                                  f"implied by the other shapes): give conv2d filter_shape= / "
                                  f"input_shape=, or tensors with static shapes")
    return sizes


@jax_funcify.register(Corr2d)
def jax_funcify_Corr2d(op, node, **kwargs):
    return _correlation(op)


@jax_funcify.register(Corr2dGradWeights)
def jax_funcify_Corr2dGradWeights(op, node, **kwargs):
    correlate, sizes = _correlation(op), _sizes_or_unit_strides(op, node, "filter")
    ph, pw, _, _, dh, dw, groups, _ = op.params

    def corr2d_grad_weights(img, gout, kernel_shape):
        # with unit strides and explicit padding, out = in + 2 pad - (k - 1) dilation
        kh, kw = sizes or ((img.shape[2] + 2 * ph - gout.shape[2]) // dh + 1,
                           (img.shape[3] + 2 * pw - gout.shape[3]) // dw + 1)
        zeros = jnp.zeros((gout.shape[1], img.shape[1] // groups, kh, kw), img.dtype)
        return jax.vjp(lambda kern: correlate(img, kern), zeros)[1](gout)[0]

    return corr2d_grad_weights


@jax_funcify.register(Corr2dGradInputs)
def jax_funcify_Corr2dGradInputs(op, node, **kwargs):
    correlate, sizes = _correlation(op), _sizes_or_unit_strides(op, node, "image")
    _, _, _, _, dh, dw, groups, _ = op.params

    def corr2d_grad_inputs(kern, gout, image_shape):
        ph, pw = _padding(op, *kern.shape[2:])
        h, w = sizes or (gout.shape[2] + (kern.shape[2] - 1) * dh - 2 * ph,
                         gout.shape[3] + (kern.shape[3] - 1) * dw - 2 * pw)
        zeros = jnp.zeros((gout.shape[0], kern.shape[1] * groups, h, w), kern.dtype)
        return jax.vjp(lambda img: correlate(img, kern), zeros)[1](gout)[0]

    return corr2d_grad_inputs


def _windows(op, height: int, width: int):
    """lax.reduce_window's padding for an (h, w) image: Theano's zero padding, plus
    what the last partial windows reach past the border when ignore_border=False."""
    wh, ww, sh, sw, ph, pw = op.window_params
    if op.ignore_border and (height + 2 * ph < wh or width + 2 * pw < ww):
        raise ValueError(f"pool_2d: the pooling window {op.ws} is larger than the padded input ({height}x{width} "
                         f"+ 2*{op.pad}; ignore_border=True leaves no window)")
    padding = []
    for size, window, stride, pad, axis in ((height, wh, sh, ph, 0), (width, ww, sw, pw, 1)):
        reach = (op.out_size(size, axis) - 1) * stride + window
        padding.append((pad, pad + max(0, reach - size - 2 * pad)))
    return dict(window_dimensions=(1, wh, ww), window_strides=(1, sh, sw), padding=((0, 0), *padding))


def _window_counts(op, windows, height: int, width: int, dtype):
    """Inputs per window, the divisors of the averages: those inside the image
    ('average_exc_pad') or inside the zero-padded image ('average_inc_pad')."""
    _, (top, bottom), (left, right) = windows["padding"]
    if op.mode == "average_exc_pad":
        ones, padding = np.ones((1, height, width), dtype), windows["padding"]
    else:
        ones = np.ones((1, height + 2 * top, width + 2 * left), dtype)
        padding = ((0, 0), (0, bottom - top), (0, right - left))
    return lax.reduce_window(ones, 0.0, lax.add, **{**windows, "padding": padding})


def _pooling(op):
    """The Op's forward function on (..., h, w) arrays."""

    def pool(x):
        x3 = x.reshape((-1, *x.shape[-2:]))
        windows = _windows(op, *x.shape[-2:])
        if op.mode == "max":
            out = lax.reduce_window(x3, -jnp.inf, lax.max, **windows)
        elif op.mode == "l2":
            out = jnp.sqrt(lax.reduce_window(x3 * x3, 0.0, lax.add, **windows))
        else:
            out = lax.reduce_window(x3, 0.0, lax.add, **windows)
            if op.mode != "sum":
                out = out / _window_counts(op, windows, *x.shape[-2:], x.dtype)
        return out.astype(x.dtype).reshape((*x.shape[:-2], *out.shape[-2:]))

    return pool


@jax_funcify.register(Pool)
def jax_funcify_Pool(op, node, **kwargs):
    return _pooling(op)


@jax_funcify.register(AveragePoolGrad)
def jax_funcify_AveragePoolGrad(op, node, **kwargs):
    pool = _pooling(Pool(op.ws, op.stride, op.pad, op.ignore_border, op.mode))

    def average_pool_grad(x, gz):
        return jax.vjp(pool, jnp.zeros_like(x))[1](gz)[0]

    return average_pool_grad


@jax_funcify.register(L2PoolGrad)
def jax_funcify_L2PoolGrad(op, node, **kwargs):
    sum_pool = _pooling(Pool(op.ws, op.stride, op.pad, op.ignore_border, "sum"))

    def l2_pool_grad(x, out, gz):
        ratio = jnp.where(out != 0, gz / jnp.where(out != 0, out, 1), 0)
        return x * jax.vjp(sum_pool, jnp.zeros_like(x))[1](ratio.astype(x.dtype))[0]

    return l2_pool_grad


def _maxima(op, x, maxout):
    """For each offset (u, v) inside the windows: (slices of the padded image that
    the offset takes in every window, where those inputs equal their window's maximum),
    and the padding ((top, bottom), (left, right)); on (b, h, w) and (b, oh, ow) arrays."""
    wh, ww, sh, sw, _, _ = op.window_params
    oh, ow = maxout.shape[1:]
    (_, _), (top, bottom), (left, right) = _windows(op, *x.shape[-2:])["padding"]
    # padding is never a maximum: -inf equals no finite one
    padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right)), constant_values=-jnp.inf)
    offsets = []
    for u in range(wh):
        for v in range(ww):
            rows, cols = slice(u, u + (oh - 1) * sh + 1, sh), slice(v, v + (ow - 1) * sw + 1, sw)
            offsets.append(((slice(None), rows, cols), padded[:, rows, cols] == maxout))
    return offsets, ((top, bottom), (left, right))


def _as_3d(x):
    return x.reshape((-1, *x.shape[-2:]))


@jax_funcify.register(MaxPoolGrad)
def jax_funcify_MaxPoolGrad(op, node, **kwargs):

    def max_pool_grad(x, maxout, gz):
        x3, grad = _as_3d(x), _as_3d(gz)
        offsets, ((top, bottom), (left, right)) = _maxima(op, x3, _as_3d(maxout))
        gx = jnp.zeros((x3.shape[0], x3.shape[1] + top + bottom, x3.shape[2] + left + right), x.dtype)
        for window_slice, is_max in offsets:
            gx = gx.at[window_slice].add(jnp.where(is_max, grad, 0))
        return gx[:, top:top + x.shape[-2], left:left + x.shape[-1]].reshape(x.shape)

    return max_pool_grad


@jax_funcify.register(MaxPoolGradGrad)
def jax_funcify_MaxPoolGradGrad(op, node, **kwargs):

    def max_pool_grad_grad(x, maxout, ggx):
        offsets, padding = _maxima(op, _as_3d(x), _as_3d(maxout))
        padded = jnp.pad(_as_3d(ggx), ((0, 0), *padding))
        ggz = sum(jnp.where(is_max, padded[window_slice], 0) for window_slice, is_max in offsets)
        return ggz.astype(x.dtype).reshape(maxout.shape)

    return max_pool_grad_grad


def _weighted_average_pooling(op):
    sum_pool = _pooling(Pool(op.ws, op.stride, op.pad, op.ignore_border, "sum"))

    def weighted_average_pool(x):  # no check for negative values: JAX has no run-time errors
        sums, squares = sum_pool(x), sum_pool(x * x)
        positive = sums > 0
        return jnp.where(positive, squares / jnp.where(positive, sums, 1), 0).astype(x.dtype)

    return weighted_average_pool


@jax_funcify.register(WeightedAveragePool)
def jax_funcify_WeightedAveragePool(op, node, **kwargs):
    return _weighted_average_pooling(op)


@jax_funcify.register(WeightedAveragePoolGrad)
def jax_funcify_WeightedAveragePoolGrad(op, node, **kwargs):
    weighted_average_pool = _weighted_average_pooling(op)

    def weighted_average_pool_grad(x, out, gz):
        return jax.vjp(weighted_average_pool, x)[1](gz)[0]

    return weighted_average_pool_grad


def _mod_step(a, modulus):
    """``a mod modulus`` for ``a < 2 * modulus`` (uint32)."""
    return jnp.where(a >= modulus, a - modulus, a)


def _mrg_step(state):
    """One step of every stream of a uint32 ``(n_streams, 6)`` state matrix: the new states
    and the outputs ``z``.  The products by 2**22, 129, 2**15 and 32769 are reduced with
    ``2**31 = 1 (mod M1)`` and ``2**31 = 21069 (mod M2)``, so no value reaches 2**32."""
    m1, m2 = jnp.uint32(mrg.M1), jnp.uint32(mrg.M2)
    x11, x12, x13, x21, x22, x23 = (state[:, i] for i in range(6))
    times_2p22 = _mod_step(((x12 & 511) << 22) + (x12 >> 9), m1)
    times_2p7 = _mod_step(((x13 & 16777215) << 7) + (x13 >> 24), m1)
    y1 = _mod_step(_mod_step(times_2p22 + times_2p7, m1) + x13, m1)

    def times_2p15(x):
        return _mod_step(((x & 65535) << 15) + jnp.uint32(21069) * (x >> 16), m2)

    y2 = _mod_step(_mod_step(times_2p15(x21) + times_2p15(x23), m2) + x23, m2)
    z = jnp.where(y1 > y2, y1 - y2, m1 - (y2 - y1))
    return jnp.stack([y1, x11, x12, y2, x21, x22], axis=1), z


@jax_funcify.register(mrg.MRGUniform)
def jax_funcify_MRGUniform(op, node, **kwargs):
    dtype = op.dtype
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise NotImplementedError("float64 MRG draws need JAX's 64-bit mode, which PyTensor's JAX backend "
                                  "turns on when floatX is float64; draw float32 (dtype='float32')")
    norm = mrg.NORM_FLOAT32 if dtype == "float32" else mrg.NORM_FLOAT64
    constant_size = node.inputs[1]
    constant_shape = tuple(int(s) for s in constant_size.data) if isinstance(constant_size, Constant) else None

    def mrg_uniform(rstate, size):
        try:
            shape = constant_shape if constant_shape is not None else tuple(int(s) for s in size)
        except jax.errors.ConcretizationTypeError:
            raise NotImplementedError("the JAX backend needs the size of an MRG draw before run time: a "
                                      "constant or the shape of an input") from None
        n = mrg.check_size(shape)
        n_streams = rstate.shape[0]
        rounds = -(-n // n_streams)
        streams = jnp.arange(n_streams)

        def draw_round(state, r):
            stepped, z = _mrg_step(state)
            active = r * n_streams + streams < n  # the last round's streams beyond n keep their states
            return jnp.where(active[:, None], stepped, state), z

        state, z = lax.scan(draw_round, rstate.astype(jnp.uint32), jnp.arange(rounds))
        values = z.reshape(-1)[:n].astype(dtype) * jnp.asarray(norm, dtype=dtype)
        return state.astype(jnp.int32), values.reshape(shape)

    return mrg_uniform


@jax_funcify.register(mrg.BoxMuller)
def jax_funcify_BoxMuller(op, node, **kwargs):
    def box_muller(u):
        half = u.shape[0] // 2
        r = jnp.sqrt(jnp.asarray(-2.0, u.dtype) * jnp.log(u[:half]))
        t = jnp.asarray(2 * np.pi, u.dtype) * u[half:]
        return jnp.concatenate([r * jnp.cos(t), r * jnp.sin(t)])

    return box_muller


@jax_funcify.register(DynamicSlice)
def jax_funcify_DynamicSlice(op, node, **kwargs):
    def dynamic_slice(x, start):  # XLA moves a window that does not fit into the array
        return lax.dynamic_slice_in_dim(x, start, op.size, axis=op.axis)

    return dynamic_slice
