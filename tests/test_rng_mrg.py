"""MRG_RandomStreams against a plain-Python MRG31k3p written here from the algorithm's
definition (L'Ecuyer and Touzin 2000, as Theano 1.0 seeds and normalises it), bit for bit,
in every mode; plus values derived by hand and Theano's tabulated jump matrices."""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from test_ops import JAX

from deeplearning_tutorial import rng_mrg
from deeplearning_tutorial.rng_mrg import MRG_RandomStreams

# the modes whose numbers are Theano's bit for bit; JAX's normal values use XLA's log/cos/sin.
# PyTensor's JAX backend computes in 64 bits (the int64 sizes, float64 draws) only when the
# process starts with floatX float64
EXACT_MODES = ["NUMBA", "CVM", "FAST_COMPILE"]
JAX_64 = pytest.param("JAX", marks=[*JAX.marks, pytest.mark.skipif(
    pytensor.config.floatX != "float64", reason="PyTensor's JAX backend is 32-bit when floatX is float32")])
MODES = [*EXACT_MODES, JAX_64]


@pytest.fixture(autouse=True)
def float64_by_default():
    """floatX float64 (Theano's default) while a test builds its graphs; tests of float32 say so."""
    with pytensor.config.change_flags(floatX="float64"):
        yield

# ----------------------------------------------------------------------------
# The reference: Python ints, one stream and one number at a time
# ----------------------------------------------------------------------------

REF_M1 = 2**31 - 1
REF_M2 = 2**31 - 21069


def ref_step(state):
    """One step of MRG31k3p: x1[n] = (2**22 x1[n-2] + (2**7 + 1) x1[n-3]) mod m1,
    x2[n] = (2**15 x2[n-1] + (2**15 + 1) x2[n-3]) mod m2; the state is
    (x1[n-1], x1[n-2], x1[n-3], x2[n-1], x2[n-2], x2[n-3]).  Returns the new state and
    the output z = x1[n] - x2[n] mod m1, in 1 .. m1."""
    x11, x12, x13, x21, x22, x23 = state
    y1 = (2**22 * x12 + (2**7 + 1) * x13) % REF_M1
    y2 = (2**15 * x21 + (2**15 + 1) * x23) % REF_M2
    z = y1 - y2 if y1 > y2 else y1 - y2 + REF_M1
    return [y1, x11, x12, y2, x21, x22], z


def ref_to_float(z, dtype):
    """Theano's C normalisation: z * 2**-31 in float64; in float32, z rounded to float32
    times the float32 nearest to 4.6566126e-10, which is 2**-31 - 2**-55."""
    if dtype == "float64":
        return np.float64(z) * np.float64(2.0**-31)
    return np.float32(z) * np.float32(2.0**-31 - 2.0**-55)


def ref_matpow(matrix, log2_exponent, modulus):
    """matrix ** (2 ** log2_exponent) mod modulus, squaring with Python ints."""
    for _ in range(log2_exponent):
        matrix = [[sum(matrix[i][k] * matrix[k][j] for k in range(3)) % modulus for j in range(3)]
                  for i in range(3)]
    return matrix


# the one-step matrices acting on (x[n-1], x[n-2], x[n-3]) as a column vector
REF_A1 = [[0, 2**22, 2**7 + 1], [1, 0, 0], [0, 1, 0]]
REF_A2 = [[2**15, 0, 2**15 + 1], [1, 0, 0], [0, 1, 0]]
REF_J72 = (ref_matpow(REF_A1, 72, REF_M1), ref_matpow(REF_A2, 72, REF_M2))
REF_J134 = (ref_matpow(REF_A1, 134, REF_M1), ref_matpow(REF_A2, 134, REF_M2))


def ref_jump(state, matrices):
    a, b = matrices
    x, y = state[:3], state[3:]
    return ([sum(a[i][k] * x[k] for k in range(3)) % REF_M1 for i in range(3)]
            + [sum(b[i][k] * y[k] for k in range(3)) % REF_M2 for i in range(3)])


