/*
 * The compiled loops of fedchain.fl._kernels: FedAvg's frozen arithmetic and the certified
 * split of an exact sum of squares, each in one pass over cache-resident data.
 *
 * A plain C library (no Python API), loaded with ctypes, which releases the GIL for each call.
 * What keeps every result bit-identical to the numpy loops (fedchain/fl/_aggregate.py and
 * fedchain/fl/_exact.py):
 *
 * - Built with -ffp-contract=off and without -ffast-math: every multiply and add is a separate,
 *   correctly rounded IEEE operation (never a fused multiply-add), in the order written; the
 *   compiler may put several elements' operations side by side in SIMD registers, which changes
 *   no element's result. The rounding mode and the exception flags are the calling thread's.
 * - The only reductions are the block sums of fc_block_sums, which the certified split's proof
 *   allows in any order and with or without fused multiply-adds (fedchain/fl/_exact.py, steps
 *   3-5); they are written as LANES independent partial sums, added together at the end, so they
 *   vectorize without any reassociation by the compiler, and only there may the compiler fuse a
 *   multiply and an add (FC_SUM_CLONES: the x86-64-v3 clone, AVX2 with FMA). Their values may
 *   then differ in the last bits from another machine's; the certified sum does not.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64))
/* one build for every x86-64 CPU: the loader picks the AVX2 clone where the CPU has it */
#define FC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FC_CLONES
#endif

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && (defined(__x86_64__) || defined(_M_X64))
/* the block sums: the x86-64-v3 clone (AVX2 and FMA) may fuse their multiply-adds (see above) */
#define FC_SUM_CLONES __attribute__((target_clones("arch=x86-64-v3", "default"), optimize("O3", "fp-contract=fast")))
#else
#define FC_SUM_CLONES FC_CLONES
#endif

#if defined(__GNUC__)
#define FC_INLINE static inline __attribute__((always_inline))
#else
#define FC_INLINE static inline
#endif

#define SCRATCH 4096 /* float64 elements of an accumulator chunk: 32 KiB, within any L1 */
#define LANES 8

#if defined(__GNUC__)
#define FC_PREFETCH(p) __builtin_prefetch((p), 0, 3)
#else
#define FC_PREFETCH(p) ((void)(p))
#endif
#define LINE 16 /* float32 elements of a 64-byte cache line */

/* Ask for the n float32 values at p, a cache line at a time (a hint: it changes no value). */
FC_INLINE void fc_prefetch(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += LINE) FC_PREFETCH(p + i);
}

/* acc[i] = fl64(theta[start + i]) + fl64(fl64(d_0[start + i]) * c_0) + ..., each add rounded, the updates in
 * the given order, for 0 <= i < n: FedAvg's arithmetic before the final rounding to float32. Inlined into
 * each caller (and so into each of its clones).
 *
 * Each operand is read in runs of n values, one array after another, and a CPU's prefetcher may not follow
 * a jump to another array every few KiB: one thread made a third of the float32 floor at K=10 and K=100 on
 * a Zen 5 EPYC (docs/ARCHITECTURE.md, "The compiled loops"). So while one array's run is summed the next
 * one's is asked for: the next update's, and after the last update the base's next run (next_n values,
 * 0 at the end of the caller's range). The same operations in the same order: no bit changes. */
FC_INLINE void fc_accumulate(double *acc, const float *theta, const float *const *deltas, const double *coeffs,
                             int64_t k, int64_t start, int64_t n, int64_t next_n) {
    const float *t = theta + start;
    if (k > 0) fc_prefetch(deltas[0] + start, n);
    for (int64_t i = 0; i < n; i++) acc[i] = (double)t[i]; /* exact */
    for (int64_t j = 0; j < k; j++) {
        const float *d = deltas[j] + start;
        const double c = coeffs[j];
        const float *ahead = j + 1 < k ? deltas[j + 1] + start : t + n;
        const int64_t ahead_n = j + 1 < k ? n : next_n;
        for (int64_t i = 0; i < n; i += LINE) {
            if (i < ahead_n) FC_PREFETCH(ahead + i);
            const int64_t m = n - i < LINE ? n - i : LINE;
            for (int64_t q = 0; q < m; q++) {
                double p = (double)d[i + q] * c;
                acc[i + q] = acc[i + q] + p;
            }
        }
    }
}

/* How many values the run after the one at start (of n values) holds within [start, hi): at most SCRATCH. */
FC_INLINE int64_t fc_next_run(int64_t start, int64_t n, int64_t hi) {
    const int64_t rest = hi - start - n;
    return rest < SCRATCH ? rest : SCRATCH;
}

