/* rec/avx512_vnni.c - the rec kernels for AVX-512 F/DQ/BW/VL + VNNI (Cascade Lake, Ice Lake,
 * Sapphire Rapids, Zen 4), 16 lanes: rec/impl.h over simd/avx512.h with FRNN_VNNI, which gives
 * the int8 dot products (simd/q8.h) vpdpbusd; every other kernel is avx512.c's code. Compiled
 * with target flags here only; reached only through the dispatch table after CPUID said the CPU
 * has AVX512-VNNI (dispatch.c). */
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,avx2,fma")
#define FRNN_VNNI 1
#include "../simd/avx512.h"
#include "../kernels.h"
#include "impl.h"
