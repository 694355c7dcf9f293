/* Convolution and pooling kernels behind deeplearning_tutorial.ops.
 *
 * Compiled ahead of time (when the package is installed), so that no graph
 * has to compile them: the Numba backend calls these functions by name, the
 * C VM and Python modes through the same small Numba functions in
 * kernels/__init__.py.  Each exported kernel takes the element size (4: float32, 8:
 * float64) first, C-contiguous arrays as pointers, the geometry as a struct
 * (conv_shape or pool_shape) and returns a DLT_* status.
 * Shapes are checked by the callers.  Work is split over OpenMP threads, the
 * runtime Numba's "omp" threading layer uses too; the BLAS products inside run
 * single-threaded: each kernel that calls BLAS sets the BLAS's thread count to
 * one while it runs and restores it before returning (see blas_threads.py).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

#define EXPORT __attribute__((visibility("default")))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
/* The larger of a and b, NaN if either is (as NumPy's maximum): max pooling
 * propagates a NaN wherever it lies in the window. */
#define MAX_NAN(a, b) ((a) > (b) || (a) != (a) ? (a) : (b))

enum { DLT_OK = 0, DLT_NO_MEMORY = 1, DLT_NO_BLAS = 2, DLT_BAD_ITEMSIZE = 3, DLT_NEGATIVE_INPUT = 4 };
enum { DLT_MAX = 0, DLT_SUM = 1, DLT_AVERAGE_INC_PAD = 2, DLT_AVERAGE_EXC_PAD = 3, DLT_L2 = 4 };

/* The Fortran BLAS gemm, as scipy.linalg.cython_blas exports it. */
typedef void sgemm_t(const char *, const char *, const int *, const int *, const int *, const float *,
                     const float *, const int *, const float *, const int *, const float *, float *,
                     const int *);
typedef void dgemm_t(const char *, const char *, const int *, const int *, const int *, const double *,
                     const double *, const int *, const double *, const int *, const double *, double *,
                     const int *);
static sgemm_t *sgemm;
static dgemm_t *dgemm;
/* The BLAS's own thread-count functions (OpenBLAS's openblas_set_num_threads
 * and openblas_get_num_threads), or NULL where the BLAS has none. */
typedef void set_threads_t(int);
typedef int get_threads_t(void);
static set_threads_t *blas_set_threads;
static get_threads_t *blas_get_threads;

EXPORT void dlt_set_blas(void *single, void *double_, void *set_threads, void *get_threads)
{
    sgemm = (sgemm_t *)single;
    dgemm = (dgemm_t *)double_;
    blas_set_threads = (set_threads_t *)set_threads;
    blas_get_threads = (get_threads_t *)get_threads;
}

/* Make the BLAS single-threaded for a parallel region whose threads each call
 * it, and return the thread count to give back to dlt_blas_restore_threads.
 * A multi-threaded BLAS called from every thread at once serialises the calls
 * and its idle threads spin on the cores the region needs. */
EXPORT int dlt_blas_single_thread(void)
{
    if (!blas_set_threads || !blas_get_threads)
        return 0;
    int threads = blas_get_threads();
    if (threads != 1)
        blas_set_threads(1);
    return threads;
}

EXPORT void dlt_blas_restore_threads(int threads)
{
    if (blas_set_threads && threads > 1)
        blas_set_threads(threads);
}

/* A chunk's unrolled columns take at most about this many bytes, so they stay
 * in cache between being written and multiplied. */
#define CHUNK_BYTES (2 << 20)
/* Chunks hold a multiple of this many images where they can: the copies run
 * over the image index, and whole SIMD vectors of it copy several times faster. */
#define CHUNK_ALIGN 16
/* Stochastic pooling picks, and sum pooling adds, at most this many windows in one
 * vectorised loop (more when one row has more), so that the rows they copy for it
 * stay in L1. */
#define WINDOW_BLOCK 512

struct conv_shape {
    int64_t images, channels, height, width, filters, kh, kw, oh, ow, ph, pw, sh, sw, dh, dw;
    int64_t groups; /* channels and filters split into this many groups, group g of the filters
                       seeing only group g of the channels; the filters have channels/groups each */
};

struct chunking {
    int64_t step, chunks, workers; /* images per chunk, number of chunks, threads used */
};

/* Chunks of n_images whose columns are rows x positions each: a chunk fits
 * CHUNK_BYTES, and no chunk is larger than one thread's share of the images. */
static struct chunking chunking(int64_t n_images, int64_t rows, int64_t positions, int64_t itemsize,
                                int64_t threads)
{
    struct chunking ch;
    threads = MAX(threads, 1);
    ch.step = MAX(1, CHUNK_BYTES / MAX(1, rows * positions * itemsize));
    if (ch.step >= CHUNK_ALIGN)
        ch.step -= ch.step % CHUNK_ALIGN;
    ch.step = MAX(1, MIN(ch.step, (n_images + threads - 1) / threads));
    ch.chunks = (n_images + ch.step - 1) / ch.step;
    ch.workers = MAX(1, MIN(threads, ch.chunks));
    return ch;
}