/* out[i] = fl32(fl64(theta[i]) + fl64(fl64(d_0[i]) * c_0) + ... ), the updates in the given order */
FC_CLONES void fc_fedavg_chunk(const float *theta, const float *const *deltas, const double *coeffs, int64_t k,
                               float *out, int64_t lo, int64_t hi) {
    double acc[SCRATCH];
    for (int64_t start = lo; start < hi; start += SCRATCH) {
        int64_t n = hi - start < SCRATCH ? hi - start : SCRATCH;
        fc_accumulate(acc, theta, deltas, coeffs, k, start, n, fc_next_run(start, n, hi));
        float *o = out + start;
        for (int64_t i = 0; i < n; i++) o[i] = (float)acc[i]; /* nearest even (the thread's mode) */
    }
}

/*
 * The first i in [lo, hi) at which fc_fedavg_chunk's out[i] would not be finite or would differ in
 * any bit from expected[i]; hi if there is none. The same operations per element as
 * fc_fedavg_chunk, in the same order; instead of storing fl32(acc[i]) it compares its bits.
 */
FC_CLONES int64_t fc_fedavg_differs(const float *theta, const float *const *deltas, const double *coeffs, int64_t k,
                                    const float *expected, int64_t lo, int64_t hi) {
    double acc[SCRATCH];
    for (int64_t start = lo; start < hi; start += SCRATCH) {
        int64_t n = hi - start < SCRATCH ? hi - start : SCRATCH;
        fc_accumulate(acc, theta, deltas, coeffs, k, start, n, fc_next_run(start, n, hi));
        const float *e = expected + start;
        uint32_t differs = 0;
        for (int64_t i = 0; i < n; i++) {
            float o = (float)acc[i]; /* nearest even (the thread's mode) */
            uint32_t got, want;
            memcpy(&got, &o, sizeof got);
            memcpy(&want, e + i, sizeof want);
            differs |= (got ^ want) | (uint32_t)((got & 0x7f800000u) == 0x7f800000u); /* other bits, or inf/nan */
        }
        if (differs) {
            for (int64_t i = 0; i < n; i++) {
                float o = (float)acc[i];
                uint32_t got, want;
                memcpy(&got, &o, sizeof got);
                memcpy(&want, e + i, sizeof want);
                if (got != want || (got & 0x7f800000u) == 0x7f800000u) return start + i;
            }
        }
    }
    return hi;
}

/* acc[i] = fl64(acc[i] + fl64(fl64(delta[i]) * c)), after acc[i] = fl64(theta[i]) when theta is given */
FC_CLONES void fc_add_scaled(double *acc, const float *delta, double c, int64_t lo, int64_t hi, const float *theta) {
    if (theta) {
        for (int64_t i = lo; i < hi; i++) {
            double p = (double)delta[i] * c;
            acc[i] = (double)theta[i] + p;
        }
    } else {
        for (int64_t i = lo; i < hi; i++) {
            double p = (double)delta[i] * c;
            acc[i] = acc[i] + p;
        }
    }
}

FC_CLONES void fc_widen(const float *source, double *target, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) target[i] = (double)source[i]; /* exact */
}

FC_CLONES void fc_narrow(const double *source, float *target, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) target[i] = (float)source[i]; /* nearest even */
}

/* The grid g of a block whose estimate S' is finite and positive: 2**(ceil(e / 2) - 21) with S' < 2**e. */
static double fc_grid(double estimate) {
    int e;
    frexp(estimate, &e);
    /* -((-e) // 2) - 21 with Python's floor division: ceil(e / 2) - 21 */
    int half = e >= 0 ? (e + 1) / 2 : -((-e) / 2);
    return ldexp(1.0, half - 21);
}

/* S' of a block whose whole groups of LANES are summed into the lanes s: the values x[whole:n] past them
 * into lane 0, then the lanes added in order, into out[0]. Whether the block goes on to the split (S'
 * finite and not zero). */
static inline int fc_estimate(const float *x, int64_t whole, int64_t n, double *s, double *out) {
    for (int64_t i = whole; i < n; i++) {
        double v = (double)x[i];
        s[0] += v * v;
    }
    double estimate = 0.0;
    for (int j = 0; j < LANES; j++) estimate += s[j];
    out[0] = estimate;
    return isfinite(estimate) && estimate != 0.0;
}

/* The split of the values x[whole:n] past the last whole group of LANES, into lane 0. */
static inline void fc_block_tail(const float *x, int64_t whole, int64_t n, double c, double *a, double *b, double *t) {
    for (int64_t i = whole; i < n; i++) {
        double v = (double)x[i];
        double h = (v + c) - c;
        double r = v - h;
        a[0] += h * h;
        b[0] += h * r;
        t[0] += r * r;
    }
}

/* out[1..4] = g and the lanes' sums A', B', T', the lanes added in order. */
static inline void fc_block_result(double g, const double *a, const double *b, const double *t, double *out) {
    double sa = 0.0, sb = 0.0, st = 0.0;
    for (int j = 0; j < LANES; j++) {
        sa += a[j];
        sb += b[j];
        st += t[j];
    }
    out[1] = g;
    out[2] = sa;
    out[3] = sb;
    out[4] = st;
}

