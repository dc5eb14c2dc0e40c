/* tuneterm_kernels._philox: the seeded-dropout Philox mask, natively on the CPU.
 *
 * Computes exactly what kernels/dropout.py (module docstring) defines and what the Triton
 * kernel applies: Philox-4x32-10 as tl.randint4x computes it, key (seed & 0xffffffff,
 * seed >> 32), counter (ctr & 0xffffffff, ctr >> 32, 0, 0); element i takes call
 * ctr = offset + i / 8, word (i % 8) / 2, 16-bit half i % 2 (low half first), and is kept
 * iff that draw >= threshold.
 *
 * Plain CPython C API (no torch headers). The caller passes the raw address of a contiguous
 * CPU buffer (tensor.data_ptr()) that it keeps alive for the call; the GIL is released while
 * the loop runs, and on request (threads=) the work is split over up to MAX_THREADS pthreads
 * at Philox-call boundaries (every thread computes whole calls: the split changes no bit).
 *
 *   keep_mask(seed, offset, numel, threshold, out_ptr, threads=0) -> None
 *       numel bytes (0/1: a torch.bool buffer) at out_ptr.
 *   uniform16(seed, offset, numel, out_ptr, threads=0) -> None
 *       numel int32 draws in [0, 65536) at out_ptr (philox_uniform16's values).
 *   philox4x32(seed, ctr) -> (w0, w1, w2, w3)
 *       one call's four 32-bit words (tl.randint4x(seed, ctr)).
 *   threads = 0: automatic (currently always one thread: see AUTO_THREADS); else at most
 *   that many (capped at MAX_THREADS).
 *   simd() -> "avx2" | "sse2" | "scalar"; _set_simd(name) for tests and benchmarks.
 *
 * Speed: Philox on AVX2 (8 lanes, picked at run time) or SSE2 (4 lanes, every x86-64), the
 * 32x32->64 products via pmuludq; the keep bytes come from a 4x4 transpose and a saturating
 * 16-bit compare. Elsewhere portable C (scalar 64-bit products).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <pthread.h>
#include <unistd.h>
#define HAVE_THREADS 1
#else
#define HAVE_THREADS 0
#endif

#define PHILOX_KEY_A 0x9E3779B9u
#define PHILOX_KEY_B 0xBB67AE85u
#define PHILOX_ROUND_A 0xD2511F53u
#define PHILOX_ROUND_B 0xCD9E8D57u
#define N_ROUNDS 10
#define ELEMS_PER_CALL 8

#define BATCH 16                       /* Philox calls computed side by side (vectorisable) */
#define MAX_THREADS 8
/* threads=0 (automatic): one thread. A second thread did not measurably help on the 2-core
 * development box under load (29M elements: 38 ms median either way; 1M elements: 0.4 ms
 * single vs 3 ms when the new thread waits for a core), and one thread is already ~11 ms
 * of CPU per 29M elements. Raise AUTO_THREADS to split requests >= AUTO_THREAD_MIN. */
#define AUTO_THREAD_MIN (1LL << 20)    /* elements; below this one thread */
#define AUTO_THREADS 1                 /* automatic split: at most this many threads */

#define SEED_LIMIT (1ULL << 63)
#define OFFSET_LIMIT (1ULL << 62)

/* ---------------------------------------------------------------------------------------
 * Philox-4x32-10
 * ------------------------------------------------------------------------------------- */

static inline void philox_one(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t w[4]) {
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    for (int r = 0; r < N_ROUNDS; r++) {
        uint64_t pb = (uint64_t)PHILOX_ROUND_B * c2;
        uint64_t pa = (uint64_t)PHILOX_ROUND_A * c0;
        c0 = (uint32_t)(pb >> 32) ^ c1 ^ k0;
        c2 = (uint32_t)(pa >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)pb;
        c3 = (uint32_t)pa;
        k0 += PHILOX_KEY_A;
        k1 += PHILOX_KEY_B;
    }
    w[0] = c0; w[1] = c1; w[2] = c2; w[3] = c3;
}

