/* simd/avx2.h - 8-lane AVX2 + FMA vectors (Haswell+, Zen). See simd/scalar.h for the contract. */
#ifndef FRNN_SIMD_AVX2_H
#define FRNN_SIMD_AVX2_H
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define ISA_SUFFIX(name) frnn_##name##_avx2
#define VW 8
#define V_RB 3
/* rows of the epilogue's activations in lockstep (act/vec.h): 1 here, as 3 rows' chains spill
 * the 16 registers (kernel alone, old/new time, GRU 256 batch 64: 3 rows 1.15-1.17, 1 row
 * 0.99-1.03; LSTM 32 batch 128: 3 rows 0.83, 1 row 0.87) */
#define V_ACT_N 1
#define G_MR 6

typedef __m256 vf;
typedef __m256 vmask;

static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_set1(float a) { return _mm256_set1_ps(a); }
static inline vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf v) { _mm256_storeu_ps(p, v); }
/* VW reduced-precision weights widened to fp32 (exact): bfloat16 bit patterns, int8 */
static inline vf v_load_bf16(const uint16_t *p) {
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
static inline vf v_load_i8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
static inline __m256i v_tailmask_(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline vf v_load_n(const float *p, int n) { return _mm256_maskload_ps(p, v_tailmask_(n)); }
static inline void v_store_n(float *p, vf v, int n) { _mm256_maskstore_ps(p, v_tailmask_(n), v); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
/* 1/x for finite x != 0: 12-bit estimate + two Newton steps (relative error < 2^-23) */
static inline vf v_rcp(vf x) {
    vf r = _mm256_rcp_ps(x), one = _mm256_set1_ps(1.0f);
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(x, r, one), r);
    return _mm256_fmadd_ps(r, _mm256_fnmadd_ps(x, r, one), r);
}
static inline vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf v_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf v_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
static inline vf v_copysign(vf mag, vf sgn) {
    __m256 s = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sgn));
}
static inline vmask v_lt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
static inline vmask v_gt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
static inline vmask v_ge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
static inline vmask v_ne(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_NEQ_UQ); }
static inline vf v_select(vmask m, vf t, vf f) { return _mm256_blendv_ps(f, t, m); }
static inline int v_any(vmask m) { return _mm256_movemask_ps(m) != 0; }
static inline vf v_round(vf a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf v_pow2(vf n) {
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_castsi256_ps(e);
}
static inline vf v_getmant(vf a, vf *e) {
    __m256i u = _mm256_castps_si256(a);
    *e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(u, 23), _mm256_set1_epi32(127)));
    u = _mm256_or_si256(_mm256_and_si256(u, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000));
    return _mm256_castsi256_ps(u);
}
static inline float v_hsum(vf a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
/* int8 with dynamic activations (Q8, simd/q8.h): a weight vector is 8 columns x 2 k (16 bytes)
 * widened to int16, the row's 2 u16 broadcast, vpmaddwd (products of at most 255 x 127, pairs
 * of at most 64770: exact in its int32 lanes; vpmaddubsw's int16 pair sums would saturate) */
#define Q_KG 2
typedef __m256i vqw;
typedef __m256i vq;
static inline vqw q_wload(const int8_t *w) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w)); }
static inline vqw q_xload(const uint8_t *x) { int32_t u; memcpy(&u, x, 4); return _mm256_set1_epi32(u); }
static inline vq q_dot(vq acc, vqw w, vqw x) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)); }
static inline vq q_add(vq a, vq b) { return _mm256_add_epi32(a, b); }
static inline vq q_zero(void) { return _mm256_setzero_si256(); }
static inline vf q_fix(vq acc, int32_t zp, const int32_t *csum) {
    __m256i c = _mm256_mullo_epi32(_mm256_set1_epi32(zp), _mm256_loadu_si256((const __m256i *)csum));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, c));
}
static inline void q_store(uint8_t *row, int64_t k, vf u) {
    __m256i i = _mm256_cvtps_epi32(u);
    __m128i p = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storeu_si128((__m128i *)(row + 2 * k), p);
}
static inline float v_hmax(vf a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif
