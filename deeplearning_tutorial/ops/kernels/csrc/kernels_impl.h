/* The kernels for one element type, included once per type by kernels.c with
 * REAL (float or double), NAME(f) (the type-suffixed name of f), GEMM (the
 * BLAS gemm of that type) and SQRT (the square root of that type) defined.
 *
 * Arrays are C-contiguous.  Convolution follows Theano's CorrMM: im2col
 * unrolls every receptive field into a column of a matrix, one BLAS product
 * does the arithmetic, col2im folds patch gradients back into an image.  A
 * minibatch is split into chunks of images, one OpenMP loop over them: each
 * thread unrolls its chunk, multiplies it with a single-threaded BLAS call and
 * writes its part of the result while the chunk is in its core's cache.
 * Within a chunk the image index is innermost (as in cuda-convnet), so every
 * copy is a contiguous run of one pixel across the chunk's images, whatever
 * the filter and image sizes, and vectorises.
 */

/* C (m x n, row stride ldc) = op(A) op(B) + beta C, all row-major; op
 * transposes when its flag is set.  Column-major BLAS computes the transpose,
 * C' = op(B)' op(A)'. */
static void NAME(gemm_rows)(int transpose_a, int transpose_b, int m, int n, int k,
                            const REAL *a, int lda, const REAL *b, int ldb,
                            REAL beta, REAL *c, int ldc)
{
    const REAL one = 1;
    if (m == 0 || n == 0)
        return;
    if (k == 0) { /* BLAS would reject the leading dimensions of empty operands */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(int64_t)i * ldc + j] = beta == 0 ? 0 : beta * c[(int64_t)i * ldc + j];
        return;
    }
    GEMM(transpose_b ? "T" : "N", transpose_a ? "T" : "N", &n, &m, &k,
         &one, b, &ldb, a, &lda, &beta, c, &ldc);
}

/* (f, c/groups, kh, kw) filters as an (f, c/groups*kh*kw) matrix, or its transpose;
 * rotated by 180 degrees when flip is set (a convolution rather than a correlation). */
static void NAME(filter_matrix)(const REAL *kern, const struct conv_shape *s, int flip,
                                int transposed, REAL *mat)
{
    const int64_t channels = s->channels / s->groups, rows = channels * s->kh * s->kw;
    for (int64_t f = 0; f < s->filters; f++)
        for (int64_t c = 0; c < channels; c++)
            for (int64_t u = 0; u < s->kh; u++)
                for (int64_t v = 0; v < s->kw; v++) {
                    int64_t row = (c * s->kh + u) * s->kw + v;
                    int64_t uu = flip ? s->kh - 1 - u : u, vv = flip ? s->kw - 1 - v : v;
                    REAL value = kern[((f * channels + c) * s->kh + uu) * s->kw + vv];
                    if (transposed)
                        mat[row * s->filters + f] = value;
                    else
                        mat[f * rows + row] = value;
                }
}

/* dest[j * dest_stride + i] = src[i * src_stride + j] for i < rows, j < cols: a matrix
 * transposed tile by tile, so that the lines a tile writes (one per column) stay in
 * the L1 cache while it fills them, instead of one cache miss per element */
static void NAME(transpose)(const REAL *src, int64_t src_stride, int64_t rows, int64_t cols,
                            REAL *dest, int64_t dest_stride)
{
    enum { TILE = 16 };
    for (int64_t j0 = 0; j0 < cols; j0 += TILE) {
        const int64_t j1 = MIN(j0 + TILE, cols);
        for (int64_t i = 0; i < rows; i++) {
            const REAL *from = src + i * src_stride;
            for (int64_t j = j0; j < j1; j++)
                dest[j * dest_stride + i] = from[j];
        }
    }
}

/* Images n0 <= n < n0 + m of x (n, planes, plane) with the image index last:
 * (planes, plane, m), the layout of a chunk (images, or maps of im2col's columns). */
static void NAME(to_image_index_last)(const REAL *x, int64_t planes, int64_t plane, int64_t n0, int64_t m,
                                      REAL *chunk)
{
    for (int64_t c = 0; c < planes; c++)
        NAME(transpose)(x + (n0 * planes + c) * plane, planes * plane, m, plane, chunk + c * plane * m, m);
}

/* The inverse of to_image_index_last: write chunk (planes, plane, m) into images n0, n0 + 1, ... of x. */
static void NAME(to_image_index_first)(const REAL *chunk, int64_t planes, int64_t plane, int64_t n0, int64_t m,
                                       REAL *x)
{
    for (int64_t c = 0; c < planes; c++)
        NAME(transpose)(chunk + c * plane * m, m, plane, m, x + (n0 * planes + c) * plane, planes * plane);
}

/* Receptive fields of a chunk xt (c, h, w, m) as columns:
 * cols[(c, u, v), (i, j, k)] = x_padded[k, c, i*sh + u*dh, j*sw + v*dw]. */
static void NAME(im2col)(const REAL *xt, const struct conv_shape *s, int64_t m, REAL *cols)
{
    const int64_t width = s->oh * s->ow * m;
    for (int64_t c = 0; c < s->channels; c++)
        for (int64_t u = 0; u < s->kh; u++)
            for (int64_t v = 0; v < s->kw; v++) {
                REAL *row = cols + ((c * s->kh + u) * s->kw + v) * width;
                for (int64_t i = 0; i < s->oh; i++) {
                    int64_t y = i * s->sh + u * s->dh - s->ph;
                    for (int64_t j = 0; j < s->ow; j++) {
                        int64_t xx = j * s->sw + v * s->dw - s->pw;
                        REAL *dest = row + (i * s->ow + j) * m;
                        if (0 <= y && y < s->height && 0 <= xx && xx < s->width) {
                            const REAL *src = xt + ((c * s->height + y) * s->width + xx) * m;
                            for (int64_t k = 0; k < m; k++)
                                dest[k] = src[k];
                        } else {
                            for (int64_t k = 0; k < m; k++)
                                dest[k] = 0;
                        }
                    }
                }
            }
}

