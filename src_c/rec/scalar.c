/* rec/scalar.c - the rec kernels for portable C, the fallback (baseline x86-64 or any CPU): rec/impl.h over simd/scalar.h.
 * Compiled with target flags here only (the build stays portable); reached only through the
 * dispatch table after CPUID/XGETBV said the CPU has the ISA (dispatch.c). */

#include "../simd/scalar.h"
#include "../kernels.h"
#include "impl.h"
