/* simd/avx512.h - 16-lane AVX-512 (F+DQ+BW+VL: Skylake-X, Ice Lake, Zen 4). See simd/scalar.h. */
#ifndef FRNN_SIMD_AVX512_H
#define FRNN_SIMD_AVX512_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#ifdef FRNN_VNNI   /* the same kernels, with AVX512-VNNI for the int8 (Q8) dot products */
#define ISA_SUFFIX(name) frnn_##name##_avx512_vnni
#else
#define ISA_SUFFIX(name) frnn_##name##_avx512
#endif
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

/* int8 with dynamic activations (Q8, simd/q8.h). With VNNI: a weight vector is 16 columns x 4 k
 * (64 bytes), the row's 4 u8 broadcast, vpdpbusd sums the 4 products u8 x s8 into each int32.
 * Without: 16 columns x 2 k (32 bytes) widened to int16, the row's 2 u16 broadcast, vpmaddwd
 * (products of at most 255 x 127, pairs of at most 64770: exact in its int32 lanes; vpmaddubsw's
 * int16 pair sums would saturate) and an add. */
#ifdef FRNN_VNNI
#define Q_KG 4
typedef __m512i vqw;
static inline vqw q_wload(const int8_t *w) { return _mm512_loadu_si512((const void *)w); }
static inline vqw q_xload(const uint8_t *x) { int32_t u; memcpy(&u, x, 4); return _mm512_set1_epi32(u); }
/* acc += x (u8) . w (s8). In asm: GCC 12 copied the accumulator of _mm512_dpbusd_epi32 into a
 * scratch register and back around every instruction (3 instructions for 1, and spills: the
 * LSTM 256 batch 64 step's tile loop had 137 moves for 24 vpdpbusd; the batch took 0.51x the
 * fp32 time with the intrinsic, 0.33x with this) */
static inline __m512i q_dot(__m512i acc, vqw w, vqw x) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
    return acc;
}
#else
#define Q_KG 2
typedef __m512i vqw;
static inline vqw q_wload(const int8_t *w) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)w));
}
static inline vqw q_xload(const uint8_t *x) { int32_t u; memcpy(&u, x, 4); return _mm512_set1_epi32(u); }
static inline __m512i q_dot(__m512i acc, vqw w, vqw x) {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(w, x));
}
#endif
typedef __m512i vq;
static inline vq q_add(vq a, vq b) { return _mm512_add_epi32(a, b); }
static inline vq q_zero(void) { return _mm512_setzero_si512(); }
/* acc - zp * csum[0..VW), as floats */
static inline vf q_fix(vq acc, int32_t zp, const int32_t *csum) {
    __m512i c = _mm512_mullo_epi32(_mm512_set1_epi32(zp), _mm512_loadu_si512((const void *)csum));
    return _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, c));
}
/* VW quantized activations (floats of integers in [0, 255]) to elements k.. of a row */
static inline void q_store(uint8_t *row, int64_t k, vf u) {
    __m512i i = _mm512_cvtps_epi32(u);
#if Q_KG == 4
    _mm_storeu_si128((__m128i *)(row + k), _mm512_cvtepi32_epi8(i));
#else
    _mm256_storeu_si256((__m256i *)(row + 2 * k), _mm512_cvtepi32_epi16(i));
#endif
}
static inline float v_hmax(vf a) { return _mm512_reduce_max_ps(a); }
#endif