/* The adjoint of im2col: fold column gradients into a chunk dxt (c, h, w, m), zeroed first,
 * adding where receptive fields overlap. */
static void NAME(col2im)(const REAL *dcols, const struct conv_shape *s, int64_t m, REAL *dxt)
{
    const int64_t width = s->oh * s->ow * m;
    memset(dxt, 0, sizeof(REAL) * s->channels * s->height * s->width * m);
    for (int64_t c = 0; c < s->channels; c++)
        for (int64_t u = 0; u < s->kh; u++)
            for (int64_t v = 0; v < s->kw; v++) {
                const REAL *row = dcols + ((c * s->kh + u) * s->kw + v) * width;
                for (int64_t i = 0; i < s->oh; i++) {
                    int64_t y = i * s->sh + u * s->dh - s->ph;
                    if (y < 0 || y >= s->height)
                        continue;
                    for (int64_t j = 0; j < s->ow; j++) {
                        int64_t xx = j * s->sw + v * s->dw - s->pw;
                        if (xx < 0 || xx >= s->width)
                            continue;
                        const REAL *src = row + (i * s->ow + j) * m;
                        REAL *dest = dxt + ((c * s->height + y) * s->width + xx) * m;
                        for (int64_t k = 0; k < m; k++)
                            dest[k] += src[k];
                    }
                }
            }
}

/* One thread's buffers for a chunk of images: the images with the image index
 * last (c, h, w, m), their columns (rows x positions*m), and an
 * (f x positions*m) matrix of output maps. */
struct NAME(buffers) {
    REAL *images, *cols, *maps;
};

/* A convolution kernel's operands, shared by the threads. */
struct NAME(job) {
    const struct conv_shape *s;
    const REAL *input;   /* the images (n, c, h, w) or, for the input gradient, the output gradient */
    const REAL *gout;    /* the output gradient (n, f, oh, ow), for the filter gradient */
    const REAL *filters; /* the filter matrix, or its transpose */
    REAL *out;           /* the result, or the per-thread partial sums of the filter gradient */
    int64_t rows;        /* rows of the columns matrix: channels * kh * kw */
    int64_t group_rows;  /* the rows one group of filters reads: rows / groups */
    int64_t positions;   /* output positions per image and map: oh * ow */
};

typedef void NAME(chunk_step)(const struct NAME(job) *job, const struct NAME(buffers) *buf, int64_t n0,
                              int64_t m, int thread);

/* Run step on every chunk of images, the chunks split over ch.workers threads,
 * each with its own buffers. */
static int NAME(for_each_chunk)(const struct NAME(job) *job, struct chunking ch, NAME(chunk_step) *step)
{
    const struct conv_shape *s = job->s;
    int status = DLT_OK;
    #pragma omp parallel num_threads(ch.workers) if (ch.workers > 1)
    {
        struct NAME(buffers) buf = {
            malloc(sizeof(REAL) * s->channels * s->height * s->width * ch.step),
            malloc(sizeof(REAL) * job->rows * job->positions * ch.step),
            malloc(sizeof(REAL) * s->filters * job->positions * ch.step),
        };
        int ok = buf.images && buf.cols && buf.maps;
        #pragma omp for schedule(static)
        for (int64_t chunk = 0; chunk < ch.chunks; chunk++) {
            int64_t n0 = chunk * ch.step;
            if (ok)
                step(job, &buf, n0, MIN(ch.step, s->images - n0), omp_get_thread_num());
        }
        if (!ok) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(buf.images); free(buf.cols); free(buf.maps);
    }
    return status;
}

/* maps = filters (f x group_rows) cols (rows x positions*m), scattered into the result:
 * with groups, each group of f/groups filters multiplies its own group_rows rows of cols */
static void NAME(correlate_chunk)(const struct NAME(job) *job, const struct NAME(buffers) *buf, int64_t n0,
                                  int64_t m, int thread)
{
    const struct conv_shape *s = job->s;
    const int64_t width = job->positions * m, group_filters = s->filters / s->groups;
    (void)thread;
    NAME(to_image_index_last)(job->input, s->channels, s->height * s->width, n0, m, buf->images);
    NAME(im2col)(buf->images, s, m, buf->cols);
    for (int64_t g = 0; g < s->groups; g++)
        NAME(gemm_rows)(0, 0, group_filters, width, job->group_rows,
                        job->filters + g * group_filters * job->group_rows, job->group_rows,
                        buf->cols + g * job->group_rows * width, width,
                        0, buf->maps + g * group_filters * width, width);
    NAME(to_image_index_first)(buf->maps, s->filters, job->positions, n0, m, job->out);
}

/* the thread's partial sum (f x group_rows) += gout maps (f x positions*m) cols' (positions*m x group_rows),
 * group by group;
 * the product goes through the thread's scratch matrix after its partial sum, so that the sums
 * are added in the order of the earlier (Numba) kernels and the results are the same to the bit */