/* BATCH consecutive calls ctr, ctr+1, ...: four word arrays, lane j = call ctr + j.
 * Portable version (GCC does not vectorise the 32x32->64 products here: scalar imul). */
typedef void (*batch_fn)(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t w0[BATCH],
                         uint32_t w1[BATCH], uint32_t w2[BATCH], uint32_t w3[BATCH]);

static inline void counters(uint64_t ctr, uint32_t c0[BATCH], uint32_t c1[BATCH]) {
    for (int j = 0; j < BATCH; j++) {
        uint64_t c = ctr + (uint64_t)j;   /* the low word may wrap inside a batch: carry */
        c0[j] = (uint32_t)c;
        c1[j] = (uint32_t)(c >> 32);
    }
}

static void philox_batch_scalar(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t w0[BATCH],
                                uint32_t w1[BATCH], uint32_t w2[BATCH], uint32_t w3[BATCH]) {
    for (int j = 0; j < BATCH; j++) {
        uint32_t w[4];
        philox_one(k0, k1, ctr + (uint64_t)j, w);
        w0[j] = w[0]; w1[j] = w[1]; w2[j] = w[2]; w3[j] = w[3];
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && defined(__SSE2__)
#define HAVE_X86_SIMD 1
#include <immintrin.h>

/* SSE2 (every x86-64): 4 lanes. mulhilo: pmuludq multiplies the even 32-bit lanes into
 * 64-bit products; the odd lanes are shifted down first. */
#define MULHILO_SSE2(x, K, hi, lo) do {                                               \
        __m128i pe_ = _mm_mul_epu32((x), (K));                                        \
        __m128i po_ = _mm_mul_epu32(_mm_srli_epi64((x), 32), (K));                    \
        (lo) = _mm_or_si128(_mm_and_si128(pe_, lo32), _mm_slli_epi64(po_, 32));       \
        (hi) = _mm_or_si128(_mm_srli_epi64(pe_, 32), _mm_andnot_si128(lo32, po_));    \
    } while (0)

static void philox_batch_sse2(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t w0[BATCH],
                              uint32_t w1[BATCH], uint32_t w2[BATCH], uint32_t w3[BATCH]) {
    uint32_t c0a[BATCH], c1a[BATCH];
    counters(ctr, c0a, c1a);
    const __m128i lo32 = _mm_set1_epi64x(0xFFFFFFFFLL);
    const __m128i KA = _mm_set1_epi64x(PHILOX_ROUND_A), KB = _mm_set1_epi64x(PHILOX_ROUND_B);
    for (int g = 0; g < BATCH; g += 4) {
        __m128i c0 = _mm_loadu_si128((const __m128i *)(c0a + g));
        __m128i c1 = _mm_loadu_si128((const __m128i *)(c1a + g));
        __m128i c2 = _mm_setzero_si128(), c3 = _mm_setzero_si128();
        uint32_t a = k0, b = k1;
        for (int r = 0; r < N_ROUNDS; r++) {
            __m128i hb, lb, ha, la;
            MULHILO_SSE2(c2, KB, hb, lb);
            MULHILO_SSE2(c0, KA, ha, la);
            c0 = _mm_xor_si128(_mm_xor_si128(hb, c1), _mm_set1_epi32((int)a));
            c2 = _mm_xor_si128(_mm_xor_si128(ha, c3), _mm_set1_epi32((int)b));
            c1 = lb;
            c3 = la;
            a += PHILOX_KEY_A;
            b += PHILOX_KEY_B;
        }
        _mm_storeu_si128((__m128i *)(w0 + g), c0);
        _mm_storeu_si128((__m128i *)(w1 + g), c1);
        _mm_storeu_si128((__m128i *)(w2 + g), c2);
        _mm_storeu_si128((__m128i *)(w3 + g), c3);
    }
}

/* AVX2: 8 lanes, chosen at run time (__builtin_cpu_supports). */
#define MULHILO_AVX2(x, K, hi, lo) do {                                                   \
        __m256i pe_ = _mm256_mul_epu32((x), (K));                                         \
        __m256i po_ = _mm256_mul_epu32(_mm256_srli_epi64((x), 32), (K));                  \
        (lo) = _mm256_blend_epi32(pe_, _mm256_slli_epi64(po_, 32), 0xAA);                 \
        (hi) = _mm256_blend_epi32(_mm256_srli_epi64(pe_, 32), po_, 0xAA);                 \
    } while (0)

