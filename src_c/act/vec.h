/* act/vec.h - vectorised activations, written once against the vector API of simd/<isa>.h.
 *
 * Accuracy (checked against float64 in tests/test_kernels.py, all ISAs):
 *   v_exp: Cody-Waite reduction to |r| <= ln2/2, degree-7 Taylor polynomial; relative error
 *          <= 2 ulp on [-87.3, 88]; inputs are clamped to that range (so exp saturates at
 *          1.65e38 instead of overflowing to inf, and underflows to 1.2e-38, never to a denormal).
 *   sigmoid = 1/(1+exp(-x)): absolute error <= 1.5e-7.
 *   tanh: |x| < 0.55: x*P(x^2), the Taylor series to x^15 (relative error < 3e-8 + rounding);
 *         else sign(x)(1-e)/(1+e), e = exp(-2|x|): absolute error <= 2e-7 everywhere.
 *   the recurrent epilogues' gates: v_tanh_rat_n (<= 3.3e-7 abs) and v_sigmoid_rat_n (<= 1.7e-7
 *         abs), below.
 *   log1p (softplus) via log(m) = 2 atanh((m-1)/(m+1)) on m in [sqrt(1/2), sqrt(2)]: <= 2e-7 abs.
 *   the unbounded kinds (elu, selu, softplus, silu, exponential, ...): |err| <= 4e-7 |y| + 2e-7.
 * NaN propagates through every kind (bounds are applied as v_max(bound, x), which returns x for
 * a NaN x), except thresholded_relu, whose definition (x > alpha ? x : 0) maps NaN to 0, like
 * NumPy's and onnxruntime's.
 */
#ifndef FRNN_ACT_VEC_H
#define FRNN_ACT_VEC_H
#include <math.h>
#include "../fastrnn.h"

#define FRNN_INLINE static inline __attribute__((always_inline))

FRNN_INLINE vf v_exp(vf x) {
    x = v_min(v_set1(0x1.6p+6f), v_max(v_set1(-0x1.5d58a0p+6f), x));   /* [-87.3365, 88] */
    vf n = v_round(v_mul(x, v_set1(0x1.715476p+0f)));                   /* x / ln2 */
    vf r = v_fma(n, v_set1(-0x1.63p-1f), x);                             /* x - n*ln2_hi */
    r = v_fma(n, v_set1(0x1.bd0106p-13f), r);                            /* - n*ln2_lo */
    vf p = v_set1(0x1.a01a02p-13f);                                      /* 1/7! */
    p = v_fma(p, r, v_set1(0x1.6c16c2p-10f));                            /* 1/6! */
    p = v_fma(p, r, v_set1(0x1.111112p-7f));                             /* 1/5! */
    p = v_fma(p, r, v_set1(0x1.555556p-5f));                             /* 1/4! */
    p = v_fma(p, r, v_set1(0x1.555556p-3f));                             /* 1/3! */
    p = v_fma(p, r, v_set1(0x1.0p-1f));                                  /* 1/2! */
    p = v_fma(p, r, v_set1(1.0f));
    p = v_fma(p, r, v_set1(1.0f));
    return v_mul(p, v_pow2(n));
}

FRNN_INLINE vf v_sigmoid(vf x) {
    return v_rcp(v_add(v_set1(1.0f), v_exp(v_sub(v_zero(), x))));   /* 1 + e is finite, >= 1 */
}

FRNN_INLINE vf v_tanh(vf x) {
    vf a = v_abs(x);
    vf e = v_exp(v_mul(a, v_set1(-2.0f)));
    vf big = v_copysign(v_mul(v_sub(v_set1(1.0f), e), v_rcp(v_add(v_set1(1.0f), e))), x);
    vf x2 = v_mul(x, x);
    vf p = v_set1(-0x1.7da364p-10f);            /* -929569/638512875 */
    p = v_fma(p, x2, v_set1(0x1.d6d3d0p-9f));   /* 21844/6081075 */
    p = v_fma(p, x2, v_set1(-0x1.226e36p-7f));  /* -1382/155925 */
    p = v_fma(p, x2, v_set1(0x1.664f48p-6f));   /* 62/2835 */
    p = v_fma(p, x2, v_set1(-0x1.ba1ba2p-5f));  /* -17/315 */
    p = v_fma(p, x2, v_set1(0x1.111112p-3f));   /* 2/15 */
    p = v_fma(p, x2, v_set1(-0x1.555556p-2f));  /* -1/3 */
    vf small = v_fma(v_mul(p, x2), x, x);
    return v_select(v_lt(a, v_set1(0.55f)), small, big);
}