static void NAME(filter_gradient_chunk)(const struct NAME(job) *job, const struct NAME(buffers) *buf,
                                        int64_t n0, int64_t m, int thread)
{
    const struct conv_shape *s = job->s;
    const int64_t size = s->filters * job->group_rows, width = job->positions * m;
    const int64_t group_filters = s->filters / s->groups;
    REAL *sum = job->out + 2 * thread * size, *product = sum + size;
    NAME(to_image_index_last)(job->input, s->channels, s->height * s->width, n0, m, buf->images);
    NAME(im2col)(buf->images, s, m, buf->cols);
    NAME(to_image_index_last)(job->gout, s->filters, job->positions, n0, m, buf->maps);
    for (int64_t g = 0; g < s->groups; g++)
        NAME(gemm_rows)(0, 1, group_filters, job->group_rows, width, buf->maps + g * group_filters * width, width,
                        buf->cols + g * job->group_rows * width, width,
                        0, product + g * group_filters * job->group_rows, job->group_rows);
    for (int64_t i = 0; i < size; i++)
        sum[i] += product[i];
}

/* cols = filters' (group_rows x f) output gradient maps (f x positions*m), group by group,
 * folded into the images' gradient */
static void NAME(input_gradient_chunk)(const struct NAME(job) *job, const struct NAME(buffers) *buf,
                                       int64_t n0, int64_t m, int thread)
{
    const struct conv_shape *s = job->s;
    const int64_t width = job->positions * m, group_filters = s->filters / s->groups;
    (void)thread;
    NAME(to_image_index_last)(job->input, s->filters, job->positions, n0, m, buf->maps);
    for (int64_t g = 0; g < s->groups; g++)
        NAME(gemm_rows)(0, 0, job->group_rows, width, group_filters, job->filters + g * group_filters,
                        s->filters, buf->maps + g * group_filters * width, width,
                        0, buf->cols + g * job->group_rows * width, width);
    NAME(col2im)(buf->cols, s, m, buf->images);
    NAME(to_image_index_first)(buf->images, s->channels, s->height * s->width, n0, m, job->out);
}

/* The correlation (step correlate_chunk, on x) or its input gradient (step
 * input_gradient_chunk, on the output gradient): both multiply by the filter
 * matrix, transposed for the gradient. */
static int NAME(through_filters)(const REAL *input, const REAL *kern, const struct conv_shape *s, int flip,
                                 int transposed, NAME(chunk_step) *step, int threads, REAL *out)
{
    const int64_t rows = s->channels * s->kh * s->kw, positions = s->oh * s->ow;
    REAL *filters = malloc(sizeof(REAL) * s->filters * (rows / s->groups));
    if (!filters)
        return DLT_NO_MEMORY;
    NAME(filter_matrix)(kern, s, flip, transposed, filters);
    struct NAME(job) job = {s, input, NULL, filters, out, rows, rows / s->groups, positions};
    int status = NAME(for_each_chunk)(&job, chunking(s->images, rows, positions, sizeof(REAL), threads), step);
    free(filters);
    return status;
}

static int NAME(corr2d)(const REAL *x, const REAL *kern, const struct conv_shape *s, int flip,
                        int threads, REAL *out)
{
    return NAME(through_filters)(x, kern, s, flip, 0, NAME(correlate_chunk), threads, out);
}

static int NAME(corr2d_grad_weights)(const REAL *x, const REAL *gout, const struct conv_shape *s,
                                     int flip, int threads, REAL *dkern)
{
    const int64_t rows = s->channels * s->kh * s->kw, positions = s->oh * s->ow;
    const int64_t channels = s->channels / s->groups, group_rows = rows / s->groups;
    const int64_t size = s->filters * group_rows;
    struct chunking ch = chunking(s->images, rows, positions, sizeof(REAL), threads);
    /* one partial sum per thread (not per chunk: chunks can be many, and filters large),
     * each followed by the thread's scratch matrix */
    REAL *partial = calloc((size_t)ch.workers * 2 * size, sizeof(REAL));
    if (!partial)
        return DLT_NO_MEMORY;
    struct NAME(job) job = {s, x, gout, NULL, partial, rows, group_rows, positions};
    int status = NAME(for_each_chunk)(&job, ch, NAME(filter_gradient_chunk));
    if (status == DLT_OK) {
        for (int64_t w = 1; w < ch.workers; w++)
            for (int64_t i = 0; i < size; i++)
                partial[i] += partial[2 * w * size + i];
        /* the gradient of flipped filters is the flipped gradient */
        for (int64_t f = 0; f < s->filters; f++)
            for (int64_t c = 0; c < channels; c++)
                for (int64_t u = 0; u < s->kh; u++)
                    for (int64_t v = 0; v < s->kw; v++) {
                        int64_t uu = flip ? s->kh - 1 - u : u, vv = flip ? s->kw - 1 - v : v;
                        dkern[((f * channels + c) * s->kh + uu) * s->kw + vv] =
                            partial[f * group_rows + (c * s->kh + u) * s->kw + v];
                    }
    }
    free(partial);
    return status;
}

static int NAME(corr2d_grad_inputs)(const REAL *kern, const REAL *gout, const struct conv_shape *s,
                                    int flip, int threads, REAL *dx)
{
    return NAME(through_filters)(gout, kern, s, flip, 1, NAME(input_gradient_chunk), threads, dx);
}

/* ------------------------------------------------------------------------
 * Pooling over the last two axes of a (batch, h, w) array
 * ------------------------------------------------------------------------ */

