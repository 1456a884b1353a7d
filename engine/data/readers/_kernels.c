/* Native kernel for the betas load: fused, shifted column moments of a float16 or float32 row block.
 *
 * Loading an NSD subject and z-scoring it needs, for every training row, each value converted to float32, shifted by
 * a per-voxel constant, and added to a per-voxel sum and sum of squares. Done with numpy/torch that is five passes over
 * every block (cast, subtract, sum, square, sum) and costs about twice the file read itself; here it is one pass with
 * the accumulators in registers, so it keeps up with the read (benchmarks/bench_data_load.py).
 *
 *   shifted_moments(block, shift, weight, s1, s2) -> max |value| of a float32 block (0.0 for float16: bounded)
 *
 * block  (rows, cols) C-contiguous float16 ('e') or float32 ('f')
 * shift  (cols,) float32      subtracted before squaring (keeps the one-pass variance accurate)
 * weight (rows,) float32      1 for rows that count, 0 for rows that do not (e.g. test trials)
 * s1, s2 (cols,) float64      += sum_r weight[r] * d and sum_r weight[r] * d^2, d = block[r] - shift
 *
 * A NaN or Inf anywhere in the block, counted row or not, makes the affected s1/s2 entries non-finite (0 * Inf is
 * NaN), which the caller checks, so validation needs no separate pass. Sums are float32 over at most CHUNK rows and
 * float64 across chunks. The GIL is released while the kernel runs.
 *
 * x86-64 with AVX + F16C (every x86 CPU since 2013) takes a vectorised path chosen at run time; other CPUs and
 * compilers take the portable loop, which compilers vectorise for float32.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define NL_X86 1
#endif

#define CHUNK 256 /* rows summed in float32 before adding to the float64 totals */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0x1fu) {
        bits = sign | 0x7f800000u | (man << 13); /* Inf or NaN */
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign; /* signed zero */
    } else {         /* subnormal: value = man * 2^-24, exact in float32 */
        float f = (float)man * (1.0f / 16777216.0f);
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static inline float load_value(const void *src, int half, Py_ssize_t i)
{
    return half ? half_to_float(((const uint16_t *)src)[i]) : ((const float *)src)[i];
}

/* Columns [c0, cols) of rows [r0, r1), one column at a time: the portable path and the vector path's tail. */
static float moments_portable(const void *src, int half, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols, Py_ssize_t c0,
                              const float *shift, const float *weight, double *s1, double *s2)
{
    float maxabs = 0.0f;
    for (Py_ssize_t c = c0; c < cols; c++) {
        float a1 = 0.0f, a2 = 0.0f;
        for (Py_ssize_t r = r0; r < r1; r++) {
            float x = load_value(src, half, r * cols + c), d = x - shift[c], t = weight[r] * d;
            a1 += t;
            a2 += t * d;
            if (!half)
                maxabs = fabsf(x) > maxabs ? fabsf(x) : maxabs;
        }
        s1[c] += a1;
        s2[c] += a2;
    }
    return maxabs;
}

#ifdef NL_X86
#define STRIP 32 /* columns per register strip: 4 vectors of sums + 4 of squares */
#define BAND 8   /* rows per band */

__attribute__((target("avx,f16c,fma"), always_inline)) static inline __m256 load8(const void *src, int half, Py_ssize_t i)
{
    if (half)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)src + i)));
    return _mm256_loadu_ps((const float *)src + i);
}

/* One pass over rows [r0, r1) in bands of BAND rows: within a band, each 32-column strip keeps its sums in registers
 * across the band's rows, so the band is read as BAND sequential streams (what hardware prefetchers follow) whether
 * the block is in cache or not. The float32 sums of the chunk live in acc1/acc2 (cols each, in L1/L2) between bands.
 * ``half``: a float16 block's magnitude cannot exceed 65504, so only a float32 block tracks its maximum (one more
 * dependency chain per vector). Inlined twice, so ``half`` is a compile-time constant. */