/* Lockstep over n vectors (n a compile-time constant): every step of a function below runs for
 * all n before the next step, in one basic block, so the recurrent epilogue's gate math for a
 * block of rows is n independent dependency chains the core overlaps, instead of one row's chain
 * (~60 cycles of latency for a tanh) at a time. Each vector gets exactly the operations of the
 * one-vector form, so the bits do not depend on n. */
#define FRNN_LANES(n, r) _Pragma("GCC unroll 8") for (int r = 0; r < (n); r++)

/* The recurrent epilogues' tanh: x P(x^2) / Q(x^2), x clamped to [-9, 9] (tanh(9) = 1 - 3e-8),
 * P of degree 6 and Q of degree 3 in x^2, fitted near-minimax for absolute error by
 * act/fit_tanh.py (which prints these constants). No exp, no branch, no select: 17 operations
 * against v_tanh's ~40 (measured on AVX-512: 36 -> 15.5 cycles per vector). Absolute error
 * <= 3.3e-7 (float32 evaluation on 2.4M points of [-12, 12]; v_tanh: 2e-7), relative <= 2.7e-7
 * for |x| < 0.5; NaN propagates; +-inf give +-(1 - 3e-8). */
/* highest degree first, as Horner's rule uses them (fit_tanh.py prints them lowest first), times
 * s * w^k for the term of degree k (s, w powers of two: exact) */
#define FRNN_TANH_P(s, w)                                                                        \
    {-0x1.73a1a0p-44f * (s) * (w) * (w) * (w) * (w) * (w) * (w), 0x1.c76b5ap-35f * (s) * (w) * (w) * (w) * (w) * (w), \
     -0x1.57920ep-26f * (s) * (w) * (w) * (w) * (w), 0x1.7442b6p-17f * (s) * (w) * (w) * (w),    \
     0x1.960d5ep-9f * (s) * (w) * (w), 0x1.0bd91ap-3f * (s) * (w), 0x1.fffffep-1f * (s)}
#define FRNN_TANH_Q(w) {0x1.0a14c8p-12f * (w) * (w) * (w), 0x1.90ee5cp-6f * (w) * (w), 0x1.db41dap-2f * (w), 1.0f}
static const float frnn_tanh_P[7] = FRNN_TANH_P(1.0f, 1.0f);
static const float frnn_tanh_Q[4] = FRNN_TANH_Q(1.0f);
/* The same with x = 2y scaled out (v_sigmoid_rat_n): P[i] * 4^(i-7) and Q[i] * 4^(i-3), powers
 * of two, so every step below gives exactly the value for y scaled by a power of two. */
static const float frnn_sig_P[7] = FRNN_TANH_P(0.25f, 0.25f);
static const float frnn_sig_Q[4] = FRNN_TANH_Q(0.25f);

/* the rational forms' first part: x clamped to [-lim, lim] in place, p = P(x^2), q = Q(x^2) (Q's
 * coefficients are positive: q >= 1); n <= V_RB vectors in lockstep */
FRNN_INLINE void v_rat_pq(const int n, vf *x, float lim, const float *P, const float *Q, vf *p,
                          vf *q) {
    vf z[V_RB];
    FRNN_LANES(n, r) {
        x[r] = v_min(v_set1(lim), v_max(v_set1(-lim), x[r]));
        z[r] = v_mul(x[r], x[r]);
        p[r] = v_set1(P[0]);
        q[r] = v_set1(Q[0]);
    }
#pragma GCC unroll 6
    for (int i = 1; i < 7; i++) FRNN_LANES(n, r) p[r] = v_fma(p[r], z[r], v_set1(P[i]));
#pragma GCC unroll 3
    for (int i = 1; i < 4; i++) FRNN_LANES(n, r) q[r] = v_fma(q[r], z[r], v_set1(Q[i]));
}

