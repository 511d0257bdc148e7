/* dispatch.c - which ISA's kernels run: CPUID + XGETBV decide what the CPU and the OS support;
 * the best is the default; frnn_isa_set (FASTRNN_ISA, via the Python layer) forces another.
 * A model binds the table current when it is created and keeps it (packing depends on it), so
 * switching later never affects a live model. Also the thread-count setting. */
#include <stdatomic.h>
#include <stddef.h>
#include "kernels.h"

#define X(name, ret, args) ret frnn_##name##_scalar args; ret frnn_##name##_avx2 args; \
                           ret frnn_##name##_avx512 args; ret frnn_##name##_avx512_vnni args;
#include "kernels.inc"
#undef X

const frnn_kernels frnn_kernels_scalar = {"scalar",
#define X(name, ret, args) frnn_##name##_scalar,
#include "kernels.inc"
#undef X
};
const frnn_kernels frnn_kernels_avx2 = {"avx2",
#define X(name, ret, args) frnn_##name##_avx2,
#include "kernels.inc"
#undef X
};
const frnn_kernels frnn_kernels_avx512 = {"avx512",
#define X(name, ret, args) frnn_##name##_avx512,
#include "kernels.inc"
#undef X
};

const frnn_kernels frnn_kernels_avx512_vnni = {"avx512_vnni",
#define X(name, ret, args) frnn_##name##_avx512_vnni,
#include "kernels.inc"
#undef X
};

static const char *const kernel_names[] = {
#define X(name, ret, args) #name,
#include "kernels.inc"
#undef X
};

int frnn_kernel_count(void) { return (int)(sizeof kernel_names / sizeof kernel_names[0]); }
const char *frnn_kernel_name(int i) {
    return i >= 0 && i < frnn_kernel_count() ? kernel_names[i] : NULL;
}

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return FRNN_ISA_SCALAR;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    if (!(fma && osxsave && avx)) return FRNN_ISA_SCALAR;
    unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) return FRNN_ISA_SCALAR;              /* OS saves XMM and YMM */
    if (__get_cpuid_max(0, NULL) < 7) return FRNN_ISA_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    if (!((b >> 5) & 1)) return FRNN_ISA_SCALAR;                   /* AVX2 */
    int f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1;
    if (f && dq && bw && vl && (xcr0 & 0xe6) == 0xe6)              /* + opmask, ZMM state */
        return (c >> 11) & 1 ? FRNN_ISA_AVX512_VNNI : FRNN_ISA_AVX512;   /* AVX512_VNNI */
    return FRNN_ISA_AVX2;
}
#else
static int detect(void) { return FRNN_ISA_SCALAR; }
#endif

static atomic_int best_isa = -1, cur_isa = -1, nthreads = 1;

int frnn_isa_best(void) {
    int b = atomic_load(&best_isa);
    if (b < 0) { b = detect(); atomic_store(&best_isa, b); }
    return b;
}
int frnn_isa_current(void) {
    int c = atomic_load(&cur_isa);
    return c < 0 ? frnn_isa_best() : c;
}
frnn_status frnn_isa_set(int isa) {
    if (isa < 0 || isa >= FRNN_ISA_COUNT || isa > frnn_isa_best()) return FRNN_EISA;
    atomic_store(&cur_isa, isa);
    return FRNN_OK;
}
const char *frnn_isa_name(int isa) {
    static const char *const names[] = {"scalar", "avx2", "avx512", "avx512_vnni"};
    return isa >= 0 && isa < FRNN_ISA_COUNT ? names[isa] : "?";
}
const frnn_kernels *frnn_kernels_for(int isa) {
    return isa == FRNN_ISA_AVX512_VNNI ? &frnn_kernels_avx512_vnni
         : isa == FRNN_ISA_AVX512 ? &frnn_kernels_avx512
         : isa == FRNN_ISA_AVX2 ? &frnn_kernels_avx2 : &frnn_kernels_scalar;
}
void frnn_set_num_threads(int n) { atomic_store(&nthreads, n < 1 ? 1 : n); }
int frnn_get_num_threads(void) { return atomic_load(&nthreads); }
