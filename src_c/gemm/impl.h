/* gemm/impl.h - packed SGEMM, C = A B^T + bias, written once against simd/<isa>.h.
 *
 *   A    IN  (M, K) row-major, row stride lda (unpacked: layer inputs are used in place)
 *   Bp   IN  B (N, K) packed once at load by frnn_pack_gemm (engine.c): panels of G_NR = 2*VW
 *            output columns, each K x G_NR floats, N zero-padded to a multiple of G_NR
 *   bias IN  padded to the panels (Npad floats) or NULL
 *   C    OUT (M, N) row stride ldc; only the N real columns are written
 *
 * Micro-tile G_MR rows x 2 vectors held in registers; each packed panel is read once per G_MR rows
 * of A. At M = 1 (streaming) this is a GEMV that streams the weights once. The summation order is
 * fixed per K (see gemm_tile): results are deterministic and independent of M and threads.
 */
#ifndef FRNN_GEMM_IMPL_H
#define FRNN_GEMM_IMPL_H

#define G_NR (2 * VW)

int ISA_SUFFIX(vw)(void) { return VW; }

/* mr rows x 2 vectors. Summation order as in rec/impl.h (rec_gemv): K in GB = 4 contiguous
 * blocks, each summed in k order, block sums added left to right to
 * zero, then the bias: the same for
 * every mr, so a row's result never depends on M or on its position (batch-invariant). Small mr
 * (streaming) runs the blocks in lockstep as separate FMA chains; large mr one block at a time. */
enum { GB = 4 };
static inline __attribute__((always_inline)) void
gemm_tile(const int mr, int K, const float *A, int64_t lda, const float *Bp, const float *bias,
          float *C, int64_t ldc, int ncols) {
    const int PAR = 2 * mr * GB <= 24;
    vf a0[G_MR], a1[G_MR];
    const float *ar[G_MR];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) { ar[r] = A + r * lda; a0[r] = v_zero(); a1[r] = v_zero(); }
    int kb[GB + 1];
#pragma GCC unroll 5
    for (int s = 0; s <= GB; s++) kb[s] = (int)((int64_t)s * K / GB);
    if (PAR) {
        vf p0[GB][G_MR], p1[GB][G_MR];
#pragma GCC unroll 4
        for (int s = 0; s < GB; s++)
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) { p0[s][r] = v_zero(); p1[s][r] = v_zero(); }
        const int len = K / GB;
        for (int i = 0; i <= len; i++) {
#pragma GCC unroll 4
            for (int s = 0; s < GB; s++) {
                const int k = kb[s] + i;
                if (i == len && k >= kb[s + 1]) continue;
                vf w0 = v_load(Bp + (int64_t)k * G_NR), w1 = v_load(Bp + (int64_t)k * G_NR + VW);
#pragma GCC unroll 8
                for (int r = 0; r < mr; r++) {
                    vf x = v_set1(ar[r][k]);
                    p0[s][r] = v_fma(w0, x, p0[s][r]);
                    p1[s][r] = v_fma(w1, x, p1[s][r]);
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
#pragma GCC unroll 4
            for (int s = 0; s < GB; s++) { a0[r] = v_add(a0[r], p0[s][r]); a1[r] = v_add(a1[r], p1[s][r]); }
        }
    } else {
        for (int s = 0; s < GB; s++) {
            vf q0[G_MR], q1[G_MR];
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) { q0[r] = v_zero(); q1[r] = v_zero(); }
            const float *w = Bp + (int64_t)kb[s] * G_NR;
            for (int k = kb[s]; k < kb[s + 1]; k++, w += G_NR) {
                vf w0 = v_load(w), w1 = v_load(w + VW);
#pragma GCC unroll 8
                for (int r = 0; r < mr; r++) {
                    vf x = v_set1(ar[r][k]);
                    q0[r] = v_fma(w0, x, q0[r]);
                    q1[r] = v_fma(w1, x, q1[r]);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) {
                a0[r] = v_add(a0[r], q0[r]);
                a1[r] = v_add(a1[r], q1[r]);
            }
        }
    }
    if (bias) {
        vf b0 = v_load(bias), b1 = v_load(bias + VW);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) { a0[r] = v_add(a0[r], b0); a1[r] = v_add(a1[r], b1); }
    }
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        if (ncols >= G_NR) {
            v_store(c, a0[r]);
            v_store(c + VW, a1[r]);
        } else if (ncols > VW) {
            v_store(c, a0[r]);
            v_store_n(c + VW, a1[r], ncols - VW);
        } else {
            v_store_n(c, a0[r], ncols);
        }
    }
}

/* Loop order: blocks of MC rows of A (sized to stay in L2, ~256 KiB) outside, the packed panels
 * inside, so A is read from memory once and each panel once per block (rather than all of A
 * once per panel). Results do not depend on the blocking (gemm_tile is batch-invariant). */
void ISA_SUFFIX(gemm)(int M, int N, int K, const float *A, int64_t lda, const float *Bp,
                      const float *bias, float *C, int64_t ldc) {
    int MC = (int)((256 * 1024) / ((int64_t)(K > 0 ? K : 1) * 4)) / G_MR * G_MR;
    if (MC < G_MR) MC = G_MR;
    for (int m0 = 0; m0 < M; m0 += MC) {
        const int mend = M - m0 < MC ? M : m0 + MC;
        for (int n0 = 0; n0 < N; n0 += G_NR) {
            const float *panel = Bp + (int64_t)n0 * K;
            const float *bp = bias ? bias + n0 : NULL;
            int nc = N - n0;
            int m = m0;
            for (; m + G_MR <= mend; m += G_MR)
                gemm_tile(G_MR, K, A + m * lda, lda, panel, bp, C + m * ldc + n0, ldc, nc);
            switch (mend - m) {   /* the last rows, with a constant row count each */
#define FRNN_TAIL(R) case R: gemm_tile(R, K, A + m * lda, lda, panel, bp, C + m * ldc + n0, ldc, nc); break;
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
#endif