__attribute__((target("avx2")))
static void philox_batch_avx2(uint32_t k0, uint32_t k1, uint64_t ctr, uint32_t w0[BATCH],
                              uint32_t w1[BATCH], uint32_t w2[BATCH], uint32_t w3[BATCH]) {
    uint32_t c0a[BATCH], c1a[BATCH];
    counters(ctr, c0a, c1a);
    const __m256i KA = _mm256_set1_epi64x(PHILOX_ROUND_A), KB = _mm256_set1_epi64x(PHILOX_ROUND_B);
    __m256i c0[BATCH / 8], c1[BATCH / 8], c2[BATCH / 8], c3[BATCH / 8];
    for (int g = 0; g < BATCH / 8; g++) {
        c0[g] = _mm256_loadu_si256((const __m256i *)(c0a + 8 * g));
        c1[g] = _mm256_loadu_si256((const __m256i *)(c1a + 8 * g));
        c2[g] = _mm256_setzero_si256();
        c3[g] = _mm256_setzero_si256();
    }
    for (int r = 0; r < N_ROUNDS; r++) {
        const __m256i ka = _mm256_set1_epi32((int)k0), kb = _mm256_set1_epi32((int)k1);
        for (int g = 0; g < BATCH / 8; g++) {  /* independent chains: latency hidden */
            __m256i hb, lb, ha, la;
            MULHILO_AVX2(c2[g], KB, hb, lb);
            MULHILO_AVX2(c0[g], KA, ha, la);
            c0[g] = _mm256_xor_si256(_mm256_xor_si256(hb, c1[g]), ka);
            c2[g] = _mm256_xor_si256(_mm256_xor_si256(ha, c3[g]), kb);
            c1[g] = lb;
            c3[g] = la;
        }
        k0 += PHILOX_KEY_A;
        k1 += PHILOX_KEY_B;
    }
    for (int g = 0; g < BATCH / 8; g++) {
        _mm256_storeu_si256((__m256i *)(w0 + 8 * g), c0[g]);
        _mm256_storeu_si256((__m256i *)(w1 + 8 * g), c1[g]);
        _mm256_storeu_si256((__m256i *)(w2 + 8 * g), c2[g]);
        _mm256_storeu_si256((__m256i *)(w3 + 8 * g), c3[g]);
    }
}

/* Emission for a batch (SSE2): a 4x4 transpose turns four calls' words into call-major
 * order, where the eight 16-bit lanes of call j are its elements in order (little-endian
 * x86). keep = u >= t as saturating (t - u) == 0, valid for t <= 0xFFFF. */
static inline void transpose4(__m128i a, __m128i b, __m128i c, __m128i d, __m128i r[4]) {
    __m128i ab_lo = _mm_unpacklo_epi32(a, b), ab_hi = _mm_unpackhi_epi32(a, b);
    __m128i cd_lo = _mm_unpacklo_epi32(c, d), cd_hi = _mm_unpackhi_epi32(c, d);
    r[0] = _mm_unpacklo_epi64(ab_lo, cd_lo);
    r[1] = _mm_unpackhi_epi64(ab_lo, cd_lo);
    r[2] = _mm_unpacklo_epi64(ab_hi, cd_hi);
    r[3] = _mm_unpackhi_epi64(ab_hi, cd_hi);
}

