/* limits.c - this machine's single-core limits, the floors of docs/performance.md:
 *   peak fp32 FMA throughput (AVX-512 and AVX2: 12-24 independent FMA chains, no memory), the
 *   int8 and bf16 dot products' (vpdpbusd, vdpbf16ps) where the CPU has them, and
 *   read bandwidth by working-set size (L1, L2, L3, memory): vector loads (the widest the CPU
 *   has) summed, best of 5.
 *
 *   gcc -O2 bench/limits.c -o /tmp/limits && /tmp/limits
 *
 * x86-64 with AVX2+FMA; the AVX-512 lines run only when the CPU has AVX-512F, the VNNI and BF16
 * ones only with AVX512-VNNI / AVX512-BF16. */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define FMA3(R, a, b, c) "vfmadd231ps %%" R #a ",%%" R #b ",%%" R #c "\n"

/* 24 independent FMA chains on zmm0..23 (zmm30/31 the constant operands) */
__attribute__((target("avx512f"))) static double peak512(long n) {
    double t = now();
    long i = n;
    __asm__ volatile(
        "vxorps %%zmm30,%%zmm30,%%zmm30\n vxorps %%zmm31,%%zmm31,%%zmm31\n"
        "1:\n" FMA3("zmm", 31, 30, 0) FMA3("zmm", 31, 30, 1) FMA3("zmm", 31, 30, 2)
        FMA3("zmm", 31, 30, 3) FMA3("zmm", 31, 30, 4) FMA3("zmm", 31, 30, 5) FMA3("zmm", 31, 30, 6)
        FMA3("zmm", 31, 30, 7) FMA3("zmm", 31, 30, 8) FMA3("zmm", 31, 30, 9) FMA3("zmm", 31, 30, 10)
        FMA3("zmm", 31, 30, 11) FMA3("zmm", 31, 30, 12) FMA3("zmm", 31, 30, 13)
        FMA3("zmm", 31, 30, 14) FMA3("zmm", 31, 30, 15) FMA3("zmm", 31, 30, 16)
        FMA3("zmm", 31, 30, 17) FMA3("zmm", 31, 30, 18) FMA3("zmm", 31, 30, 19)
        FMA3("zmm", 31, 30, 20) FMA3("zmm", 31, 30, 21) FMA3("zmm", 31, 30, 22)
        FMA3("zmm", 31, 30, 23) "dec %0\n jnz 1b\n"
        : "+r"(i)::"memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
          "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31");
    return n * 24.0 * 32 / (now() - t) / 1e9;
}

/* the same 24 chains of another accumulating instruction: vpdpbusd (VNNI: 64 u8 x s8 products
 * a zmm, the int8 kernels' dot product) or vdpbf16ps (AVX512-BF16: 32 bf16 products); ops = 2
 * per product */
#define OP3(OP, a) OP " %%zmm31,%%zmm30,%%zmm" #a "\n"
#define PEAK24(NAME, TARGET, OP, PRODUCTS)                                                         \
    __attribute__((target(TARGET))) static double NAME(long n) {                                  \
        double t = now();                                                                          \
        long i = n;                                                                                \
        __asm__ volatile(                                                                          \
            "vpxord %%zmm30,%%zmm30,%%zmm30\n vpxord %%zmm31,%%zmm31,%%zmm31\n"                   \
            "1:\n" OP3(OP, 0) OP3(OP, 1) OP3(OP, 2) OP3(OP, 3) OP3(OP, 4) OP3(OP, 5) OP3(OP, 6)      \
            OP3(OP, 7) OP3(OP, 8) OP3(OP, 9) OP3(OP, 10) OP3(OP, 11) OP3(OP, 12) OP3(OP, 13)        \
            OP3(OP, 14) OP3(OP, 15) OP3(OP, 16) OP3(OP, 17) OP3(OP, 18) OP3(OP, 19) OP3(OP, 20)     \
            OP3(OP, 21) OP3(OP, 22) OP3(OP, 23) "dec %0\n jnz 1b\n"                               \
            : "+r"(i)::"memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",  \
              "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",       \
              "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31");     \
        return n * 24.0 * 2 * (PRODUCTS) / (now() - t) / 1e9;                                      \
    }