/* x = c P(c^2) / Q(c^2) + add, c = x clamped to [-lim, lim], the last multiply and the add one
 * FMA (add = 0: a multiply); in place on x[0..n), n <= V_RB, all n in lockstep */
FRNN_INLINE void v_rat_lk(const int n, vf *x, float lim, const float *P, const float *Q,
                          const float add) {
    vf p[V_RB], q[V_RB];
    v_rat_pq(n, x, lim, P, Q, p, q);
    if (add != 0.0f) FRNN_LANES(n, r) x[r] = v_fma(v_mul(x[r], p[r]), v_rcp(q[r]), v_set1(add));
    else FRNN_LANES(n, r) x[r] = v_mul(v_mul(x[r], p[r]), v_rcp(q[r]));   /* q >= 1 */
}

/* v_rat_lk over n vectors in lockstep groups of V_ACT_N (simd/<isa>.h; default all n): AVX2's
 * 16 registers do not hold the chains of 3 rows */
#ifndef V_ACT_N
#define V_ACT_N V_RB
#endif
FRNN_INLINE void v_rat_n(const int n, vf *x, float lim, const float *P, const float *Q,
                         const float add) {
#pragma GCC unroll 8
    for (int r0 = 0; r0 < n; r0 += V_ACT_N)
        v_rat_lk(n - r0 < V_ACT_N ? n - r0 : V_ACT_N, x + r0, lim, P, Q, add);
}

FRNN_INLINE void v_tanh_rat_n(const int n, vf *x) { v_rat_n(n, x, 9.0f, frnn_tanh_P, frnn_tanh_Q, 0.0f); }

/* The epilogues' sigmoid = (1 + tanh(x/2)) / 2 through the tanh above: absolute error <= 1.7e-7
 * (v_sigmoid: 1.5e-7), but not relative: for x < -17 it gives 0 to 3e-8 where v_sigmoid keeps
 * e^x. Gates need the absolute bound; the Activation and Dense layers (act_generic), whose
 * outputs may be small probabilities, keep v_sigmoid and v_tanh. The halvings are folded into
 * the constants (frnn_sig_P/Q, clamp at 18 = 2 * 9): c P'(c^2) is exactly half of
 * (c/2) P((c/2)^2), and the last multiply and the + 1/2 are one FMA, so 17 operations instead of
 * 19 (a multiply before the tanh, a multiply and an FMA after it), one rounding fewer. */
FRNN_INLINE void v_sigmoid_rat_n(const int n, vf *x) { v_rat_n(n, x, 18.0f, frnn_sig_P, frnn_sig_Q, 0.5f); }

/* y = sigmoid(a) tanh(b) with one reciprocal (an LSTM's i g and o tanh(c), rec/impl.h), a and b
 * clamped in place. With the sigmoid's P doubled and the tanh's halved (exact: powers of two),
 * 2 sigmoid(a) = (a Pa + Qa) / Qa and tanh(b) / 2 = b Pb / Qb, so
 * y = (a Pa + Qa) (b Pb) / (Qa Qb): 8 operations after the polynomials instead of the two
 * tails' 10 and a multiply. An LSTM step's c and h stay as close to float64 as with the separate
 * forms (tests/test_kernels.py test_lstm_gate_pairs). Qa Qb <= ~1.1e5: no overflow; NaN
 * propagates. */