__attribute__((target("avx,f16c,fma"), always_inline)) static inline float
moments_avx_impl(const void *src, const int half, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t cols, const float *shift,
                 const float *weight, float *acc1, float *acc2)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 vmax[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const Py_ssize_t vcols = cols - cols % STRIP;
    for (Py_ssize_t b0 = r0; b0 < r1; b0 += BAND) {
        const Py_ssize_t b1 = b0 + BAND < r1 ? b0 + BAND : r1;
        for (Py_ssize_t c = 0; c < vcols; c += STRIP) {
            __m256 a1[4], a2[4];
            for (int k = 0; k < 4; k++) {
                a1[k] = _mm256_loadu_ps(acc1 + c + 8 * k);
                a2[k] = _mm256_loadu_ps(acc2 + c + 8 * k);
            }
            for (Py_ssize_t r = b0; r < b1; r++) {
                const __m256 w = _mm256_broadcast_ss(weight + r);
                const Py_ssize_t base = r * cols + c;
                for (int k = 0; k < 4; k++) {
                    __m256 x = load8(src, half, base + 8 * k);
                    __m256 d = _mm256_sub_ps(x, _mm256_loadu_ps(shift + c + 8 * k));
                    __m256 t = _mm256_mul_ps(w, d);
                    a1[k] = _mm256_add_ps(a1[k], t);
                    a2[k] = _mm256_fmadd_ps(t, d, a2[k]);
                    if (!half)
                        vmax[k] = _mm256_max_ps(vmax[k], _mm256_andnot_ps(sign, x));
                }
            }
            for (int k = 0; k < 4; k++) {
                _mm256_storeu_ps(acc1 + c + 8 * k, a1[k]);
                _mm256_storeu_ps(acc2 + c + 8 * k, a2[k]);
            }
        }
    }
    float m[8], maxabs = 0.0f;
    _mm256_storeu_ps(m, _mm256_max_ps(_mm256_max_ps(vmax[0], vmax[1]), _mm256_max_ps(vmax[2], vmax[3])));
    for (int j = 0; j < 8; j++)
        maxabs = m[j] > maxabs ? m[j] : maxabs;
    return maxabs;
}

/* Rows [r0, r1): the vector columns into acc1/acc2 (float32), the last cols % STRIP columns straight into s1/s2. */
__attribute__((target("avx,f16c,fma"))) static float moments_avx(const void *src, int half, Py_ssize_t r0,
                                                                 Py_ssize_t r1, Py_ssize_t cols, const float *shift,
                                                                 const float *weight, float *acc1, float *acc2,
                                                                 double *s1, double *s2)
{
    float m = half ? moments_avx_impl(src, 1, r0, r1, cols, shift, weight, acc1, acc2)
                   : moments_avx_impl(src, 0, r0, r1, cols, shift, weight, acc1, acc2);
    Py_ssize_t vcols = cols - cols % STRIP;
    if (vcols < cols) {
        float tail = moments_portable(src, half, r0, r1, cols, vcols, shift, weight, s1, s2);
        m = tail > m ? tail : m;
    }
    return m;
}

static int have_avx_f16c(void)
{
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    }
    return cached;
}
#endif

/* Returns max |value| of a float32 block, or -1 when the scratch sums cannot be allocated. */
static float moments(const void *src, int half, Py_ssize_t rows, Py_ssize_t cols, const float *shift,
                     const float *weight, double *s1, double *s2, int vector)
{
    float maxabs = 0.0f, *acc = NULL;
#ifdef NL_X86
    if (vector && !(acc = PyMem_RawMalloc(2 * (size_t)cols * sizeof(float))))
        return -1.0f;
#endif
    for (Py_ssize_t r0 = 0; r0 < rows; r0 += CHUNK) {
        Py_ssize_t r1 = r0 + CHUNK < rows ? r0 + CHUNK : rows;
        float m;
#ifdef NL_X86
        if (vector) {
            memset(acc, 0, 2 * (size_t)cols * sizeof(float));
            m = moments_avx(src, half, r0, r1, cols, shift, weight, acc, acc + cols, s1, s2);
            for (Py_ssize_t c = 0; c < cols - cols % STRIP; c++) {
                s1[c] += acc[c];
                s2[c] += acc[cols + c];
            }
        } else
#endif
            m = moments_portable(src, half, r0, r1, cols, 0, shift, weight, s1, s2);
        maxabs = m > maxabs ? m : maxabs;
    }
    PyMem_RawFree(acc);
    (void)vector;
    return maxabs;
}

