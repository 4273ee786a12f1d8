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
 *   allows in any order (fedchain/fl/_exact.py); they are written as LANES independent partial
 *   sums, added together at the end, so they vectorize without any reassociation by the compiler.
 */
#include <stdint.h>
#include <math.h>

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(_M_X64))
/* one build for every x86-64 CPU: the loader picks the AVX2 clone where the CPU has it */
#define FC_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FC_CLONES
#endif

#define SCRATCH 4096 /* float64 elements of an accumulator chunk: 32 KiB, within any L1 */
#define LANES 8

/* out[i] = fl32(fl64(theta[i]) + fl64(fl64(d_0[i]) * c_0) + ... ), the updates in the given order */
FC_CLONES void fc_fedavg_chunk(const float *theta, const float *const *deltas, const double *coeffs, int64_t k,
                               float *out, int64_t lo, int64_t hi) {
    double acc[SCRATCH];
    for (int64_t start = lo; start < hi; start += SCRATCH) {
        int64_t n = hi - start < SCRATCH ? hi - start : SCRATCH;
        const float *t = theta + start;
        for (int64_t i = 0; i < n; i++) acc[i] = (double)t[i]; /* exact */
        for (int64_t j = 0; j < k; j++) {
            const float *d = deltas[j] + start;
            const double c = coeffs[j];
            for (int64_t i = 0; i < n; i++) {
                double p = (double)d[i] * c;
                acc[i] = acc[i] + p;
            }
        }
        float *o = out + start;
        for (int64_t i = 0; i < n; i++) o[i] = (float)acc[i]; /* nearest even (the thread's mode) */
    }
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

/*
 * For the n <= 2**16 float32 values x: out[0] = S' (the sum of the squares, any order); when it
 * is finite and not zero, out[1] = the grid g, out[2..4] = A', B', T' of the split
 * h = fl(fl(v + c) - c), r = fl(v - h), c = 1.5 * 2**52 * g (fedchain/fl/_exact.py, steps 1-5).
 */
FC_CLONES void fc_block_sums(const float *x, int64_t n, double *out) {
    double s[LANES] = {0};
    int64_t whole = n - n % LANES;
    for (int64_t i = 0; i < whole; i += LANES) {
        for (int j = 0; j < LANES; j++) {
            double v = (double)x[i + j];
            s[j] += v * v;
        }
    }
    for (int64_t i = whole; i < n; i++) {
        double v = (double)x[i];
        s[0] += v * v;
    }
    double estimate = 0.0;
    for (int j = 0; j < LANES; j++) estimate += s[j];
    out[0] = estimate;
    if (!isfinite(estimate) || estimate == 0.0) return;
    int e;
    frexp(estimate, &e);
    /* -((-e) // 2) - 21 with Python's floor division: ceil(e / 2) - 21 */
    int half = e >= 0 ? (e + 1) / 2 : -((-e) / 2);
    double g = ldexp(1.0, half - 21);
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
    for (int64_t i = whole; i < n; i++) {
        double v = (double)x[i];
        double h = (v + c) - c;
        double r = v - h;
        a[0] += h * h;
        b[0] += h * r;
        t[0] += r * r;
    }
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