static void emit_mask_batch_sse2(uint8_t *dst, const uint32_t w0[BATCH], const uint32_t w1[BATCH],
                                 const uint32_t w2[BATCH], const uint32_t w3[BATCH], uint32_t t) {
    const __m128i tv = _mm_set1_epi16((short)t), zero = _mm_setzero_si128(), one = _mm_set1_epi8(1);
    for (int g = 0; g < BATCH; g += 4) {
        __m128i r[4];
        transpose4(_mm_loadu_si128((const __m128i *)(w0 + g)), _mm_loadu_si128((const __m128i *)(w1 + g)),
                   _mm_loadu_si128((const __m128i *)(w2 + g)), _mm_loadu_si128((const __m128i *)(w3 + g)), r);
        __m128i k[4];
        for (int j = 0; j < 4; j++) k[j] = _mm_cmpeq_epi16(_mm_subs_epu16(tv, r[j]), zero);
        _mm_storeu_si128((__m128i *)(dst + 8 * g), _mm_and_si128(_mm_packs_epi16(k[0], k[1]), one));
        _mm_storeu_si128((__m128i *)(dst + 8 * g + 16), _mm_and_si128(_mm_packs_epi16(k[2], k[3]), one));
    }
}

static void emit_u16_batch_sse2(int32_t *dst, const uint32_t w0[BATCH], const uint32_t w1[BATCH],
                                const uint32_t w2[BATCH], const uint32_t w3[BATCH]) {
    const __m128i zero = _mm_setzero_si128();
    for (int g = 0; g < BATCH; g += 4) {
        __m128i r[4];
        transpose4(_mm_loadu_si128((const __m128i *)(w0 + g)), _mm_loadu_si128((const __m128i *)(w1 + g)),
                   _mm_loadu_si128((const __m128i *)(w2 + g)), _mm_loadu_si128((const __m128i *)(w3 + g)), r);
        for (int j = 0; j < 4; j++) {
            _mm_storeu_si128((__m128i *)(dst + 8 * (g + j)), _mm_unpacklo_epi16(r[j], zero));
            _mm_storeu_si128((__m128i *)(dst + 8 * (g + j) + 4), _mm_unpackhi_epi16(r[j], zero));
        }
    }
}
#endif

/* The implementation in use: "avx2" | "sse2" (x86) | "scalar" (portable C throughout).
 * Chosen when the module loads: the widest the CPU runs, or TUNETERM_PHILOX_SIMD if set;
 * _set_simd() switches it (tests and benchmarks only: not while a call is running). */
static batch_fn philox_batch = philox_batch_scalar;
static const char *philox_batch_name = "scalar";
static int simd_emit = 0;   /* SSE2 emission goes with the SIMD batches */

/* Selects `want` (NULL or "": the widest available); a name the CPU cannot run falls back to
 * the next narrower one. Returns -1 for an unknown name. */
