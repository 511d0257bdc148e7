/* gemm/impl.h - packed SGEMM, C = A B^T + bias, written once against simd/<isa>.h.
 *
 *   A    IN  (M, K) row-major, row stride lda (unpacked: layer inputs are used in place)
 *   Bp   IN  B (N, K) packed once at load by pack_gemm (engine.c): panels of gemm_nr(K) output
 *            columns (2 or 4 vectors, see panel_nv), each K x nr floats, N zero-padded to a
 *            multiple of nr
 *   bias IN  padded to the panels (Npad floats) or NULL
 *   C    OUT (M, N) row stride ldc; only the N real columns are written
 *
 * Micro-tile G_MR rows x 2 vectors (or G_MR4 x 4) held in registers; each packed panel is read once
 * per tile of rows of A. At M = 1 (streaming) this is a GEMV that streams the weights once. The summation order is
 * fixed per K (see gemm_tile): results are deterministic and independent of M and threads.
 */
#ifndef FRNN_GEMM_IMPL_H
#define FRNN_GEMM_IMPL_H

/* Panels are panel_nv(K) vectors wide: 2, or 4 on ISAs with G_MR4 (AVX-512) when K >= G_WIDE_K.
 * Measured on AVX-512 (Skylake-SP, best of 40, bench/limits.c peak 146 GFLOP/s): the 6 x 4 tile
 * needs 6 broadcasts per 24 FMAs instead of 8 per 16: 6400x1024x256 103 -> 111 GFLOP/s,
 * 1600x2048x512 97 -> 108, 64x1024x256 113 -> 131; but at K = 128 its 32 KiB panel fills L1
 * (88 -> 70), so narrow panels stay below G_WIDE_K. The width is a function of K only, so the
 * packer (engine.c, via gemm_nr) and the kernel agree. */
#ifndef G_MR4
#define G_MR4 0
#endif
enum { G_WIDE_K = 256 };
static inline int panel_nv(int K) { return G_MR4 && K >= G_WIDE_K ? 4 : 2; }

int ISA_SUFFIX(vw)(void) { return VW; }
int ISA_SUFFIX(gemm_nr)(int K) { return panel_nv(K) * VW; }

/* FRNN_PF_K (kernels.h): rows of k ahead that the many-row tile asks into L1 (its panel, 32-64
 * KiB, does not stay in L1 between tiles). Measured on AVX-512 (Skylake-SP; the builds without
 * and with it alternated call by call in one process, 30 pairs, medians): 6400x1024x256
 * 80 -> 88 GFLOP/s, 1600x2048x512 84 -> 96, 1600x2048x128 (2-vector panels) 52 -> 60; 4, 8, 16
 * and 32 rows ahead within noise of each other. Not in the few-row (streaming) path,
 * where 16 ahead made the LSTM 64 step slower (2.7 -> 3.0 us): there the weights come from L2 at
 * one row per few cycles and the hardware prefetcher keeps up. A prefetch never faults, so the
 * last rows ask for lines past the panel harmlessly. rec/impl.h's many-row GEMV does the same. */

/* mr rows x NV vectors. Summation order as in rec/impl.h (rec_gemv): K in GB = 4 contiguous
 * blocks, each summed in k order, block sums added left to right to zero, then the bias: the
 * same for every mr, so a row's result never depends on M or on its position (batch-invariant).
 * Small mr (streaming) runs the blocks in lockstep as separate FMA chains; large mr one block at
 * a time. */
enum { GB = 4 };
static inline __attribute__((always_inline)) void
gemm_tile(const int NV, const int mr, int K, const float *A, int64_t lda, const float *Bp,
          const float *bias, float *C, int64_t ldc, int ncols) {
    const int NR = NV * VW, PAR = NV * mr * GB <= 24;
    vf a[G_MR][4];
    const float *ar[G_MR];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        ar[r] = A + r * lda;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[r][v] = v_zero();
    }
    int kb[GB + 1];
#pragma GCC unroll 5
    for (int s = 0; s <= GB; s++) kb[s] = (int)((int64_t)s * K / GB);
    if (PAR) {
        vf p[GB][G_MR][4];
#pragma GCC unroll 4
        for (int s = 0; s < GB; s++)
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) p[s][r][v] = v_zero();
        /* every block has len or len + 1 rows of k: len in lockstep (one pointer per block and
         * row, no index arithmetic or branch in the loop), then the blocks' last rows */
        const int len = K / GB;
        const float *wp[GB], *xp[GB][G_MR];