/* For the tests: the chunking of the convolution kernels, as (step, chunks, workers). */
EXPORT void dlt_chunking(int64_t n_images, int64_t rows, int64_t positions, int64_t itemsize,
                         int64_t threads, int64_t *result)
{
    struct chunking ch = chunking(n_images, rows, positions, itemsize, threads);
    result[0] = ch.step;
    result[1] = ch.chunks;
    result[2] = ch.workers;
}

struct pool_shape {
    int64_t batch, height, width, oh, ow, wh, ww, sh, sw, ph, pw, ignore_border;
};

/* Window index along one axis: [start, end) in padded coordinates, and
 * [first, last), its part inside the real input, in input coordinates. */
struct window {
    int64_t start, end, first, last;
};

static struct window window(int64_t index, int64_t size, int64_t stride, int64_t pad, int64_t length)
{
    struct window w;
    w.start = index * stride;
    w.end = MIN(w.start + size, length + 2 * pad);
    w.first = MAX(w.start - pad, 0);
    w.last = MIN(w.end - pad, length);
    return w;
}

/* Whether the windows tile the image: stride = window, no padding, none partial.
 * Each input is then in one window at most, and the gradients go a row at a time. */
static int tiles(const struct pool_shape *s)
{
    return s->wh == s->sh && s->ww == s->sw && s->ph == 0 && s->pw == 0
           && s->oh * s->sh <= s->height && s->ow * s->sw <= s->width;
}

/* A loop that vectorises well only with instructions beyond x86-64's baseline (64-bit
 * integer products): the function holding it is compiled for AVX-512 (x86-64-v4) and
 * AVX2 (x86-64-v3) too, and the loader picks the version the processor can run
 * (GCC's function multi-versioning, which needs glibc's ifunc); other compilers and
 * systems build the baseline version alone, with the same results. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__INTEL_COMPILER) && __GNUC__ >= 12
#define SIMD_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SIMD_CLONES
#endif

/* Stochastic pooling's uniform number in [0, 1) for window `index` (its flat index
 * in the pooled output) of the draw `seed`: the top 53 bits of SplitMix64's output
 * number index + 1 (Steele, Lea and Flood, 2014), a hash whose outputs for
 * consecutive inputs pass the usual tests of randomness.  So each window has its
 * own number, in any order and on any thread. */
static inline __attribute__((always_inline)) double window_uniform(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    /* (double)(z >> 11) * 2^-53, exactly, without a 64-bit integer conversion (which
     * AVX2 lacks, so that the loops calling this vectorise there too): each 32-bit half
     * h becomes the double 2^52 + h by setting the exponent bits, less 2^52. */
    const uint64_t top = z >> 11, exponent = 0x4330000000000000ull;
    const uint64_t high_bits = exponent | (top >> 32), low_bits = exponent | (top & 0xFFFFFFFFull);
    double high, low;
    memcpy(&high, &high_bits, sizeof high);
    memcpy(&low, &low_bits, sizeof low);
    return ((high - 0x1p52) * 0x1p32 + (low - 0x1p52)) * 0x1p-53;
}

#define REAL float
#define BITS uint32_t
#define NAME(f) f##_f32
#define GEMM sgemm
#define SQRT sqrtf
#include "kernels_impl.h"
#undef REAL
#undef BITS
#undef NAME
#undef GEMM
#undef SQRT

#define REAL double
#define BITS uint64_t
#define NAME(f) f##_f64
#define GEMM dgemm
#define SQRT sqrt
#include "kernels_impl.h"
#undef REAL
#undef BITS
#undef NAME
#undef GEMM
#undef SQRT

/* Call the float32 or float64 version of a kernel; one that calls BLAS runs
 * with the BLAS single-threaded. */
#define DISPATCH(itemsize, blas_needed, kernel, ...)                                   \
    do {                                                                               \
        int status_, threads_ = 0;                                                     \
        if ((itemsize) != 4 && (itemsize) != 8)                                        \
            return DLT_BAD_ITEMSIZE;                                                   \
        if ((blas_needed) && !((itemsize) == 4 ? (void *)sgemm : (void *)dgemm))       \
            return DLT_NO_BLAS;                                                        \
        if (blas_needed)                                                               \
            threads_ = dlt_blas_single_thread();                                       \
        status_ = (itemsize) == 4 ? kernel##_f32(__VA_ARGS__) : kernel##_f64(__VA_ARGS__); \
        if (blas_needed)                                                               \
            dlt_blas_restore_threads(threads_);                                        \
        return status_;                                                                \
    } while (0)