static const float frnn_sig2_P[7] = FRNN_TANH_P(0.5f, 0.25f);
static const float frnn_tanh2_P[7] = FRNN_TANH_P(0.5f, 1.0f);
FRNN_INLINE void v_sig_tanh_lk(const int n, vf *a, vf *b, vf *y) {
    vf pa[V_RB], qa[V_RB], pb[V_RB], qb[V_RB];
    v_rat_pq(n, a, 18.0f, frnn_sig2_P, frnn_sig_Q, pa, qa);
    v_rat_pq(n, b, 9.0f, frnn_tanh2_P, frnn_tanh_Q, pb, qb);
    FRNN_LANES(n, r) {
        vf num = v_mul(v_fma(a[r], pa[r], qa[r]), v_mul(b[r], pb[r]));
        y[r] = v_mul(num, v_rcp(v_mul(qa[r], qb[r])));
    }
}
FRNN_INLINE void v_sig_tanh_n(const int n, vf *a, vf *b, vf *y) {
#pragma GCC unroll 8
    for (int r0 = 0; r0 < n; r0 += V_ACT_N)
        v_sig_tanh_lk(n - r0 < V_ACT_N ? n - r0 : V_ACT_N, a + r0, b + r0, y + r0);
}

/* log(1 + y) for y in [0, 1] (softplus's tail), absolute error <= 2e-7 */
FRNN_INLINE vf v_log1p_unit(vf y) {
    vf u = v_add(v_set1(1.0f), y);
    vf e, m = v_getmant(u, &e);                          /* u = m 2^e, m in [1, 2) */
    vmask hi = v_gt(m, v_set1(0x1.6a09e6p+0f));          /* m > sqrt(2): halve it */
    m = v_select(hi, v_mul(m, v_set1(0.5f)), m);
    e = v_select(hi, v_add(e, v_set1(1.0f)), e);
    vf s = v_div(v_sub(m, v_set1(1.0f)), v_add(m, v_set1(1.0f)));
    vf s2 = v_mul(s, s);
    vf p = v_set1(1.0f / 9.0f);
    p = v_fma(p, s2, v_set1(1.0f / 7.0f));
    p = v_fma(p, s2, v_set1(1.0f / 5.0f));
    p = v_fma(p, s2, v_set1(1.0f / 3.0f));
    p = v_fma(p, s2, v_set1(1.0f));
    vf lg = v_fma(v_mul(v_set1(2.0f), s), p, v_mul(e, v_set1(0x1.62e430p-1f)));
    /* u = 1 + y rounded: add back what the rounding lost, (y - (u - 1)) / u */
    return v_add(lg, v_div(v_sub(y, v_sub(u, v_set1(1.0f))), u));
}

/* GELU, x Phi(x), Phi the standard normal CDF: Phi(x) = erfc(-x / sqrt(2)) / 2 with
 * erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0 (the Chebyshev fit of Numerical
 * Recipes' erfcc, relative error < 1.2e-7 for every z >= 0), and erfc(-z) = 2 - erfc(z): for
 * x < 0 the product keeps its relative accuracy far into the tail (no 1 - 1 cancellation).
 * z is clamped to 10 (erfc(10) = 2e-45 underflows in float32 anyway). NaN propagates. */
FRNN_INLINE vf v_gelu(vf x) {
    vf z = v_min(v_set1(10.0f), v_mul(v_abs(x), v_set1(0x1.6a09e6p-1f)));     /* |x| / sqrt(2) */
    vf t = v_rcp(v_fma(z, v_set1(0.5f), v_set1(1.0f)));
    vf p = v_set1(0.17087277f);
    p = v_fma(p, t, v_set1(-0.82215223f));
    p = v_fma(p, t, v_set1(1.48851587f));
    p = v_fma(p, t, v_set1(-1.13520398f));
    p = v_fma(p, t, v_set1(0.27886807f));
    p = v_fma(p, t, v_set1(-0.18628806f));
    p = v_fma(p, t, v_set1(0.09678418f));
    p = v_fma(p, t, v_set1(0.37409196f));
    p = v_fma(p, t, v_set1(1.00002368f));
    p = v_fma(p, t, v_set1(-1.26551223f));
    vf half_erfc = v_mul(v_mul(t, v_set1(0.5f)), v_exp(v_fma(v_sub(v_zero(), z), z, p)));   /* Phi(-|x|) */
    vf phi = v_select(v_lt(x, v_zero()), half_erfc, v_sub(v_set1(1.0f), half_erfc));
    return v_mul(x, phi);
}