/* Image b of x pooled into out, window by window: the general case. */
static void NAME(pool_image)(const REAL *x, const struct pool_shape *s, int mode, int64_t b, REAL *out)
{
    const REAL *image = x + b * s->height * s->width;
    for (int64_t i = 0; i < s->oh; i++) {
        struct window r = window(i, s->wh, s->sh, s->ph, s->height);
        for (int64_t j = 0; j < s->ow; j++) {
            struct window c = window(j, s->ww, s->sw, s->pw, s->width);
            REAL result;
            if (mode == DLT_MAX) {
                /* padding never wins: the maximum over the real inputs only (NaN if any is) */
                result = image[r.first * s->width + c.first];
                for (int64_t y = r.first; y < r.last; y++)
                    for (int64_t xx = c.first; xx < c.last; xx++)
                        result = MAX_NAN(result, image[y * s->width + xx]);
            } else {
                REAL total = 0;
                for (int64_t y = r.first; y < r.last; y++)
                    for (int64_t xx = c.first; xx < c.last; xx++) {
                        REAL value = image[y * s->width + xx];
                        total += mode == DLT_L2 ? value * value : value;
                    }
                if (mode == DLT_AVERAGE_INC_PAD)
                    total /= (REAL)((r.end - r.start) * (c.end - c.start));
                else if (mode == DLT_AVERAGE_EXC_PAD)
                    total /= (REAL)((r.last - r.first) * (c.last - c.first));
                else if (mode == DLT_L2)
                    total = SQRT(total);
                result = total;
            }
            out[(b * s->oh + i) * s->ow + j] = result;
        }
    }
}

/* Max pooling when every window lies inside the image (no padding, border
 * ignored): the maximum over a window's rows first, a whole image row at a
 * time (which vectorises), then over its columns.  The plain maximum there
 * does not propagate NaN, so the rows read are checked for NaN on the way
 * (vectorised too) and an image that has one is pooled again by pool_image. */
static int NAME(max_pool_full_windows)(const REAL *x, const struct pool_shape *s, int threads, REAL *out)
{
    int status = DLT_OK;
    #pragma omp parallel num_threads(threads) if (threads > 1 && s->batch > 1)
    {
        REAL *row_max = malloc(sizeof(REAL) * MAX(s->width, 1));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < s->batch; b++) {
            if (!row_max)
                continue;
            const REAL *image = x + b * s->height * s->width;
            int nan = 0;
            for (int64_t i = 0; i < s->oh; i++) {
                const REAL *top = image + i * s->sh * s->width;
                for (int64_t xx = 0; xx < s->width; xx++) {
                    row_max[xx] = top[xx];
                    nan |= top[xx] != top[xx];
                }
                for (int64_t u = 1; u < s->wh; u++)
                    for (int64_t xx = 0; xx < s->width; xx++) {
                        REAL value = top[u * s->width + xx];
                        row_max[xx] = MAX(row_max[xx], value);
                        nan |= value != value;
                    }
                for (int64_t j = 0; j < s->ow; j++) {
                    REAL best = row_max[j * s->sw];
                    for (int64_t v = 1; v < s->ww; v++)
                        best = MAX(best, row_max[j * s->sw + v]);
                    out[(b * s->oh + i) * s->ow + j] = best;
                }
            }
            if (nan)
                NAME(pool_image)(x, s, DLT_MAX, b, out);
        }
        if (!row_max) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(row_max);
    }
    return status;
}

/* Sum, average and L2 pooling when every window lies inside the image: each
 * output row accumulates its windows' inputs (their squares for L2) in
 * pool_image's order (window row, then column), for all the row's windows at
 * once (which vectorises), so the results are pool_image's to the bit. */
static void NAME(sum_pool_full_windows)(const REAL *x, const struct pool_shape *s, int mode, int threads,
                                        REAL *out)
{
    const REAL count = (REAL)(s->wh * s->ww);
    #pragma omp parallel for num_threads(threads) if (threads > 1 && s->batch > 1) schedule(static)
    for (int64_t b = 0; b < s->batch; b++) {
        const REAL *image = x + b * s->height * s->width;
        for (int64_t i = 0; i < s->oh; i++) {
            REAL *o = out + (b * s->oh + i) * s->ow;
            for (int64_t j = 0; j < s->ow; j++)
                o[j] = 0;
            for (int64_t u = 0; u < s->wh; u++) {
                const REAL *row = image + (i * s->sh + u) * s->width;
                for (int64_t v = 0; v < s->ww; v++) {
                    if (mode == DLT_L2)
                        for (int64_t j = 0; j < s->ow; j++)
                            o[j] += row[j * s->sw + v] * row[j * s->sw + v];
                    else
                        for (int64_t j = 0; j < s->ow; j++)
                            o[j] += row[j * s->sw + v];
                }
            }
            if (mode == DLT_L2)
                for (int64_t j = 0; j < s->ow; j++)
                    o[j] = SQRT(o[j]);
            else if (mode != DLT_SUM)
                for (int64_t j = 0; j < s->ow; j++)
                    o[j] /= count;
        }
    }
}

/* Row u of the windows of output rows [i0, i0 + rows), where the windows lie side by
 * side (sw = ww): the first `length` values of each such image row, one run after
 * another in runs, so that loops over all the block's windows read them in order. */
static void NAME(copy_window_rows)(const REAL *image, const struct pool_shape *s, int64_t i0, int64_t rows,
                                   int64_t u, int64_t length, REAL *runs)
{
    for (int64_t i = 0; i < rows; i++)
        memcpy(runs + i * length, image + ((i0 + i) * s->sh + u) * s->width, sizeof(REAL) * length);
}

/* o[w] += the v-th value (its square for L2) of each of n windows of width ww whose
 * values lie one after another in run. */