/* Whether a buffer's struct format is the native type ``code``: "f", or "<f" / "=f" / "@f" (numpy writes the byte
 * order for a dtype whose byte order was given explicitly, as h5py's are). */
static int format_is(const char *fmt, char code)
{
    if (fmt[0] == '@' || fmt[0] == '=' || (fmt[0] == '<' && PY_LITTLE_ENDIAN) || (fmt[0] == '>' && PY_BIG_ENDIAN))
        fmt++;
    return fmt[0] == code && fmt[1] == 0;
}

/* Buffer checks: a wrong argument is a programming error inside NeuroLens, reported as ValueError/TypeError. */
static int get_vector(PyObject *obj, Py_buffer *view, const char *fmt, Py_ssize_t n, int writable, const char *name)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (view->ndim != 1 || view->shape[0] != n || !format_is(view->format, fmt[0])) {
        PyErr_Format(PyExc_ValueError, "%s: expected a contiguous (%zd,) array of format '%s'", name, n, fmt);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *shifted_moments(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"block", "shift", "weight", "s1", "s2", "vector", NULL};
    PyObject *ob, *osh, *ow, *o1, *o2;
    int vector = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|p", names, &ob, &osh, &ow, &o1, &o2, &vector))
        return NULL;
    Py_buffer b, sh, w, v1, v2;
    if (PyObject_GetBuffer(ob, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    int half = format_is(b.format, 'e');
    if (b.ndim != 2 || !(half || format_is(b.format, 'f'))) {
        PyErr_SetString(PyExc_ValueError, "block: expected a C-contiguous 2-D float16 or float32 array");
        PyBuffer_Release(&b);
        return NULL;
    }
    Py_ssize_t rows = b.shape[0], cols = b.shape[1];
    if (get_vector(osh, &sh, "f", cols, 0, "shift") < 0)
        goto fail_b;
    if (get_vector(ow, &w, "f", rows, 0, "weight") < 0)
        goto fail_sh;
    if (get_vector(o1, &v1, "d", cols, 1, "s1") < 0)
        goto fail_w;
    if (get_vector(o2, &v2, "d", cols, 1, "s2") < 0)
        goto fail_1;
#ifdef NL_X86
    vector = vector && have_avx_f16c();
#else
    vector = 0;
#endif
    float maxabs;
    Py_BEGIN_ALLOW_THREADS
    maxabs = moments(b.buf, half, rows, cols, sh.buf, w.buf, v1.buf, v2.buf, vector);
    Py_END_ALLOW_THREADS
    if (maxabs < 0) {
        PyErr_NoMemory();
        goto fail_2;
    }
    PyBuffer_Release(&v2);
    PyBuffer_Release(&v1);
    PyBuffer_Release(&w);
    PyBuffer_Release(&sh);
    PyBuffer_Release(&b);
    return PyFloat_FromDouble((double)maxabs);
fail_2:
    PyBuffer_Release(&v2);
fail_1:
    PyBuffer_Release(&v1);
fail_w:
    PyBuffer_Release(&w);
fail_sh:
    PyBuffer_Release(&sh);
fail_b:
    PyBuffer_Release(&b);
    return NULL;
}

static PyObject *vector_path(PyObject *self, PyObject *unused)
{
#ifdef NL_X86
    return PyBool_FromLong(have_avx_f16c());
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"shifted_moments", (PyCFunction)(void (*)(void))shifted_moments, METH_VARARGS | METH_KEYWORDS,
     "shifted_moments(block, shift, weight, s1, s2, vector=True) -> max |value|: s1 += sum w*d, s2 += sum w*d^2, "
     "d = block - shift (one fused pass; the GIL is released)."},
    {"vector_path", vector_path, METH_NOARGS, "Whether this CPU takes the AVX + F16C path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Native kernels for loading betas.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
