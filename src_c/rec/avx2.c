/* rec/avx2.c - the rec kernels for AVX2 + FMA, 8 lanes: rec/impl.h over simd/avx2.h.
 * Compiled with target flags here only (the build stays portable); reached only through the
 * dispatch table after CPUID/XGETBV said the CPU has the ISA (dispatch.c). */
#pragma GCC target("avx2,fma")
#include "../simd/avx2.h"
#include "../kernels.h"
#include "impl.h"