static int select_simd(const char *want) {
    int rank;   /* 2 avx2, 1 sse2, 0 scalar */
    if (want == NULL || want[0] == '\0' || strcmp(want, "avx2") == 0) rank = 2;
    else if (strcmp(want, "sse2") == 0) rank = 1;
    else if (strcmp(want, "scalar") == 0) rank = 0;
    else return -1;
#ifdef HAVE_X86_SIMD
    __builtin_cpu_init();
    if (rank == 2 && !__builtin_cpu_supports("avx2")) rank = 1;
#else
    rank = 0;
#endif
    philox_batch = philox_batch_scalar;
    philox_batch_name = "scalar";
#ifdef HAVE_X86_SIMD
    if (rank == 2) { philox_batch = philox_batch_avx2; philox_batch_name = "avx2"; }
    if (rank == 1) { philox_batch = philox_batch_sse2; philox_batch_name = "sse2"; }
#endif
    simd_emit = rank > 0;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Work: calls [call_begin, call_end) of a request; elements clipped to numel.
 * ------------------------------------------------------------------------------------- */

enum { MODE_MASK = 0, MODE_U16 = 1 };

typedef struct {
    int mode;
    uint32_t k0, k1;
    uint64_t offset;        /* Philox call of element 0 */
    int64_t numel;
    uint32_t threshold;     /* MODE_MASK */
    void *out;              /* uint8_t* (MODE_MASK) or int32_t* (MODE_U16) */
    int64_t call_begin, call_end;
} job_t;

static inline void emit_mask(uint8_t *dst, const uint32_t w[4], uint32_t t) {
    for (int k = 0; k < 4; k++) {
        dst[2 * k] = (uint8_t)((w[k] & 0xFFFFu) >= t);
        dst[2 * k + 1] = (uint8_t)((w[k] >> 16) >= t);
    }
}

static inline void emit_u16(int32_t *dst, const uint32_t w[4]) {
    for (int k = 0; k < 4; k++) {
        dst[2 * k] = (int32_t)(w[k] & 0xFFFFu);
        dst[2 * k + 1] = (int32_t)(w[k] >> 16);
    }
}

static void run_job(const job_t *jb) {
    const uint32_t k0 = jb->k0, k1 = jb->k1, t = jb->threshold;
    const int64_t numel = jb->numel;
    const int64_t full_calls = numel / ELEMS_PER_CALL;   /* calls with all 8 elements in range */
    int64_t c = jb->call_begin;
    const int64_t c_full_end = jb->call_end < full_calls ? jb->call_end : full_calls;
    uint32_t w0[BATCH], w1[BATCH], w2[BATCH], w3[BATCH];

    if (jb->mode == MODE_MASK && t > 0xFFFFu) {  /* threshold 65536: no draw is kept */
        int64_t first = jb->call_begin * ELEMS_PER_CALL;
        int64_t last = jb->call_end * ELEMS_PER_CALL < numel ? jb->call_end * ELEMS_PER_CALL : numel;
        if (last > first) memset((uint8_t *)jb->out + first, 0, (size_t)(last - first));
        return;
    }
    if (jb->mode == MODE_MASK) {
        uint8_t *out = (uint8_t *)jb->out;
        for (; c + BATCH <= c_full_end; c += BATCH) {
            philox_batch(k0, k1, jb->offset + (uint64_t)c, w0, w1, w2, w3);
            uint8_t *dst = out + c * ELEMS_PER_CALL;
#ifdef HAVE_X86_SIMD
            if (simd_emit) emit_mask_batch_sse2(dst, w0, w1, w2, w3, t);
            else
#endif
            for (int j = 0; j < BATCH; j++) {
                uint32_t w[4] = {w0[j], w1[j], w2[j], w3[j]};
                emit_mask(dst + j * ELEMS_PER_CALL, w, t);
            }
        }
    } else {
        int32_t *out = (int32_t *)jb->out;
        for (; c + BATCH <= c_full_end; c += BATCH) {
            philox_batch(k0, k1, jb->offset + (uint64_t)c, w0, w1, w2, w3);
            int32_t *dst = out + c * ELEMS_PER_CALL;
#ifdef HAVE_X86_SIMD
            if (simd_emit) emit_u16_batch_sse2(dst, w0, w1, w2, w3);
            else
#endif
            for (int j = 0; j < BATCH; j++) {
                uint32_t w[4] = {w0[j], w1[j], w2[j], w3[j]};
                emit_u16(dst + j * ELEMS_PER_CALL, w);
            }
        }
    }
    /* the remaining calls one by one; the last call of the request may be partial */
    for (; c < jb->call_end; c++) {
        uint32_t w[4];
        philox_one(k0, k1, jb->offset + (uint64_t)c, w);
        int64_t first = c * ELEMS_PER_CALL;
        int64_t n = numel - first < ELEMS_PER_CALL ? numel - first : ELEMS_PER_CALL;
        if (jb->mode == MODE_MASK) {
            uint8_t tmp[ELEMS_PER_CALL];
            emit_mask(tmp, w, t);
            memcpy((uint8_t *)jb->out + first, tmp, (size_t)n);
        } else {
            int32_t tmp[ELEMS_PER_CALL];
            emit_u16(tmp, w);
            memcpy((int32_t *)jb->out + first, tmp, (size_t)n * sizeof(int32_t));
        }
    }
}

#if HAVE_THREADS
static void *job_thread(void *arg) {
    run_job((const job_t *)arg);
    return NULL;
}
#endif

static int online_cpus(void) {
#if HAVE_THREADS && defined(_SC_NPROCESSORS_ONLN)
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n < MAX_THREADS ? n : MAX_THREADS) : 1;
#else
    return 1;
#endif
}

