/* simd/avx512.h - 16-lane AVX-512 (F+DQ+BW+VL: Skylake-X, Ice Lake, Zen 4). See simd/scalar.h. */
#ifndef FRNN_SIMD_AVX512_H
#define FRNN_SIMD_AVX512_H
#include <immintrin.h>
#include <stdint.h>

#define ISA_SUFFIX(name) frnn_##name##_avx512
#define VW 16
#define V_RB 6
#define G_MR 8
#define G_MR4 6   /* rows of the 4-vector GEMM tile (gemm/impl.h, panel_nv) */
/* batch 1: groups of short tiles as the recurrent epilogue's lanes (rec/impl.h). rec_step alone,
 * batch 1, the two builds alternated (31 pairs, median time ratios of two runs): LSTM 64
 * 0.966-0.971, LSTM 128 0.956-0.998, GRU 64 0.967-0.973, GRU 128 0.963-0.992, H = 32 (two tiles)
 * 0.99-1.01. Not on AVX2 (1.11-1.14x slower: 16 registers do not hold the lanes) nor scalar
 * (1.09x). */
#define V_TILE_LANES 1

typedef __m512 vf;
typedef __mmask16 vmask;

static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_set1(float a) { return _mm512_set1_ps(a); }
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm512_storeu_ps(p, v); }
/* VW reduced-precision weights widened to fp32 (exact): bfloat16 bit patterns, int8 */
static inline vf v_load_bf16(const uint16_t *p) {
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
static inline vf v_load_i8(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
static inline vf v_load_n(const float *p, int n) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
static inline void v_store_n(float *p, vf v, int n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
/* 1/x for finite x != 0: 14-bit estimate + one Newton step (relative error < 2^-26) */
static inline vf v_rcp(vf x) {
    vf r = _mm512_rcp14_ps(x);
    return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(1.0f)), r);
}
static inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf v_abs(vf a) { return _mm512_abs_ps(a); }
static inline vf v_copysign(vf mag, vf sgn) {
    const __m512 s = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(s, mag), _mm512_and_ps(s, sgn));
}
static inline vmask v_lt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
static inline vmask v_gt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
static inline vmask v_ge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
static inline vmask v_ne(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_NEQ_UQ); }
static inline vf v_select(vmask m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }
static inline int v_any(vmask m) { return m != 0; }
static inline vf v_round(vf a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf v_pow2(vf n) {
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_castsi512_ps(e);
}
static inline vf v_getmant(vf a, vf *e) {
    __m512i u = _mm512_castps_si512(a);
    *e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(u, 23), _mm512_set1_epi32(127)));
    u = _mm512_or_si512(_mm512_and_si512(u, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f800000));
    return _mm512_castsi512_ps(u);
}
static inline float v_hsum(vf a) { return _mm512_reduce_add_ps(a); }
static inline float v_hmax(vf a) { return _mm512_reduce_max_ps(a); }
#endif
