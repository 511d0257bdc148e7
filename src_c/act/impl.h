/* act/impl.h - the activation kernel of the table: act_rows, over the vector functions of
 * act/vec.h (which rec/impl.h inlines into the recurrent epilogues). */
#ifndef FRNN_ACT_IMPL_H
#define FRNN_ACT_IMPL_H
#include "vec.h"

/* In place over `rows` rows of `cols` floats, row stride ld. Softmax kinds, layer_norm and
 * l2_normalize work per row. */
void ISA_SUFFIX(act_rows)(frnn_act a, float *x, int rows, int cols, int64_t ld) {
    const int full = cols - cols % VW, tail = cols - full;
    for (int r = 0; r < rows; r++) {
        float *p = x + (int64_t)r * ld;
        if (a.kind == FRNN_ACT_LAYER_NORM) {
            /* a first mean m0, then the sums of d = x - m0 and d^2: the mean m0 + sum d / n is
             * then right to the rounding of small numbers, and the variance has no cancellation */
            vf acc = v_zero(), sq = v_zero();
            for (int j = 0; j < full; j += VW) acc = v_add(acc, v_load(p + j));
            if (tail) acc = v_add(acc, v_load_n(p + full, tail));
            const float m0 = v_hsum(acc) / (float)cols;
            vf vm = v_set1(m0);
            acc = v_zero();
            for (int j = 0; j < full; j += VW) {
                vf d = v_sub(v_load(p + j), vm);
                acc = v_add(acc, d);
                sq = v_fma(d, d, sq);
            }
            float sd = v_hsum(acc), sd2 = v_hsum(sq);
            for (int j = full; j < cols; j++) { const float d = p[j] - m0; sd += d; sd2 += d * d; }
            const float dm = sd / (float)cols, var = sd2 / (float)cols - dm * dm;
            vf inv = v_set1(1.0f / sqrtf((var > 0 ? var : 0.0f) + a.alpha));
            vf vd = v_set1(dm);     /* (x - m0) - dm: no rounding of m0 + dm */
            for (int j = 0; j < full; j += VW) v_store(p + j, v_mul(v_sub(v_sub(v_load(p + j), vm), vd), inv));
            if (tail) v_store_n(p + full, v_mul(v_sub(v_sub(v_load_n(p + full, tail), vm), vd), inv), tail);
            continue;
        }
        if (a.kind == FRNN_ACT_MUL_HALVES) {
            const int n = cols / 2, nf = n - n % VW;
            for (int j = 0; j < nf; j += VW) v_store(p + j, v_mul(v_load(p + j), v_load(p + n + j)));
            for (int j = nf; j < n; j++) p[j] *= p[n + j];
            continue;
        }
        if (a.kind == FRNN_ACT_L2_NORMALIZE) {
            /* divided, not multiplied by a reciprocal: each element as x / norm rounds it */
            vf sq = v_zero();
            for (int j = 0; j < full; j += VW) { vf v = v_load(p + j); sq = v_fma(v, v, sq); }
            float ss = v_hsum(sq);
            for (int j = full; j < cols; j++) ss += p[j] * p[j];
            const float n = sqrtf(ss), d = a.beta != 0 ? n + a.alpha : (n > a.alpha ? n : a.alpha);
            vf vd = v_set1(d);
            for (int j = 0; j < full; j += VW) v_store(p + j, v_div(v_load(p + j), vd));
            if (tail) v_store_n(p + full, v_div(v_load_n(p + full, tail), vd), tail);
            continue;
        }
        if (a.kind != FRNN_ACT_SOFTMAX && a.kind != FRNN_ACT_LOG_SOFTMAX) {
            if (a.kind == FRNN_ACT_LINEAR) continue;
            for (int j = 0; j < full; j += VW) v_store(p + j, act_generic(a, v_load(p + j)));
            if (tail) v_store_n(p + full, act_generic(a, v_load_n(p + full, tail)), tail);
            continue;
        }
        /* row max (NaN-propagating through the sum below, not through the max) */
        float mx = p[0];
        for (int j = 1; j < cols; j++) mx = p[j] > mx ? p[j] : mx;
        vf vm = v_set1(mx), acc = v_zero();
        for (int j = 0; j < full; j += VW) {
            vf e = v_exp(v_sub(v_load(p + j), vm));
            acc = v_add(acc, e);
            if (a.kind == FRNN_ACT_SOFTMAX) v_store(p + j, e);
        }
        float sum = v_hsum(acc);
        for (int j = full; j < cols; j++) {
            vf e = v_exp(v_set1(p[j] - mx));
            float ef; v_store_n(&ef, e, 1);
            sum += ef;
            if (a.kind == FRNN_ACT_SOFTMAX) p[j] = ef;
        }
        if (a.kind == FRNN_ACT_SOFTMAX) {
            vf inv = v_set1(1.0f / sum);
            for (int j = 0; j < full; j += VW) v_store(p + j, v_mul(v_load(p + j), inv));
            for (int j = full; j < cols; j++) p[j] *= 1.0f / sum;
        } else {
            /* log(sum): sum >= 1 (the max term is 1); log(sum) = log1p(sum - 1) is not unit-range,
             * so use the scalar libm log here: one per row */
            float ls = logf(sum);
            for (int j = 0; j < cols; j++) p[j] = (p[j] - mx) - ls;
        }
    }
}
#endif