/* log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|) */
FRNN_INLINE vf v_softplus(vf x) {
    return v_add(v_max(v_zero(), x), v_log1p_unit(v_exp(v_sub(v_zero(), v_abs(x)))));
}

/* any elementwise kind (not the row-wise softmax ones) */
static vf act_generic(frnn_act a, vf x) {
    vf one = v_set1(1.0f), zero = v_zero();
    switch (a.kind) {
    case FRNN_ACT_SIGMOID: return v_sigmoid(x);
    case FRNN_ACT_TANH: return v_tanh(x);
    case FRNN_ACT_RELU: return v_max(zero, x);
    case FRNN_ACT_HARD_SIGMOID:
        return v_min(one, v_max(zero, v_fma(v_set1(a.alpha), x, v_set1(a.beta))));
    case FRNN_ACT_ELU:
        return v_select(v_gt(x, zero), x, v_mul(v_set1(a.alpha), v_sub(v_exp(x), one)));
    case FRNN_ACT_SOFTSIGN: return v_div(x, v_add(one, v_abs(x)));
    case FRNN_ACT_SOFTPLUS: return v_softplus(x);
    case FRNN_ACT_AFFINE: return v_fma(v_set1(a.alpha), x, v_set1(a.beta));
    case FRNN_ACT_LEAKY_RELU: return v_select(v_ge(x, zero), x, v_mul(v_set1(a.alpha), x));
    case FRNN_ACT_THRESHOLDED_RELU: return v_select(v_gt(x, v_set1(a.alpha)), x, zero);
    case FRNN_ACT_SCALED_TANH: return v_mul(v_set1(a.alpha), v_tanh(v_mul(v_set1(a.beta), x)));
    case FRNN_ACT_SELU:
        return v_mul(v_set1(1.0507009873554805f),
                     v_select(v_gt(x, zero), x,
                              v_mul(v_set1(1.6732632423543772f), v_sub(v_exp(x), one))));
    case FRNN_ACT_EXPONENTIAL: return v_exp(x);
    case FRNN_ACT_SILU: return v_mul(x, v_sigmoid(x));
    case FRNN_ACT_RELU6: return v_min(v_set1(6.0f), v_max(zero, x));
    case FRNN_ACT_GELU: return v_gelu(x);
    case FRNN_ACT_GELU_TANH:     /* x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2 */
        return v_mul(v_mul(v_set1(0.5f), x),
                     v_add(one, v_tanh(v_mul(v_set1(0.7978845608f),
                                             v_fma(v_mul(v_set1(0.044715f), x), v_mul(x, x), x)))));
    case FRNN_ACT_MISH: return v_mul(x, v_tanh(v_softplus(x)));
    case FRNN_ACT_HARDSWISH:     /* as torch computes it: x * relu6(x + 3) / 6 */
        return v_div(v_mul(x, v_min(v_set1(6.0f), v_max(zero, v_add(x, v_set1(3.0f))))), v_set1(6.0f));
    case FRNN_ACT_CLIP: return v_min(v_set1(a.beta), v_max(v_set1(a.alpha), x));   /* NaN passes */
    default: return x;   /* linear */
    }
}

/* The recurrent epilogues call this on the n rows of a block, in place: the common kinds in
 * lockstep (the rational forms above), the rest through the switch. */
FRNN_INLINE void act_n(const frnn_act *a, const int n, vf *x) {
    if (a->kind == FRNN_ACT_SIGMOID) v_sigmoid_rat_n(n, x);
    else if (a->kind == FRNN_ACT_TANH) v_tanh_rat_n(n, x);
    else if (a->kind != FRNN_ACT_LINEAR) FRNN_LANES(n, r) x[r] = act_generic(*a, x[r]);
}
#endif
