/* simd/scalar.h - the "vector" of one float: the portable fallback (baseline x86-64 or any CPU).
 * The kernel bodies (<family>/impl.h) are written once against this small vector API; each ISA file
 * defines it and includes them. Semantics every ISA keeps:
 *   v_max(a, b) / v_min(a, b) return b when either is NaN (x86 maxps/minps), so kernels write
 *   v_max(bound, x) to let a NaN x through.  VW: lanes; V_RB: batch rows per recurrent tile;
 *   G_MR x G_NR: the GEMM micro-tile (G_NR = 2 vectors). */
#ifndef FRNN_SIMD_SCALAR_H
#define FRNN_SIMD_SCALAR_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#define ISA_SUFFIX(name) frnn_##name##_scalar
#define VW 1
#define V_RB 4
#define G_MR 4

typedef float vf;
typedef int32_t vi;
typedef int vmask;

static inline vf v_zero(void) { return 0.0f; }
static inline vf v_set1(float a) { return a; }
static inline vf v_load(const float *p) { return *p; }
static inline void v_store(float *p, vf v) { *p = v; }
/* a reduced-precision weight widened to fp32 (exact): a bfloat16 bit pattern, an int8 */
static inline vf v_load_bf16(const uint16_t *p) {
    uint32_t u = (uint32_t)*p << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline vf v_load_i8(const int8_t *p) { return (float)*p; }
static inline vf v_load_n(const float *p, int n) { return n > 0 ? *p : 0.0f; }
static inline void v_store_n(float *p, vf v, int n) { if (n > 0) *p = v; }
static inline vf v_add(vf a, vf b) { return a + b; }
static inline vf v_sub(vf a, vf b) { return a - b; }
static inline vf v_mul(vf a, vf b) { return a * b; }
static inline vf v_div(vf a, vf b) { return a / b; }
static inline vf v_fma(vf a, vf b, vf c) { return a * b + c; }   /* a*b + c (not fused here) */
static inline vf v_rcp(vf x) { return 1.0f / x; }                 /* 1/x for finite x != 0 */
static inline vf v_max(vf a, vf b) { return a > b ? a : b; }    /* NaN in either -> b */
static inline vf v_min(vf a, vf b) { return a < b ? a : b; }
static inline vf v_abs(vf a) { return fabsf(a); }
static inline vf v_copysign(vf mag, vf sgn) { return copysignf(mag, sgn); }
static inline vmask v_lt(vf a, vf b) { return a < b; }
static inline vmask v_gt(vf a, vf b) { return a > b; }
static inline vmask v_ge(vf a, vf b) { return a >= b; }
static inline vmask v_ne(vf a, vf b) { return a != b; }    /* true for NaN */
static inline vf v_select(vmask m, vf t, vf f) { return m ? t : f; }
static inline int v_any(vmask m) { return m != 0; }
static inline vf v_round(vf a) { return nearbyintf(a); }
/* 2^n for integral-valued float n in [-126, 127] */
static inline vf v_pow2(vf n) {
    if (n != n) return n;   /* NaN: avoid the undefined float->int conversion */
    int32_t e = ((int32_t)n + 127) << 23; float r; memcpy(&r, &e, 4); return r;
}
/* split a > 0 into mantissa m in [1, 2) and exponent e (as float): a = m * 2^e */
static inline vf v_getmant(vf a, vf *e) {
    uint32_t u; memcpy(&u, &a, 4);
    *e = (float)((int32_t)(u >> 23) - 127);
    u = (u & 0x007fffffu) | 0x3f800000u; float m; memcpy(&m, &u, 4); return m;
}
static inline float v_hsum(vf a) { return a; }

/* int8 with dynamic activations (Q8, simd/q8.h): a column's 2 k of weights, the row's 2 u16 */
#define Q_KG 2
typedef struct { int32_t a, b; } vqw;
typedef int32_t vq;
static inline vqw q_wload(const int8_t *w) { return (vqw){w[0], w[1]}; }
static inline vqw q_xload(const uint8_t *x) {
    uint16_t u[2];
    memcpy(u, x, 4);
    return (vqw){u[0], u[1]};
}
static inline vq q_dot(vq acc, vqw w, vqw x) { return acc + w.a * x.a + w.b * x.b; }
static inline vq q_add(vq a, vq b) { return a + b; }
static inline vq q_zero(void) { return 0; }
static inline vf q_fix(vq acc, int32_t zp, const int32_t *csum) { return (float)(acc - zp * *csum); }
static inline void q_store(uint8_t *row, int64_t k, vf u) {
    const uint16_t v = (uint16_t)(int32_t)u;
    memcpy(row + 2 * k, &v, 2);
}
static inline float v_hmax(vf a) { return a; }
#endif