#pragma GCC unroll 4
        for (int s = 0; s < GB; s++) {
            wp[s] = Bp + (int64_t)kb[s] * NR;
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) xp[s][r] = ar[r] + kb[s];
        }
#define FRNN_GEMM_ROW(s)                                                                          \
    do {                                                                                          \
        vf w[4];                                                                                  \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) w[v] = v_load(wp[s] + v * VW);     \
        wp[s] += NR;                                                                              \
        _Pragma("GCC unroll 8") for (int r = 0; r < mr; r++) {                                   \
            vf x = v_set1(*xp[s][r]++);                                                           \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) p[s][r][v] = v_fma(w[v], x, p[s][r][v]); \
        }                                                                                         \
    } while (0)
        for (int i = 0; i < len; i++) {
#pragma GCC unroll 4
            for (int s = 0; s < GB; s++) FRNN_GEMM_ROW(s);
        }
#pragma GCC unroll 4
        for (int s = 0; s < GB; s++)
            if (kb[s] + len < kb[s + 1]) FRNN_GEMM_ROW(s);
#undef FRNN_GEMM_ROW
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
            for (int s = 0; s < GB; s++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) a[r][v] = v_add(a[r][v], p[s][r][v]);
    } else {
        for (int s = 0; s < GB; s++) {
            vf q[G_MR][4];
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) q[r][v] = v_zero();
            const float *w = Bp + (int64_t)kb[s] * NR;
            for (int k = kb[s]; k < kb[s + 1]; k++, w += NR) {
                vf wv[4];
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) wv[v] = v_load(w + v * VW);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) __builtin_prefetch(w + FRNN_PF_K * NR + v * VW);
#pragma GCC unroll 8
                for (int r = 0; r < mr; r++) {
                    vf x = v_set1(ar[r][k]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) q[r][v] = v_fma(wv[v], x, q[r][v]);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) a[r][v] = v_add(a[r][v], q[r][v]);
        }
    }
    if (bias) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            vf b = v_load(bias + v * VW);
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) a[r][v] = v_add(a[r][v], b);
        }
    }
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            const int n = ncols - v * VW;
            if (n >= VW) v_store(c + v * VW, a[r][v]);
            else if (n > 0) v_store_n(c + v * VW, a[r][v], n);
        }
    }
}

/* Loop order: blocks of MC rows of A (sized to stay in L2, ~256 KiB) outside, the packed panels
 * inside, so A is read from memory once and each panel once per block (rather than all of A
 * once per panel). Tiles of MR rows, then the last rows with a constant row count each. Results
 * do not depend on the blocking (gemm_tile is batch-invariant). */
static inline __attribute__((always_inline)) void
gemm_panels(const int NV, const int MR, int M, int N, int K, const float *A, int64_t lda,
            const float *Bp, const float *bias, float *C, int64_t ldc) {
    const int NR = NV * VW;
    int MC = (int)((256 * 1024) / ((int64_t)(K > 0 ? K : 1) * 4)) / MR * MR;
    if (MC < MR) MC = MR;
    for (int m0 = 0; m0 < M; m0 += MC) {
        const int mend = M - m0 < MC ? M : m0 + MC;
        for (int n0 = 0; n0 < N; n0 += NR) {
            const float *panel = Bp + (int64_t)n0 * K;
            const float *bp = bias ? bias + n0 : NULL;
            int nc = N - n0;
            int m = m0;
            for (; m + MR <= mend; m += MR)
                gemm_tile(NV, MR, K, A + m * lda, lda, panel, bp, C + m * ldc + n0, ldc, nc);
            switch (mend - m) {
#define FRNN_TAIL(R) case R: gemm_tile(NV, R, K, A + m * lda, lda, panel, bp, C + m * ldc + n0, ldc, nc); break;
            FRNN_TAIL(1) FRNN_TAIL(2) FRNN_TAIL(3)
#if G_MR > 4
            FRNN_TAIL(4) FRNN_TAIL(5)
#endif
#if G_MR > 6
            FRNN_TAIL(6) FRNN_TAIL(7)
#endif
#undef FRNN_TAIL
            default: break;
            }
        }
    }
}

void ISA_SUFFIX(gemm)(int M, int N, int K, const float *A, int64_t lda, const float *Bp,
                      const float *bias, float *C, int64_t ldc) {
#if G_MR4
    if (panel_nv(K) == 4) {
        gemm_panels(4, G_MR4, M, N, K, A, lda, Bp, bias, C, ldc);
        return;
    }
#endif
    gemm_panels(2, G_MR, M, N, K, A, lda, Bp, bias, C, ldc);
}
#endif