static inline __attribute__((always_inline)) void NAME(add_window_columns)(const REAL *restrict run, int64_t ww,
                                                                           int64_t n, int square, REAL *restrict o)
{
    for (int64_t v = 0; v < ww; v++)
        if (square)
            for (int64_t w = 0; w < n; w++)
                o[w] += run[w * ww + v] * run[w * ww + v];
        else
            for (int64_t w = 0; w < n; w++)
                o[w] += run[w * ww + v];
}

/* sum_pool_full_windows where the windows of a row lie side by side (sw = ww):
 * blocks of whole output rows, each window row's values copied for all the block's
 * rows (one run of ow * ww values per image row), then each of its columns added to
 * all the block's windows in one loop; the same order of additions as pool_image (window
 * row, then column), so the same bits, in loops long enough to vectorise. */
static int NAME(sum_pool_side_by_side)(const REAL *x, const struct pool_shape *s, int mode, int threads, REAL *out)
{
    const REAL count = (REAL)(s->wh * s->ww);
    const int64_t run = s->ow * s->ww, block_rows = MAX(1, WINDOW_BLOCK / MAX(s->ow, 1));
    const int square = mode == DLT_L2;
    int status = DLT_OK;
    #pragma omp parallel num_threads(threads) if (threads > 1 && s->batch > 1)
    {
        REAL *runs = malloc(sizeof(REAL) * MAX(block_rows * run, 1));
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < s->batch; b++) {
            if (!runs)
                continue;
            const REAL *image = x + b * s->height * s->width;
            for (int64_t i0 = 0; i0 < s->oh; i0 += block_rows) {
                const int64_t rows = MIN(s->oh - i0, block_rows), n = rows * s->ow;
                REAL *o = out + (b * s->oh + i0) * s->ow;
                for (int64_t w = 0; w < n; w++)
                    o[w] = 0;
                for (int64_t u = 0; u < s->wh; u++) {
                    NAME(copy_window_rows)(image, s, i0, rows, u, run, runs);
                    if (s->ww == 2) /* the usual width, as a constant: its loads vectorise as pairs */
                        NAME(add_window_columns)(runs, 2, n, square, o);
                    else
                        NAME(add_window_columns)(runs, s->ww, n, square, o);
                }
                if (square)
                    for (int64_t w = 0; w < n; w++)
                        o[w] = SQRT(o[w]);
                else if (mode != DLT_SUM)
                    for (int64_t w = 0; w < n; w++)
                        o[w] /= count;
            }
        }
        if (!runs) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(runs);
    }
    return status;
}

static int NAME(pool)(const REAL *x, const struct pool_shape *s, int mode, int threads, REAL *out)
{
    const int full_windows = s->ignore_border && s->ph == 0 && s->pw == 0;
    if (mode == DLT_MAX && full_windows)
        return NAME(max_pool_full_windows)(x, s, threads, out);
    if (mode != DLT_MAX && full_windows && s->sw == s->ww)
        return NAME(sum_pool_side_by_side)(x, s, mode, threads, out);
    if (mode != DLT_MAX && full_windows) {
        NAME(sum_pool_full_windows)(x, s, mode, threads, out);
        return DLT_OK;
    }
    #pragma omp parallel for num_threads(threads) if (threads > 1 && s->batch > 1) schedule(static)
    for (int64_t b = 0; b < s->batch; b++)
        NAME(pool_image)(x, s, mode, b, out);
    return DLT_OK;
}

/* The inputs of an image's gradient that no tile holds, zeroed: the columns right of the
 * last full window and the rows below it, where the tiled gradients write nothing. */
static void NAME(zero_beyond_tiles)(const struct pool_shape *s, REAL *dimage)
{
    const int64_t covered = s->ow * s->ww, tiled_rows = s->oh * s->wh;
    if (covered < s->width)
        for (int64_t y = 0; y < tiled_rows; y++)
            memset(dimage + y * s->width + covered, 0, sizeof(REAL) * (s->width - covered));
    memset(dimage + tiled_rows * s->width, 0, sizeof(REAL) * (s->height - tiled_rows) * s->width);
}

/* Gradient of max pooling: each window's gradient goes to every input equal to its maximum. */
static int NAME(max_pool_grad)(const REAL *x, const REAL *maxout, const REAL *gz, const struct pool_shape *s,
                               int threads, REAL *gx)
{
    /* Windows that tile the image: each input's gradient is a branch-free
     * select between its window's gradient and zero, a whole row at a time. */
    const int tiled = tiles(s);
    const int64_t covered = s->ow * s->ww; /* columns inside the tiles */
    int status = DLT_OK;
    #pragma omp parallel num_threads(threads) if (threads > 1 && s->batch > 1)
    {
        REAL *row_max = tiled ? malloc(sizeof(REAL) * MAX(covered, 1)) : NULL;
        REAL *row_grad = tiled ? malloc(sizeof(REAL) * MAX(covered, 1)) : NULL;
        int ok = !tiled || (row_max && row_grad);
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < s->batch; b++) {
            const REAL *image = x + b * s->height * s->width;
            const REAL *best = maxout + b * s->oh * s->ow, *grad = gz + b * s->oh * s->ow;
            REAL *dimage = gx + b * s->height * s->width;
            if (!ok)
                continue;
            if (!tiled) {
                memset(dimage, 0, sizeof(REAL) * s->height * s->width);
                for (int64_t i = 0; i < s->oh; i++) {
                    struct window r = window(i, s->wh, s->sh, s->ph, s->height);
                    for (int64_t j = 0; j < s->ow; j++) {
                        struct window c = window(j, s->ww, s->sw, s->pw, s->width);
                        REAL m = best[i * s->ow + j], g = grad[i * s->ow + j];
                        for (int64_t y = r.first; y < r.last; y++)
                            for (int64_t xx = c.first; xx < c.last; xx++)
                                if (image[y * s->width + xx] == m)
                                    dimage[y * s->width + xx] += g;
                    }
                }
                continue;
            }
            for (int64_t i = 0; i < s->oh; i++) {
                for (int64_t j = 0; j < s->ow; j++)
                    for (int64_t v = 0; v < s->ww; v++) {
                        row_max[j * s->ww + v] = best[i * s->ow + j];
                        row_grad[j * s->ww + v] = grad[i * s->ow + j];
                    }
                for (int64_t y = i * s->wh; y < (i + 1) * s->wh; y++) {
                    const REAL *in = image + y * s->width;
                    REAL *d = dimage + y * s->width;
                    for (int64_t xx = 0; xx < covered; xx++) {
                        REAL g = row_grad[xx]; /* loaded unconditionally, so the select vectorises */
                        d[xx] = in[xx] == row_max[xx] ? g : 0;
                    }
                }
            }
            NAME(zero_beyond_tiles)(s, dimage);
        }
        if (!ok) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(row_max); free(row_grad);
    }
    return status;
}