def ref_n_streams(size):
    if isinstance(size, tuple) and all(type(s) is int for s in size):
        r = int(np.prod(size))
        return min(r // 6 if r > 6 else r, 15360)
    return 15360


class RefStreams:
    """Theano's seeding: set k starts 2**134 k steps after (s, s, s, s, s, s); its stream
    i is 2**72 steps after stream i - 1 (computed one jump after the other)."""

    def __init__(self, seed):
        self.base = [seed] * 6

    def new_set(self, n_streams):
        states = [self.base]
        for _ in range(n_streams - 1):
            states.append(ref_jump(states[-1], REF_J72))
        self.base = ref_jump(self.base, REF_J134)
        return states


def ref_draw(states, n, dtype):
    """n values from a stream set: element j from stream j mod n_streams, in order."""
    out = []
    for j in range(n):
        s = j % len(states)
        states[s], z = ref_step(states[s])
        out.append(ref_to_float(z, dtype))
    return np.array(out, dtype=dtype)


# ----------------------------------------------------------------------------
# Constants and values derived by hand
# ----------------------------------------------------------------------------


def test_jump_matrices_are_theanos_tables():
    # Theano 1.0's theano/sandbox/rng_mrg.py tabulates A1p72, A2p72, A1p134, A2p134;
    # repeated squaring of the one-step matrices (in the reference above and in the module) gives them
    tables = {
        "A1p72": [[1516919229, 758510237, 499121365], [1884998244, 1516919229, 335398200],
                  [601897748, 1884998244, 358115744]],
        "A2p72": [[1228857673, 1496414766, 954677935], [1133297478, 1407477216, 1496414766],
                  [2002613992, 1639496704, 1407477216]],
        "A1p134": [[1702500920, 1849582496, 1656874625], [828554832, 1702500920, 1512419905],
                   [1143731069, 828554832, 102237247]],
        "A2p134": [[796789021, 1464208080, 607337906], [1241679051, 1431130166, 1464208080],
                   [1401213391, 1178684362, 1431130166]],
    }
    assert [list(map(list, m)) for m in rng_mrg.JUMP_STREAM] == [tables["A1p72"], tables["A2p72"]]
    assert [list(map(list, m)) for m in rng_mrg.JUMP_SET] == [tables["A1p134"], tables["A2p134"]]
    assert list(REF_J72) == [tables["A1p72"], tables["A2p72"]]
    assert list(REF_J134) == [tables["A1p134"], tables["A2p134"]]


def test_float32_constant_is_just_below_two_to_the_minus_31():
    assert float(rng_mrg.NORM_FLOAT32) == 2.0**-31 - 2.0**-55


@pytest.mark.parametrize("mode", MODES)
def test_first_number_of_seed_12345_derived_by_hand(mode):
    # From the state (12345,) * 6: y1 = (4194304 + 129) * 12345 mod (2**31 - 1)
    #   = 51780275385 - 24 * 2147483647 = 240667857;
    # y2 = (32768 + 32769) * 12345 = 809054265 (below 2**31 - 21069);
    # y1 <= y2, so z = 240667857 - 809054265 + 2147483647 = 1579097239.
    z = 1579097239
    assert ref_step([12345] * 6)[1] == z
    draws = {}
    for dtype in ("float64", "float32"):
        u = MRG_RandomStreams().uniform(size=(1,), dtype=dtype)  # seed 12345 by default
        draws[dtype] = pytensor.function([], u, mode=mode)()[0]
    assert draws["float64"] == z / 2**31  # exact: z < 2**31 and a power-of-two scale
    # float32(1579097239) = 1579097216 (24-bit mantissa, step 128 at this magnitude: 1579097239 = 12336697 * 128 + 23,
    # rounded down), times 2**-31 - 2**-55, rounded to float32
    assert np.float32(z) == np.float32(1579097216)
    assert draws["float32"] == np.float32(np.float64(1579097216) * (2.0**-31 - 2.0**-55))


def test_stream_set_states_match_successive_jumps():
    for seed, n in [(12345, 1), (1, 7), (843828734, 15360), (REF_M2 - 1, 1000)]:
        reference = RefStreams(seed)
        streams = MRG_RandomStreams(seed)
        for _ in range(2):  # two sets from one object
            np.testing.assert_array_equal(streams.get_substream_rstates(n), np.array(reference.new_set(n)))


# ----------------------------------------------------------------------------
# uniform, binomial, normal against the reference
# ----------------------------------------------------------------------------

SIZES = [
    (5,),          # 5 streams, one value each
    (7,),          # 1 stream (7 > 6 -> 7 // 6)
    (2, 3),        # 6 streams
    (13, 5),       # 10 streams, 65 values: not a multiple
    (20, 784),     # 2613 streams, 6 values each and 2 more
    (0, 4),        # empty
    "symbolic",    # x.shape, (3, 11): 15360 streams, most untouched
    "symbolic-big",  # x.shape, (20, 784): 15360 streams, 320 of them draw twice
]


def symbolic_size(name):
    x = pt.matrix("x")
    shape = {"symbolic": (3, 11), "symbolic-big": (20, 784)}[name]
    return x, x.shape, np.zeros(shape, dtype=pytensor.config.floatX), shape


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", SIZES)
def test_uniform_matches_the_reference_over_successive_calls(size, dtype, mode):
    seed = 843828734
    if isinstance(size, str):
        x, size_arg, x_value, shape = symbolic_size(size)
        inputs, values = [x], [x_value]
    else:
        size_arg, shape, inputs, values = size, size, [], []
    u = MRG_RandomStreams(seed).uniform(size=size_arg, dtype=dtype)
    f = pytensor.function(inputs, u, mode=mode)
    states = RefStreams(seed).new_set(ref_n_streams(size_arg))
    for _ in range(3):
        got = f(*values)
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_array_equal(got, ref_draw(states, int(np.prod(shape)), dtype).reshape(shape))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("floatX", ["float64", "float32"])
@pytest.mark.parametrize("seed", [1234, 843828734])
def test_binomial_20_by_784_matches_the_reference(seed, floatX, mode):
    with pytensor.config.change_flags(floatX=floatX):
        mask = MRG_RandomStreams(seed).binomial(size=(20, 784), n=1, p=0.7, dtype=floatX)
        f = pytensor.function([], mask, mode=mode)
    # the constant 0.7 is floatX, as Theano's cast policy made it
    p = np.dtype(floatX).type(0.7)
    states = RefStreams(seed).new_set(ref_n_streams((20, 784)))
    for _ in range(2):
        expected = (ref_draw(states, 20 * 784, floatX) < p).astype(floatX).reshape(20, 784)
        got = f()
        assert got.dtype == floatX
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("floatX", ["float64", "float32"])
def test_binomial_with_symbolic_size_and_p(floatX, mode):
    # the corruption of a denoising autoencoder and the RBM's sampling: size x.shape, p a variable
    with pytensor.config.change_flags(floatX=floatX):
        x = pt.matrix("x")
        p = pt.sigmoid(x)
        sample = MRG_RandomStreams(7).binomial(size=x.shape, n=1, p=p, dtype=floatX)
        f = pytensor.function([x], sample, mode=mode)
    x_value = np.random.default_rng(0).normal(size=(4, 9)).astype(floatX) * 3
    p_value = pytensor.function([x], p, mode="FAST_COMPILE")(x_value)
    states = RefStreams(7).new_set(15360)
    for _ in range(2):
        expected = (ref_draw(states, 36, floatX).reshape(4, 9) < p_value).astype(floatX)
        np.testing.assert_array_equal(f(x_value), expected)


def glibc_box_muller(u, dtype):
    """Box-Muller with glibc's log/cos/sin (float or double versions) one value at a time."""
    libm = ctypes.CDLL(ctypes.util.find_library("m"))
    c_type = ctypes.c_float if dtype == "float32" else ctypes.c_double
    suffix = "f" if dtype == "float32" else ""
    log, cos, sin = (getattr(libm, name + suffix) for name in ("log", "cos", "sin"))
    for fn in (log, cos, sin):
        fn.restype, fn.argtypes = c_type, [c_type]
    t = np.dtype(dtype).type
    half = len(u) // 2
    r = [np.sqrt(t(-2.0) * t(log(v))) for v in u[:half]]
    theta = [t(2 * np.pi) * v for v in u[half:]]
    return np.array([ri * t(cos(ti)) for ri, ti in zip(r, theta)] + [ri * t(sin(ti)) for ri, ti in zip(r, theta)],
                    dtype=dtype)


@pytest.mark.parametrize("mode", EXACT_MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_normal_is_box_muller_of_one_even_uniform_draw(dtype, mode):
    srng = MRG_RandomStreams(12345)
    first = srng.normal(size=(3, 5), dtype=dtype)  # 15 values from 16 uniforms, 15360 streams
    second = srng.normal(size=(4,), avg=2.0, std=3.0, dtype=dtype)
    f = pytensor.function([], [first, second], mode=mode)
    reference = RefStreams(12345)
    states = [reference.new_set(15360), reference.new_set(15360)]
    for _ in range(2):
        got_first, got_second = f()
        expected_first = glibc_box_muller(ref_draw(states[0], 16, dtype), dtype)[:15].reshape(3, 5)
        np.testing.assert_array_equal(got_first, expected_first)
        t = np.dtype(dtype).type
        expected_second = t(2.0) + t(3.0) * glibc_box_muller(ref_draw(states[1], 4, dtype), dtype)
        np.testing.assert_array_equal(got_second, expected_second)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or pytensor.config.floatX != "float64",
                    reason="needs JAX, in 64 bits (floatX float64 when the process starts)")
def test_jax_normal_is_close_and_needs_sizes_before_run_time():
    u = MRG_RandomStreams(12345).normal(size=(3, 5))
    states = RefStreams(12345).new_set(15360)
    f = pytensor.function([], u, mode="JAX")
    for _ in range(2):
        expected = glibc_box_muller(ref_draw(states, 16, "float64"), "float64")[:15].reshape(3, 5)
        np.testing.assert_allclose(f(), expected, rtol=1e-14)
    n = pt.lscalar("n")  # an input scalar is known when JAX compiles (once per value)
    h = pytensor.function([n], MRG_RandomStreams(1).uniform(size=(n, 2)), mode="JAX")
    np.testing.assert_array_equal(h(3), ref_draw(RefStreams(1).new_set(15360), 6, "float64").reshape(3, 2))
    v = pt.lvector("v")  # a size computed from an input's values is not
    h = pytensor.function([v], MRG_RandomStreams(1).uniform(size=(v.sum(),)), mode="JAX")
    with pytest.raises(NotImplementedError, match="needs the size of an MRG draw before run time"):
        h(np.array([1, 2]))


@pytest.mark.parametrize("mode", MODES)
def test_uniform_bounds_and_stream_sets_in_creation_order(mode):
    srng = MRG_RandomStreams(99)
    a = srng.uniform(size=(4,), low=-1.0, high=3.0)
    b = srng.uniform(size=(3,), nstreams=2)
    f = pytensor.function([], [b, a], mode=mode)  # the order of evaluation does not matter
    reference = RefStreams(99)
    states_a, states_b = reference.new_set(4), reference.new_set(2)
    got_b, got_a = f()
    np.testing.assert_array_equal(got_a, ref_draw(states_a, 4, "float64") * 4.0 - 1.0)
    np.testing.assert_array_equal(got_b, ref_draw(states_b, 3, "float64"))


def test_a_variable_that_a_function_does_not_compute_keeps_its_states():
    srng = MRG_RandomStreams(8)
    a = srng.uniform(size=(3,))
    b = srng.uniform(size=(3,))
    only_b = pytensor.function([], b)
    only_b()
    only_b()
    reference = RefStreams(8)
    np.testing.assert_array_equal(pytensor.function([], a)(), ref_draw(reference.new_set(3), 3, "float64"))


def test_seed_restarts_every_variable_and_updates_lists_them():
    srng = MRG_RandomStreams(5)
    a = srng.uniform(size=(6,))
    b = srng.uniform(size=(2, 2))
    f = pytensor.function([], [a, b])
    first = f()
    assert not np.array_equal(f()[0], first[0])
    srng.seed()
    for got, expected in zip(f(), first):
        np.testing.assert_array_equal(got, expected)
    srng.seed(6)
    reference = RefStreams(6)
    reseeded = ref_draw(reference.new_set(6), 6, "float64"), ref_draw(reference.new_set(4), 4, "float64")
    for got, expected in zip(f(), reseeded):
        np.testing.assert_array_equal(got.ravel(), expected)
    assert [update[0] for update in srng.updates()] == [a.rstate, b.rstate]


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed, error, message", [
    (0, ValueError, "0 < seed < 2147462579"),
    (-3, ValueError, "0 < seed < 2147462579"),
    (REF_M2, ValueError, "out of range"),
    ((1, 2, 3, 4, 5, REF_M2), ValueError, "last three in"),
    ((REF_M1, 2, 3, 4, 5, 6), ValueError, "first three must be in"),
    ((0, 0, 0, 4, 5, 6), ValueError, "three zeros"),
    ((1, 2, 3), TypeError, "one integer or six integers"),
    (1.5, TypeError, "one integer or six integers"),
])
def test_bad_seeds_are_refused(seed, error, message):
    with pytest.raises(error, match=message):
        MRG_RandomStreams(seed)


def test_bad_draws_are_refused():
    srng = MRG_RandomStreams(1)
    with pytest.raises(ValueError, match="negative entry"):
        srng.uniform(size=(3, -1))
    with pytest.raises(ValueError, match="p=1.5 is not a probability"):
        srng.binomial(size=(3,), p=1.5)
    with pytest.raises(ValueError, match="n=2 is not supported, only n=1"):
        srng.binomial(size=(3,), n=2, p=0.5)
    with pytest.raises(TypeError, match="size must be a tuple of ints or a 1-d int variable"):
        srng.uniform(size=3)
    with pytest.raises(TypeError, match="dtype int32 is not supported"):
        srng.uniform(size=(3,), dtype="int32")


@pytest.mark.parametrize("mode", EXACT_MODES)
def test_a_negative_size_at_run_time_is_refused(mode):
    n = pt.lscalar("n")
    f = pytensor.function([n], MRG_RandomStreams(1).uniform(size=(n, 2)), mode=mode)
    assert f(0).shape == (0, 2)
    with pytest.raises(ValueError, match="negative entry"):
        f(-1)