/* Runs the whole request, split over up to `threads` threads (0: automatic). Call without
 * the GIL. Threads that fail to start are made up for by the calling thread. */
static void run_request(job_t base, int threads) {
    const int64_t n_calls = (base.numel + ELEMS_PER_CALL - 1) / ELEMS_PER_CALL;
    int nt;
    if (threads <= 0) {
        nt = base.numel >= AUTO_THREAD_MIN ? AUTO_THREADS : 1;
        int cpus = online_cpus();
        if (nt > cpus) nt = cpus;
    } else {
        nt = threads < MAX_THREADS ? threads : MAX_THREADS;
    }
    /* at least BATCH calls per thread */
    if (nt > 1 && n_calls / BATCH < nt) nt = (int)(n_calls / BATCH) > 0 ? (int)(n_calls / BATCH) : 1;
#if HAVE_THREADS
    if (nt > 1) {
        job_t jobs[MAX_THREADS];
        pthread_t tids[MAX_THREADS];
        int started[MAX_THREADS] = {0};
        /* chunk boundaries rounded to BATCH calls so every thread runs whole batches */
        int64_t per = (n_calls + nt - 1) / nt;
        per = (per + BATCH - 1) / BATCH * BATCH;
        for (int i = 0; i < nt; i++) {
            jobs[i] = base;
            int64_t b = per * i, e = per * (i + 1);
            jobs[i].call_begin = b < n_calls ? b : n_calls;
            jobs[i].call_end = e < n_calls ? e : n_calls;
        }
        for (int i = 1; i < nt; i++)
            started[i] = pthread_create(&tids[i], NULL, job_thread, &jobs[i]) == 0;
        run_job(&jobs[0]);
        for (int i = 1; i < nt; i++) {
            if (started[i]) pthread_join(tids[i], NULL);
            else run_job(&jobs[i]);
        }
        return;
    }
#endif
    base.call_begin = 0;
    base.call_end = n_calls;
    run_job(&base);
}

/* ---------------------------------------------------------------------------------------
 * Argument parsing
 * ------------------------------------------------------------------------------------- */

/* An int (not bool) in [lo, hi) into *v; ValueError otherwise (as the PyTorch path's
 * checks in dropout.py, which also reject non-ints with ValueError). */
