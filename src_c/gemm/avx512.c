/* gemm/avx512.c - the gemm kernels for AVX-512 F/DQ/BW/VL, 16 lanes: gemm/impl.h over simd/avx512.h.
 * Compiled with target flags here only (the build stays portable); reached only through the
 * dispatch table after CPUID/XGETBV said the CPU has the ISA (dispatch.c). */
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#include "../simd/avx512.h"
#include "../kernels.h"
#include "impl.h"