/*
 * For the n <= 2**16 float32 values x: out[0] = S' (the sum of the squares, any order); when it
 * is finite and not zero, out[1] = the grid g, out[2..4] = A', B', T' of the split
 * h = fl(fl(v + c) - c), r = fl(v - h), c = 1.5 * 2**52 * g (fedchain/fl/_exact.py, steps 1-5).
 */
#if !defined(FC_PLAIN_LOOPS) && defined(__GNUC__) && (__GNUC__ >= 9 || defined(__clang__))
/* The block sums' 8 lanes as two 4-wide vectors (GCC and clang vector extensions): element i + j of
 * every group of 8 goes to lane j, as in the plain loops below, so the sums are the same bits. The
 * compiler does not vectorize the plain loops' 24 partial sums well (it spills them); these it must.
 * FC_PLAIN_LOOPS builds the plain loops instead (tests/fl/test_kernels.py compares the two). */
typedef float fc_v4f __attribute__((vector_size(16)));
typedef double fc_v4d __attribute__((vector_size(32)));

/* By pointer, not by value: no vector crosses a function boundary (whose ABI depends on the target). */
static inline void fc_load4(fc_v4d *v, const float *p) {
    fc_v4f f;
    memcpy(&f, p, sizeof f);
    *v = __builtin_convertvector(f, fc_v4d); /* exact */
}

static inline void fc_store4(double *lanes, const fc_v4d *v) { memcpy(lanes, v, sizeof *v); }

FC_SUM_CLONES void fc_block_sums(const float *x, int64_t n, double *out) {
    double s[LANES];
    int64_t whole = n - n % LANES;
    fc_v4d s0 = {0, 0, 0, 0}, s1 = {0, 0, 0, 0};
    for (int64_t i = 0; i < whole; i += LANES) {
        fc_v4d v0, v1;
        fc_load4(&v0, x + i);
        fc_load4(&v1, x + i + 4);
        s0 += v0 * v0;
        s1 += v1 * v1;
    }
    fc_store4(s, &s0);
    fc_store4(s + 4, &s1);
    if (!fc_estimate(x, whole, n, s, out)) return;
    double g = fc_grid(out[0]);
    const double c = 1.5 * ldexp(g, 52);
    const fc_v4d cv = {c, c, c, c};
    fc_v4d a0 = {0, 0, 0, 0}, a1 = a0, b0 = a0, b1 = a0, t0 = a0, t1 = a0;
    for (int64_t i = 0; i < whole; i += LANES) {
        fc_v4d v0, v1;
        fc_load4(&v0, x + i);
        fc_load4(&v1, x + i + 4);
        fc_v4d h0 = (v0 + cv) - cv, h1 = (v1 + cv) - cv; /* v rounded to a multiple of g */
        fc_v4d r0 = v0 - h0, r1 = v1 - h1;                /* exact */
        a0 += h0 * h0;
        a1 += h1 * h1;
        b0 += h0 * r0;
        b1 += h1 * r1;
        t0 += r0 * r0;
        t1 += r1 * r1;
    }
    double a[LANES], b[LANES], t[LANES];
    fc_store4(a, &a0);
    fc_store4(a + 4, &a1);
    fc_store4(b, &b0);
    fc_store4(b + 4, &b1);
    fc_store4(t, &t0);
    fc_store4(t + 4, &t1);
    fc_block_tail(x, whole, n, c, a, b, t);
    fc_block_result(g, a, b, t, out);
}
#else
FC_SUM_CLONES void fc_block_sums(const float *x, int64_t n, double *out) {
    double s[LANES] = {0};
    int64_t whole = n - n % LANES;
    for (int64_t i = 0; i < whole; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            double v = (double)x[i + j];
            s[j] += v * v;
        }
    }
    if (!fc_estimate(x, whole, n, s, out)) return;
    double g = fc_grid(out[0]);
    const double c = 1.5 * ldexp(g, 52);
    double a[LANES] = {0}, b[LANES] = {0}, t[LANES] = {0};
    for (int64_t i = 0; i < whole; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            double v = (double)x[i + j];
            double h = (v + c) - c; /* v rounded to a multiple of g */
            double r = v - h;       /* exact */
            a[j] += h * h;
            b[j] += h * r;
            t[j] += r * r;
        }
    }
    fc_block_tail(x, whole, n, c, a, b, t);
    fc_block_result(g, a, b, t, out);
}
#endif

/* fc_block_sums for each block of `block` values of x[0:n] (the last one may be shorter), block j's
 * sums at out[5 j .. 5 j + 4]: one call for a whole array, so the caller's thread releases and takes
 * back the GIL once instead of once a block. */
void fc_blocks_sums(const float *x, int64_t n, int64_t block, double *out) {
    if (block < 1) return;
    for (int64_t lo = 0, j = 0; lo < n; lo += block, j++) fc_block_sums(x + lo, n - lo < block ? n - lo : block, out + 5 * j);
}