static int get_ranged(PyObject *o, const char *name, long long lo, unsigned long long hi,
                      unsigned long long *v) {
    if (!PyLong_Check(o) || PyBool_Check(o)) {
        PyErr_Format(PyExc_ValueError, "%s must be an int (got %s)", name, Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow != 0 || x < lo || (unsigned long long)x >= hi) {
        PyErr_Format(PyExc_ValueError, "%s out of range (got %R)", name, o);
        return -1;
    }
    *v = (unsigned long long)x;
    return 0;
}

static int get_seed_offset(PyObject *seed_o, PyObject *offset_o, unsigned long long *seed,
                           unsigned long long *offset) {
    if (get_ranged(seed_o, "seed (must be in [0, 2**63))", 0, SEED_LIMIT, seed) < 0) return -1;
    if (get_ranged(offset_o, "offset (must be in [0, 2**62))", 0, OFFSET_LIMIT, offset) < 0) return -1;
    return 0;
}

static int get_numel_ptr(PyObject *numel_o, PyObject *ptr_o, int64_t *numel, void **ptr) {
    unsigned long long n;
    if (get_ranged(numel_o, "numel (must be >= 0)", 0, (unsigned long long)PY_SSIZE_T_MAX / 4, &n) < 0)
        return -1;
    *numel = (int64_t)n;
    if (!PyLong_Check(ptr_o) || PyBool_Check(ptr_o)) {
        PyErr_SetString(PyExc_ValueError, "out_ptr must be an int (a data_ptr())");
        return -1;
    }
    unsigned long long a = PyLong_AsUnsignedLongLong(ptr_o);  /* negative, too big: error */
    if (a == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "out_ptr is not an address (got %R)", ptr_o);
        return -1;
    }
    if ((unsigned long long)(uintptr_t)a != a) {
        PyErr_Format(PyExc_ValueError, "out_ptr is not an address (got %R)", ptr_o);
        return -1;
    }
    void *p = (void *)(uintptr_t)a;
    if (p == NULL && n > 0) {
        PyErr_SetString(PyExc_ValueError, "out_ptr is NULL");
        return -1;
    }
    *ptr = p;
    return 0;
}