/* Gradient of sum and average pooling: each window's gradient spread over its inputs.
 * Windows that tile the image (stride = window, no padding, none partial) give
 * each input the gradient of its one window, written a whole row at a time. */
static int NAME(average_pool_grad)(const REAL *gz, const struct pool_shape *s, int mode, int threads, REAL *gx)
{
    const int tiled = tiles(s);
    const REAL count = (REAL)(s->wh * s->ww);
    #pragma omp parallel for num_threads(threads) if (threads > 1 && s->batch > 1) schedule(static)
    for (int64_t b = 0; b < s->batch; b++) {
        const REAL *grad = gz + b * s->oh * s->ow;
        REAL *dimage = gx + b * s->height * s->width;
        if (tiled) {
            for (int64_t i = 0; i < s->oh; i++) {
                const REAL *g = grad + i * s->ow;
                for (int64_t u = 0; u < s->wh; u++) {
                    REAL *d = dimage + (i * s->wh + u) * s->width;
                    for (int64_t j = 0; j < s->ow; j++)
                        for (int64_t v = 0; v < s->ww; v++)
                            d[j * s->ww + v] = mode == DLT_SUM ? g[j] : g[j] / count;
                }
            }
            NAME(zero_beyond_tiles)(s, dimage);
            continue;
        }
        memset(dimage, 0, sizeof(REAL) * s->height * s->width);
        for (int64_t i = 0; i < s->oh; i++) {
            struct window r = window(i, s->wh, s->sh, s->ph, s->height);
            for (int64_t j = 0; j < s->ow; j++) {
                struct window c = window(j, s->ww, s->sw, s->pw, s->width);
                REAL g = grad[i * s->ow + j];
                if (mode == DLT_AVERAGE_INC_PAD)
                    g /= (REAL)((r.end - r.start) * (c.end - c.start));
                else if (mode == DLT_AVERAGE_EXC_PAD)
                    g /= (REAL)((r.last - r.first) * (c.last - c.first));
                for (int64_t y = r.first; y < r.last; y++)
                    for (int64_t xx = c.first; xx < c.last; xx++)
                        dimage[y * s->width + xx] += g;
            }
        }
    }
    return DLT_OK;
}

/* Gradient of L2 pooling, out = sqrt(sum of the window's squares): each input x
 * gets x * gz / out from every window holding it, nothing from a window whose
 * result is 0 (all zeros, or squares that underflow), where the norm has no
 * gradient.  Windows that tile the image: a whole row at a time. */
static int NAME(l2_pool_grad)(const REAL *x, const REAL *out, const REAL *gz, const struct pool_shape *s,
                              int threads, REAL *gx)
{
    const int tiled = tiles(s);
    const int64_t covered = s->ow * s->ww; /* columns inside the tiles */
    int status = DLT_OK;
    #pragma omp parallel num_threads(threads) if (threads > 1 && s->batch > 1)
    {
        REAL *row_ratio = tiled ? malloc(sizeof(REAL) * MAX(covered, 1)) : NULL;
        int ok = !tiled || row_ratio;
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < s->batch; b++) {
            const REAL *image = x + b * s->height * s->width;
            const REAL *norm = out + b * s->oh * s->ow, *grad = gz + b * s->oh * s->ow;
            REAL *dimage = gx + b * s->height * s->width;
            if (!ok)
                continue;
            if (!tiled) {
                memset(dimage, 0, sizeof(REAL) * s->height * s->width);
                for (int64_t i = 0; i < s->oh; i++) {
                    struct window r = window(i, s->wh, s->sh, s->ph, s->height);
                    for (int64_t j = 0; j < s->ow; j++) {
                        struct window c = window(j, s->ww, s->sw, s->pw, s->width);
                        REAL n = norm[i * s->ow + j];
                        if (n == 0)
                            continue;
                        REAL ratio = grad[i * s->ow + j] / n;
                        for (int64_t y = r.first; y < r.last; y++)
                            for (int64_t xx = c.first; xx < c.last; xx++)
                                dimage[y * s->width + xx] += image[y * s->width + xx] * ratio;
                    }
                }
                continue;
            }
            for (int64_t i = 0; i < s->oh; i++) {
                for (int64_t j = 0; j < s->ow; j++) {
                    REAL n = norm[i * s->ow + j];
                    REAL ratio = n == 0 ? 0 : grad[i * s->ow + j] / n;
                    for (int64_t v = 0; v < s->ww; v++)
                        row_ratio[j * s->ww + v] = ratio;
                }
                for (int64_t y = i * s->wh; y < (i + 1) * s->wh; y++) {
                    const REAL *in = image + y * s->width;
                    REAL *d = dimage + y * s->width;
                    for (int64_t xx = 0; xx < covered; xx++)
                        d[xx] = in[xx] * row_ratio[xx];
                }
            }
            NAME(zero_beyond_tiles)(s, dimage);
        }
        if (!ok) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(row_ratio);
    }
    return status;
}

