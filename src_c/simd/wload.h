/* simd/wload.h - a vector of packed weights of any precision (kernels.h, frnn_wmat), widened to
 * fp32, over simd/<isa>.h. WT is a compile-time constant wherever this is inlined (the kernels
 * are instantiated per precision), so the fp32 path is exactly v_load. p is a byte address. */
#ifndef FRNN_SIMD_WLOAD_H
#define FRNN_SIMD_WLOAD_H
static inline __attribute__((always_inline)) vf w_load(const int WT, const char *p) {
    if (WT == FRNN_W_BF16) return v_load_bf16((const uint16_t *)p);
    if (WT == FRNN_W_I8) return v_load_i8((const int8_t *)p);
    return v_load((const float *)p);        /* FRNN_W_F32, FRNN_W_I8W */
}

/* v itself, as an opaque value: the compiler cannot fuse the multiply that made it into a
 * following add (GNU C contracts a * b + c into an FMA where it sees both), so every path that
 * scales an int8 sum rounds the product the same way (kernels.h, batch invariance). "v": any
 * SSE / AVX / AVX-512 register, so one definition serves every ISA's vf (and the scalar float). */
static inline __attribute__((always_inline)) vf v_opaque(vf v) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+v"(v));
#else
    __asm__("" : "+g"(v));
#endif
    return v;
}

/* n elements (a multiple of VW) of bf16 or int8 weights at src -> fp32 at dst (exact) */
static inline void w_widen(float *dst, const char *src, int64_t n, int wt) {
    if (wt == FRNN_W_BF16)
        for (int64_t e = 0; e < n; e += VW) v_store(dst + e, w_load(FRNN_W_BF16, src + e * 2));
    else
        for (int64_t e = 0; e < n; e += VW) v_store(dst + e, w_load(FRNN_W_I8, src + e));
}
#endif