static int get_threads(PyObject *o, int *threads) {
    if (o == NULL || o == Py_None) { *threads = 0; return 0; }
    unsigned long long t;
    if (get_ranged(o, "threads (must be in [0, 1024))", 0, 1024, &t) < 0) return -1;
    *threads = (int)t;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Module functions
 * ------------------------------------------------------------------------------------- */

static PyObject *py_keep_mask(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"seed", "offset", "numel", "threshold", "out_ptr", "threads", NULL};
    PyObject *seed_o, *offset_o, *numel_o, *thr_o, *ptr_o, *threads_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|O:keep_mask", kwlist, &seed_o, &offset_o,
                                     &numel_o, &thr_o, &ptr_o, &threads_o))
        return NULL;
    unsigned long long seed, offset, thr;
    int64_t numel;
    void *out;
    int threads;
    if (get_seed_offset(seed_o, offset_o, &seed, &offset) < 0) return NULL;
    if (get_numel_ptr(numel_o, ptr_o, &numel, &out) < 0) return NULL;
    if (get_ranged(thr_o, "threshold (must be in [0, 65536])", 0, 65537, &thr) < 0) return NULL;
    if (get_threads(threads_o, &threads) < 0) return NULL;
    if (numel == 0) Py_RETURN_NONE;
    job_t jb = {MODE_MASK, (uint32_t)seed, (uint32_t)(seed >> 32), offset, numel, (uint32_t)thr, out, 0, 0};
    Py_BEGIN_ALLOW_THREADS
    run_request(jb, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_uniform16(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"seed", "offset", "numel", "out_ptr", "threads", NULL};
    PyObject *seed_o, *offset_o, *numel_o, *ptr_o, *threads_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|O:uniform16", kwlist, &seed_o, &offset_o,
                                     &numel_o, &ptr_o, &threads_o))
        return NULL;
    unsigned long long seed, offset;
    int64_t numel;
    void *out;
    int threads;
    if (get_seed_offset(seed_o, offset_o, &seed, &offset) < 0) return NULL;
    if (get_numel_ptr(numel_o, ptr_o, &numel, &out) < 0) return NULL;
    if (get_threads(threads_o, &threads) < 0) return NULL;
    if (numel == 0) Py_RETURN_NONE;
    job_t jb = {MODE_U16, (uint32_t)seed, (uint32_t)(seed >> 32), offset, numel, 0, out, 0, 0};
    Py_BEGIN_ALLOW_THREADS
    run_request(jb, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_philox4x32(PyObject *self, PyObject *args) {
    PyObject *seed_o, *ctr_o;
    if (!PyArg_ParseTuple(args, "OO:philox4x32", &seed_o, &ctr_o)) return NULL;
    unsigned long long seed, ctr;
    if (get_ranged(seed_o, "seed (must be in [0, 2**63))", 0, SEED_LIMIT, &seed) < 0) return NULL;
    if (get_ranged(ctr_o, "ctr (must be in [0, 2**63))", 0, SEED_LIMIT, &ctr) < 0) return NULL;
    uint32_t w[4];
    philox_one((uint32_t)seed, (uint32_t)(seed >> 32), ctr, w);
    return Py_BuildValue("(kkkk)", (unsigned long)w[0], (unsigned long)w[1], (unsigned long)w[2],
                         (unsigned long)w[3]);
}

static PyObject *py_simd(PyObject *self, PyObject *args) {
    return PyUnicode_FromString(philox_batch_name);
}

static PyObject *py_set_simd(PyObject *self, PyObject *args) {
    const char *want;
    if (!PyArg_ParseTuple(args, "s:_set_simd", &want)) return NULL;
    if (select_simd(want) < 0) {
        PyErr_Format(PyExc_ValueError, "unknown implementation %R (avx2, sse2, scalar)", PyTuple_GET_ITEM(args, 0));
        return NULL;
    }
    return PyUnicode_FromString(philox_batch_name);
}

static PyMethodDef methods[] = {
    {"simd", py_simd, METH_NOARGS,
     "simd() -> str: the implementation in use, \"avx2\", \"sse2\" or \"scalar\"."},
    {"_set_simd", py_set_simd, METH_VARARGS,
     "_set_simd(name) -> str: use \"avx2\" | \"sse2\" | \"scalar\" | \"\" (widest) if the CPU\n"
     "runs it, else the next narrower; returns the one now in use. Tests/benchmarks only."},
    {"keep_mask", (PyCFunction)(void (*)(void))py_keep_mask, METH_VARARGS | METH_KEYWORDS,
     "keep_mask(seed, offset, numel, threshold, out_ptr, threads=0) -> None\n\n"
     "Write numel bytes (1 keep / 0 drop: a torch.bool buffer) at the raw address out_ptr:\n"
     "element i is kept iff its 16-bit Philox draw >= threshold (tuneterm_kernels.dropout).\n"
     "seed in [0, 2**63), offset in [0, 2**62), threshold in [0, 65536]. The caller keeps a\n"
     "contiguous buffer of at least numel bytes alive at out_ptr. threads=0: automatic."},
    {"uniform16", (PyCFunction)(void (*)(void))py_uniform16, METH_VARARGS | METH_KEYWORDS,
     "uniform16(seed, offset, numel, out_ptr, threads=0) -> None\n\n"
     "Write the numel 16-bit draws as int32 (4 * numel bytes) at the raw address out_ptr."},
    {"philox4x32", py_philox4x32, METH_VARARGS,
     "philox4x32(seed, ctr) -> (w0, w1, w2, w3): one Philox-4x32-10 call (tl.randint4x)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "tuneterm_kernels._philox",
    "Native Philox-4x32-10 dropout mask, bit-identical to tuneterm_kernels.dropout.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__philox(void) {
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    if (select_simd(getenv("TUNETERM_PHILOX_SIMD")) < 0) select_simd(NULL);
    if (PyModule_AddIntConstant(m, "ELEMS_PER_CALL", ELEMS_PER_CALL) < 0 ||
        PyModule_AddIntConstant(m, "MAX_THREADS", MAX_THREADS) < 0 ||
        PyModule_AddIntConstant(m, "AUTO_THREAD_MIN", (long)AUTO_THREAD_MIN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