/* The gradient of max_pool_grad with respect to its output gradient (Theano's
 * DownsampleFactorMaxGradGrad): ggz (b, oh, ow) gathers, for each window, ggx at
 * every input equal to the window's maximum, the adjoint of max_pool_grad's scatter. */
static int NAME(max_pool_grad_grad)(const REAL *x, const REAL *maxout, const REAL *ggx,
                                    const struct pool_shape *s, int threads, REAL *ggz)
{
    #pragma omp parallel for num_threads(threads) if (threads > 1 && s->batch > 1) schedule(static)
    for (int64_t b = 0; b < s->batch; b++) {
        const REAL *image = x + b * s->height * s->width, *dimage = ggx + b * s->height * s->width;
        const REAL *best = maxout + b * s->oh * s->ow;
        for (int64_t i = 0; i < s->oh; i++) {
            struct window r = window(i, s->wh, s->sh, s->ph, s->height);
            for (int64_t j = 0; j < s->ow; j++) {
                struct window c = window(j, s->ww, s->sw, s->pw, s->width);
                REAL m = best[i * s->ow + j], total = 0;
                for (int64_t y = r.first; y < r.last; y++)
                    for (int64_t xx = c.first; xx < c.last; xx++)
                        if (image[y * s->width + xx] == m)
                            total += dimage[y * s->width + xx];
                ggz[(b * s->oh + i) * s->ow + j] = total;
            }
        }
    }
    return DLT_OK;
}

/* a0, a1, a2 or a3 for k = 0, 1, 2 or 3, by masks on their bits: no branch, which the
 * compiler would otherwise make of the selects where it does not vectorise. */
static inline __attribute__((always_inline)) REAL NAME(select_of_4)(int32_t k, REAL a0, REAL a1, REAL a2, REAL a3)
{
    BITS b0, b1, b2, b3, result;
    memcpy(&b0, &a0, sizeof b0);
    memcpy(&b1, &a1, sizeof b1);
    memcpy(&b2, &a2, sizeof b2);
    memcpy(&b3, &a3, sizeof b3);
    result = (b0 & -(BITS)(k == 0)) | (b1 & -(BITS)(k == 1)) | (b2 & -(BITS)(k == 2)) | (b3 & -(BITS)(k == 3));
    REAL value;
    memcpy(&value, &result, sizeof value);
    return value;
}

/* Stochastic pooling (training) of n whole 2x2 windows (a0, a1 / a2, a3): window w's
 * values are top[2w], top[2w + 1] / bottom[2w], bottom[2w + 1], its top left corner is
 * at corner[w] in the image, its draw is number first + w; its outputs go to out[w]
 * and picked[w].  Each window adds its values in reading order, picks the first
 * position whose partial sum exceeds u * sum (the number of partial sums not above
 * it), or its last positive value if rounding leaves none above; a window of zeros
 * picks nothing (-1) and outputs 0.  Everything is a select, not a branch, and every
 * array is read or written in order, so the loop vectorises; it returns whether a
 * value was negative. */
static inline __attribute__((always_inline)) int64_t NAME(pick_2x2)(
    const REAL *restrict top, const REAL *restrict bottom, const int64_t *restrict corner, int64_t width,
    uint64_t seed, int64_t first, int64_t n, REAL *restrict out, int64_t *restrict picked)
{
    int64_t negative = 0;
    for (int64_t w = 0; w < n; w++) {
        const REAL a0 = top[2 * w], a1 = top[2 * w + 1], a2 = bottom[2 * w], a3 = bottom[2 * w + 1];
        negative |= (int64_t)(a0 < 0) | (int64_t)(a1 < 0) | (int64_t)(a2 < 0) | (int64_t)(a3 < 0);
        const REAL s1 = a0 + a1, s2 = s1 + a2, total = s2 + a3;
        const double target = window_uniform(seed, (uint64_t)(first + w)) * (double)total;
        int32_t k = (int32_t)(a0 <= target) + (int32_t)(s1 <= target) + (int32_t)(s2 <= target);
        const int32_t last_positive = MAX(MAX((int32_t)(a1 > 0), 2 * (int32_t)(a2 > 0)), 3 * (int32_t)(a3 > 0));
        const int32_t positive = (int32_t)(total > 0);
        k += (last_positive - k) * (positive & (int32_t)(total <= target));
        out[w] = NAME(select_of_4)(k, a0, a1, a2, a3);
        const int64_t flat = corner[w] + (k >> 1) * width + (k & 1);
        picked[w] = positive ? flat : -1;
    }
    return negative;
}

/* The whole 2x2 windows of image b: rows [0, rows) and columns [0, cols) of its
 * windows, whose top left corners are corner[i * cols + j], in blocks of whole rows
 * whose outputs are contiguous: several rows where the windows span the pooled rows
 * (cols = ow), else one.  Each block's window rows are copied into the work arrays
 * (top and bottom, 2 x capacity values each) as the pairs pick_2x2 reads (a row's first
 * 2 cols values where the windows are side by side, stride 2) and picked in one loop,
 * long enough to vectorise well.  Compiled once per instruction set (SIMD_CLONES), the
 * loader picking the fastest the processor has. */