/* The exported kernels take the geometry by name, as a struct: kernels/__init__.py builds
 * it as a named tuple of the same int64 fields (ConvShape, PoolShape there). */

/* For the tests: the sizes of the two structs, which kernels/__init__.py's named tuples must match. */
EXPORT void dlt_struct_sizes(int64_t *result)
{
    result[0] = sizeof(struct conv_shape);
    result[1] = sizeof(struct pool_shape);
}

/* out (n, f, oh, ow) = the correlation of x (n, c, h, w) zero-padded with kern (f, c/groups, kh, kw). */
EXPORT int dlt_corr2d(int64_t itemsize, const void *x, const void *kern, void *out, const struct conv_shape *s,
                      int64_t flip, int64_t threads)
{
    DISPATCH(itemsize, 1, corr2d, x, kern, s, (int)flip, (int)threads, out);
}

/* dkern (f, c/groups, kh, kw) = the gradient of dlt_corr2d's result with respect to the filters. */
EXPORT int dlt_corr2d_grad_weights(int64_t itemsize, const void *x, const void *gout, void *dkern,
                                   const struct conv_shape *s, int64_t flip, int64_t threads)
{
    DISPATCH(itemsize, 1, corr2d_grad_weights, x, gout, s, (int)flip, (int)threads, dkern);
}

/* dx (n, c, h, w) = the gradient of dlt_corr2d's result with respect to its input. */
EXPORT int dlt_corr2d_grad_inputs(int64_t itemsize, const void *kern, const void *gout, void *dx,
                                  const struct conv_shape *s, int64_t flip, int64_t threads)
{
    DISPATCH(itemsize, 1, corr2d_grad_inputs, kern, gout, s, (int)flip, (int)threads, dx);
}

/* out (b, oh, ow) = Theano's pooling of x (b, h, w) in mode DLT_MAX, DLT_SUM or DLT_AVERAGE_*,
 * or the L2 pooling DLT_L2 (the root of each window's sum of squares). */
EXPORT int dlt_pool(int64_t itemsize, const void *x, void *out, const struct pool_shape *s, int64_t mode,
                    int64_t threads)
{
    DISPATCH(itemsize, 0, pool, x, s, (int)mode, (int)threads, out);
}

/* gx (b, h, w) = the gradient of max pooling, given its input, result and output gradient. */
EXPORT int dlt_max_pool_grad(int64_t itemsize, const void *x, const void *maxout, const void *gz, void *gx,
                             const struct pool_shape *s, int64_t threads)
{
    DISPATCH(itemsize, 0, max_pool_grad, x, maxout, gz, s, (int)threads, gx);
}

/* ggz (b, oh, ow) = the gradient of dlt_max_pool_grad's result with respect to its output gradient. */
EXPORT int dlt_max_pool_grad_grad(int64_t itemsize, const void *x, const void *maxout, const void *ggx, void *ggz,
                                  const struct pool_shape *s, int64_t threads)
{
    DISPATCH(itemsize, 0, max_pool_grad_grad, x, maxout, ggx, s, (int)threads, ggz);
}

/* gx (b, h, w) = the gradient of sum or average pooling, given the output gradient. */
EXPORT int dlt_average_pool_grad(int64_t itemsize, const void *gz, void *gx, const struct pool_shape *s,
                                 int64_t mode, int64_t threads)
{
    DISPATCH(itemsize, 0, average_pool_grad, gz, s, (int)mode, (int)threads, gx);
}

/* gx (b, h, w) = the gradient of L2 pooling, given its input, result and output gradient. */
EXPORT int dlt_l2_pool_grad(int64_t itemsize, const void *x, const void *out, const void *gz, void *gx,
                            const struct pool_shape *s, int64_t threads)
{
    DISPATCH(itemsize, 0, l2_pool_grad, x, out, gz, s, (int)threads, gx);
}

/* out, picked (b, oh, ow) = stochastic pooling of x (b, h, w) for the draw seed: the value
 * each window picked and its flat index in the image, -1 where it picked nothing. */
EXPORT int dlt_stochastic_pool(int64_t itemsize, const void *x, void *out, void *picked, const struct pool_shape *s,
                               int64_t seed, int64_t threads)
{
    DISPATCH(itemsize, 0, stochastic_pool, x, s, (uint64_t)seed, (int)threads, out, (int64_t *)picked);
}

/* For the tests: stochastic pooling's uniform number of window index for the draw seed. */
EXPORT double dlt_window_uniform(int64_t seed, int64_t index)
{
    return window_uniform((uint64_t)seed, (uint64_t)index);
}

/* An importable (empty) Python module, so that the library is found, and
 * loaded, like any other part of the package. */
static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "The compiled convolution and pooling kernels; called through kernels/__init__.py.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
