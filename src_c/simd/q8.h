/* simd/q8.h - int8 with dynamic activations (FRNN_W_Q8, kernels.h): the row quantizer shared by
 * the GEMM (gemm/impl.h) and the recurrent step (rec/impl.h), over simd/<isa>.h.
 *
 * A row x of K floats (one input of a matrix product: a step's features, a state h) becomes
 * u8 codes u[k] with a scale s and a zero point zp, per row and per call (dynamic, asymmetric:
 * all 256 codes, twice as fine as a symmetric s8 grid):
 *   lo = min(0, min x), hi = max(0, max x); inv = 255 / (hi - lo); s = (hi - lo) / 255;
 *   zp = rint(-lo * inv); u[k] = clamp(rint(x[k] * inv) + zp, 0, 255)        (x ~ s (u - zp))
 * Zero is exact (u = zp). A row of zeros: s = 0, u = 0. A row with an inf or NaN: s = NaN, so
 * every output of the row is NaN, as the fp32 product's would be.
 * The product with int8 weights q (one scale sw[n] per column, kernels.h) is then
 *   y[n] = (float)(sum_k u[k] q[n][k] - zp csum[n]) * (s * sw[n]) + bias[n],   csum[n] = sum_k q[n][k]
 * where the integer sum is exact (|sum| <= 2 * 255 * 127 * K < 2^31 for K <= FRNN_Q8_K_MAX), so the
 * product does not depend on the order of the sum, the ISA, the tile or the rows beside this one:
 * every ISA gives the same bits (fastrnn/precision.py q8_matmul computes the same numbers in
 * NumPy; what follows a product, gate math, stays each ISA's own as at fp32).
 * Every float operation above is one IEEE operation in this order (rint: to nearest, ties to
 * even, MXCSR's mode; no FMA: v_opaque), the same in the vector lanes and the scalar tail.
 *
 * Storage of a quantized row (Q_KG, simd/<isa>.h: the k interleaving of the packed weights):
 * 4 bytes per group of Q_KG k, u8 codes (VNNI, Q_KG = 4) or u16 codes (Q_KG = 2), padded with
 * zeros to whole groups. */
#ifndef FRNN_SIMD_Q8_H
#define FRNN_SIMD_Q8_H
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline int64_t q8_row_bytes(int K) { return (int64_t)((K + Q_KG - 1) / Q_KG) * 4; }

static inline void q8_put1(uint8_t *row, int k, int32_t u) {
    if (Q_KG == 4) row[k] = (uint8_t)u;
    else { const uint16_t v = (uint16_t)u; memcpy(row + 2 * k, &v, 2); }
}

/* x (K floats) -> row (q8_row_bytes(K) bytes), *s, *zp */
static inline void q8_row(const float *x, int K, uint8_t *row, float *s, int32_t *zp) {
    vf lo = v_zero(), hi = v_zero(), bad = v_zero();
    int k = 0;
    for (; k + VW <= K; k += VW) {
        const vf v = v_load(x + k);
        lo = v_min(lo, v);
        hi = v_max(hi, v);
        bad = v_add(bad, v_mul(v, v_zero()));   /* NaN iff an element is inf or NaN */
    }
    float l = -v_hmax(v_sub(v_zero(), lo)), h = v_hmax(hi), b = v_hsum(bad);
    for (int t = k; t < K; t++) {
        l = x[t] < l ? x[t] : l;
        h = x[t] > h ? x[t] : h;
        b += x[t] * 0.0f;
    }
    const int64_t nb = q8_row_bytes(K);
    if (b != b || !(h - l > 0.0f)) {   /* inf / NaN, or a row of zeros */
        memset(row, 0, (size_t)nb);
        *s = b != b ? NAN : 0.0f;
        *zp = 0;
        return;
    }
    const float range = h - l, inv = 255.0f / range;
    const float z = nearbyintf(-l * inv);
    *s = range / 255.0f;
    *zp = (int32_t)z;
    const vf vinv = v_set1(inv), vz = v_set1(z), top = v_set1(255.0f);
    for (k = 0; k + VW <= K; k += VW)
        q_store(row, k, v_min(top, v_max(v_zero(), v_add(v_round(v_mul(v_load(x + k), vinv)), vz))));
    for (; k < K; k++) {
        float u = nearbyintf(x[k] * inv) + z;
        u = u < 0.0f ? 0.0f : u > 255.0f ? 255.0f : u;
        q8_put1(row, k, (int32_t)u);
    }
    for (; k < (int)(nb / 4 * Q_KG); k++) q8_put1(row, k, 0);   /* the last group's padding */
}

/* the output: (float)(acc - zp csum) * (s sw) (+ bias by the caller, never fused: v_opaque) */
static inline vf q8_out(vq acc, float s, int32_t zp, const int32_t *csum, const float *sw) {
    return v_opaque(v_mul(q_fix(acc, zp, csum), v_opaque(v_mul(v_set1(s), v_load(sw)))));
}
#endif