SIMD_CLONES static int64_t NAME(pick_2x2_windows)(const REAL *x, const struct pool_shape *s, uint64_t seed,
                                                  const int64_t *corner, int64_t b, int64_t rows, int64_t cols,
                                                  REAL *work, int64_t capacity, REAL *out, int64_t *picked)
{
    const REAL *image = x + b * s->height * s->width;
    REAL *top = work, *bottom = work + 2 * capacity;
    const int64_t block_rows = cols == s->ow ? MAX(1, capacity / MAX(cols, 1)) : 1;
    int64_t negative = 0;
    for (int64_t i0 = 0; i0 < rows; i0 += block_rows) {
        const int64_t i1 = MIN(rows, i0 + block_rows), first = (b * s->oh + i0) * s->ow;
        if (s->sw == 2) { /* windows side by side */
            NAME(copy_window_rows)(image, s, i0, i1 - i0, 0, 2 * cols, top);
            NAME(copy_window_rows)(image, s, i0, i1 - i0, 1, 2 * cols, bottom);
        } else
            for (int64_t i = i0; i < i1; i++) {
                const REAL *row = image + corner[i * cols];
                REAL *t = top + 2 * (i - i0) * cols, *u = bottom + 2 * (i - i0) * cols;
                for (int64_t j = 0; j < cols; j++) {
                    t[2 * j] = row[j * s->sw], t[2 * j + 1] = row[j * s->sw + 1];
                    u[2 * j] = row[s->width + j * s->sw], u[2 * j + 1] = row[s->width + j * s->sw + 1];
                }
            }
        negative |= NAME(pick_2x2)(top, bottom, corner + i0 * cols, s->width, seed, first, (i1 - i0) * cols,
                                   out + first, picked + first);
    }
    return negative;
}

/* Stochastic pooling of window (i, j) of image b, any size, partial at the border or
 * not: the same pick as pick_2x2, a value at a time.  Returns whether a value
 * was negative. */
static int64_t NAME(pick_in_window)(const REAL *x, const struct pool_shape *s, uint64_t seed, int64_t b,
                                    int64_t i, int64_t j, REAL *out, int64_t *picked)
{
    const REAL *image = x + b * s->height * s->width;
    const struct window r = window(i, s->wh, s->sh, 0, s->height), c = window(j, s->ww, s->sw, 0, s->width);
    const int64_t index = (b * s->oh + i) * s->ow + j;
    REAL total = 0;
    int64_t negative = 0, flat = -1;
    for (int64_t y = r.first; y < r.last; y++)
        for (int64_t xx = c.first; xx < c.last; xx++) {
            const REAL value = image[y * s->width + xx];
            negative |= value < 0;
            if (value > 0)
                flat = y * s->width + xx; /* the last positive value */
            total += value;
        }
    if (flat >= 0) {
        const double target = window_uniform(seed, (uint64_t)index) * (double)total;
        REAL cumulative = 0;
        for (int64_t y = r.first, found = 0; y < r.last && !found; y++)
            for (int64_t xx = c.first; xx < c.last; xx++) {
                cumulative += image[y * s->width + xx];
                if (cumulative > target) {
                    flat = y * s->width + xx;
                    found = 1;
                    break;
                }
            }
    }
    out[index] = flat >= 0 ? image[flat] : 0;
    picked[index] = flat;
    return negative;
}

/* Stochastic pooling of x (b, h, w), no padding: per window the value picked and its
 * flat index y * w + x in the image (-1 for a window of zeros, which outputs 0).
 * DLT_NEGATIVE_INPUT if a value is negative, where the probabilities are undefined. */
static int NAME(stochastic_pool)(const REAL *x, const struct pool_shape *s, uint64_t seed, int threads, REAL *out,
                                 int64_t *picked)
{
    /* the windows of the vectorised path: the 2x2 windows wholly inside the image */
    int64_t rows = 0, cols = 0, negative = 0;
    int status = DLT_OK;
    if (s->wh == 2 && s->ww == 2 && s->height >= 2 && s->width >= 2) {
        rows = MIN(s->oh, (s->height - 2) / s->sh + 1);
        cols = MIN(s->ow, (s->width - 2) / s->sw + 1);
    }
    const int64_t capacity = MAX(WINDOW_BLOCK, cols);
    int64_t *corner = malloc(sizeof(int64_t) * MAX(rows * cols, 1));
    if (!corner)
        return DLT_NO_MEMORY;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            corner[i * cols + j] = i * s->sh * s->width + j * s->sw;
    #pragma omp parallel num_threads(threads) if (threads > 1 && s->batch > 1) reduction(|: negative)
    {
        REAL *work = rows > 0 ? malloc(sizeof(REAL) * 4 * capacity) : NULL; /* top, bottom */
        const int ready = rows == 0 || work;
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < s->batch; b++) {
            if (!ready)
                continue;
            if (rows > 0)
                negative |= NAME(pick_2x2_windows)(x, s, seed, corner, b, rows, cols, work, capacity, out, picked);
            for (int64_t i = 0; i < s->oh; i++)
                for (int64_t j = i < rows ? cols : 0; j < s->ow; j++)
                    negative |= NAME(pick_in_window)(x, s, seed, b, i, j, out, picked);
        }
        if (!ready) {
            #pragma omp atomic write
            status = DLT_NO_MEMORY;
        }
        free(work);
    }
    free(corner);
    if (status != DLT_OK)
        return status;
    return negative ? DLT_NEGATIVE_INPUT : DLT_OK;
}