PEAK24(peak_vnni, "avx512f,avx512vnni", "vpdpbusd", 64)
PEAK24(peak_bf16, "avx512f,avx512bf16", "vdpbf16ps", 32)

/* 12 independent FMA chains on ymm0..11 (ymm14/15 the constant operands) */
__attribute__((target("avx2,fma"))) static double peak256(long n) {
    double t = now();
    long i = n;
    __asm__ volatile(
        "vxorps %%ymm14,%%ymm14,%%ymm14\n vxorps %%ymm15,%%ymm15,%%ymm15\n"
        "1:\n" FMA3("ymm", 15, 14, 0) FMA3("ymm", 15, 14, 1) FMA3("ymm", 15, 14, 2)
        FMA3("ymm", 15, 14, 3) FMA3("ymm", 15, 14, 4) FMA3("ymm", 15, 14, 5) FMA3("ymm", 15, 14, 6)
        FMA3("ymm", 15, 14, 7) FMA3("ymm", 15, 14, 8) FMA3("ymm", 15, 14, 9) FMA3("ymm", 15, 14, 10)
        FMA3("ymm", 15, 14, 11) "dec %0\n jnz 1b\n"
        : "+r"(i)::"memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
          "xmm9", "xmm10", "xmm11", "xmm14", "xmm15");
    return n * 12.0 * 16 / (now() - t) / 1e9;
}

__attribute__((target("avx2"), noinline)) static float sum(const float *p, size_t n) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(p + i));
        b = _mm256_add_ps(b, _mm256_load_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(p + i + 24));
    }
    float o[8];
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    return o[0];
}
__attribute__((target("avx512f"), noinline)) static float sum512(const float *p, size_t n) {
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(p + i));
        b = _mm512_add_ps(b, _mm512_load_ps(p + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(p + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}
static float (*volatile sum_fn)(const float *, size_t) = sum;   /* never hoisted out of loops */

int main(void) {
    double p5 = 0, p2 = 0;
    for (int r = 0; r < 5; r++) {
        if (__builtin_cpu_supports("avx512f")) {
            double g = peak512(20000000);
            p5 = g > p5 ? g : p5;
        }
        double g = peak256(40000000);
        p2 = g > p2 ? g : p2;
    }
    if (p5) printf("peak fp32 FMA, AVX-512: %.0f GFLOP/s\n", p5);
    printf("peak fp32 FMA, AVX2:    %.0f GFLOP/s\n", p2);
    double pv = 0, pb = 0;
    for (int r = 0; r < 5; r++) {
        if (__builtin_cpu_supports("avx512vnni")) {
            double g = peak_vnni(20000000);
            pv = g > pv ? g : pv;
        }
        if (__builtin_cpu_supports("avx512bf16")) {
            double g = peak_bf16(20000000);
            pb = g > pb ? g : pb;
        }
    }
    if (pv) printf("peak int8 vpdpbusd (VNNI): %.0f GOP/s\n", pv);
    if (pb) printf("peak bf16 vdpbf16ps:       %.0f GFLOP/s\n", pb);
    if (__builtin_cpu_supports("avx512f")) sum_fn = sum512;
    const size_t kib[] = {16, 256, 512, 2048, 8192, 32768, 262144};
    for (int s = 0; s < 7; s++) {
        size_t bytes = kib[s] << 10, n = bytes / 4;
        float *p = aligned_alloc(64, bytes), x = 0;
        for (size_t i = 0; i < n; i++) p[i] = 1;
        int reps = (int)(2e9 / bytes) + 1;
        double best = 1e9;
        for (int k = 0; k < 5; k++) {
            double t = now();
            for (int r = 0; r < reps; r++) x += sum_fn(p, n);
            t = (now() - t) / reps;
            best = t < best ? t : best;
        }
        printf("read %7zu KiB: %6.1f GB/s%s\n", kib[s], bytes / best / 1e9, x < 0 ? "!" : "");
        free(p);
    }
    return 0;
}
