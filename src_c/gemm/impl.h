/* gemm/impl.h - packed SGEMM, C = A B^T + bias, written once against simd/<isa>.h.
 *
 *   A    IN  (M, K) row-major, row stride lda (unpacked: layer inputs are used in place); in
 *            gemm_groups, groups of grp rows gld floats apart (gemm_impl)
 *   Bp   IN  B (N, K) packed once at load by pack_gemm (engine.c): panels of output columns,
 *            each K x nr elements, nr = gemm_nr(columns left) (2 or 4 vectors, see panel_nv); the
 *            panel at column n0 starts at element n0 * K; the last one is zero-padded. Elements
 *            fp32, bf16 or int8 (frnn_wmat, kernels.h: every function below is instantiated per
 *            precision WT); int8 sums are multiplied by the column's scale before the bias
 *   bias IN  padded to the panels (Npad floats) or NULL
 *   C    OUT (M, N) row stride ldc; only the N real columns are written
 *
 * Micro-tile G_MR rows x 2 vectors (or G_MR4 x 4) held in registers. At M = 1 (streaming) this
 * is a GEMV that streams the weights once. The summation order is fixed per K (see gemm_tile):
 * results are deterministic and independent of M, of the blocking and of threads.
 */
#ifndef FRNN_GEMM_IMPL_H
#define FRNN_GEMM_IMPL_H
#include <limits.h>
#include <stdlib.h>
#include "../simd/wload.h"
#include "../simd/q8.h"

/* Panels are 4 vectors wide on ISAs with G_MR4 (AVX-512), else 2; a last panel of at most 2
 * vectors' columns is 2 wide (a Dense head with 1 output computes 32 lanes, not 64). The width
 * depends only on the columns left, so the packer (engine.c, via gemm_nr) and the kernel agree,
 * also for a thread's range of panels (ranges start at multiples of the full width).
 * Measured on AVX-512 (Skylake-SP, best of 40, bench/limits.c peak 146 GFLOP/s): the 6 x 4 tile
 * needs 6 broadcasts per 24 FMAs instead of 8 per 16: 6400x1024x256 103 -> 111 GFLOP/s,
 * 1600x2048x512 97 -> 108, 64x1024x256 113 -> 131. Below K = 256, 4-vector panels (32 KiB at
 * K = 128) used to fill L1 and lose (88 -> 70 at K = 128); with the blocks of K (gemm_panels)
 * they win at every K (alternated builds, medians of 20 pairs, time 4 wide / 2 wide):
 * 1600x2048x128 0.88, 6400x1024x64 0.78, 6400x512x32 0.76, 6400x128x16 0.79, and a stream
 * step of LSTM 64 0.90. */
#ifndef G_MR4
#define G_MR4 0
#endif
static inline int panel_nv(int ncols) { return G_MR4 && ncols > 2 * VW ? 4 : 2; }

int ISA_SUFFIX(vw)(void) { return VW; }
int ISA_SUFFIX(gemm_nr)(int ncols) { return panel_nv(ncols) * VW; }
int ISA_SUFFIX(q8_kg)(void) { return Q_KG; }

/* FRNN_PF_K (kernels.h): rows of k ahead that the many-row tiles ask into L1 (the first tile
 * of a block of rows reads the panel's block of K from L2). Measured before the blocks of K, on
 * AVX-512 (Skylake-SP; the builds without and with it alternated call by call in one process,
 * 30 pairs, medians): 6400x1024x256 80 -> 88 GFLOP/s, 1600x2048x512 84 -> 96, 1600x2048x128
 * (2-vector panels) 52 -> 60; 4, 8, 16 and 32 rows ahead within noise of each other. Not in the
 * few-row (streaming) path, where 16 ahead made the LSTM 64 step slower (2.7 -> 3.0 us): there
 * the weights come from L2 at one row per few cycles and the hardware prefetcher keeps up. A
 * prefetch never faults, so the last rows ask for lines past the panel harmlessly.
 * rec/impl.h's many-row GEMV does the same. */

/* q = the sum over k in [k0, k1) of B's panel row k times A[r][k], from zero in k order */
static inline __attribute__((always_inline)) void
gemm_ksum(const int WT, const int NV, const int mr, int k0, int k1, const float *const *ar,
          const char *Bp, vf q[G_MR][4]) {
    const int NR = NV * VW, ES = W_SIZE(WT);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) q[r][v] = v_zero();
    const char *w = Bp + (int64_t)k0 * NR * ES;
    for (int k = k0; k < k1; k++, w += NR * ES) {
        vf wv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) wv[v] = w_load(WT, w + v * VW * ES);
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) __builtin_prefetch(w + (FRNN_PF_K * NR + v * VW) * ES);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            vf x = v_set1(ar[r][k]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) q[r][v] = v_fma(wv[v], x, q[r][v]);
        }
    }
}

/* mr rows x NV vectors. Summation order as in rec/impl.h (rec_gemv): K in GB = 4 contiguous
 * blocks, each summed in k order, block sums added left to right to zero, then the bias: the
 * same for every mr, so a row's result never depends on M or on its position (batch-invariant).
 * Small mr (streaming) runs the blocks in lockstep as separate FMA chains; large mr one block at
 * a time. */
enum { GB = 4, G_KB_ROWS = 48, G_MC_MAX = 512 };   /* G_MC_MAX: 4 KiB of row pointers on the stack */
static inline __attribute__((always_inline)) void
gemm_tile(const int WT, const int NV, const int mr, int K, const float *const *ar, const char *Bp,
          const float *scale, const float *bias, float *C, int64_t ldc, int ncols) {
    const int NR = NV * VW, PAR = NV * mr * GB <= 24, ES = W_SIZE(WT);
    vf a[G_MR][4];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) a[r][v] = v_zero();
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
        const char *wp[GB];
        const float *xp[GB][G_MR];
#pragma GCC unroll 4
        for (int s = 0; s < GB; s++) {
            wp[s] = Bp + (int64_t)kb[s] * NR * ES;
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) xp[s][r] = ar[r] + kb[s];
        }
#define FRNN_GEMM_ROW(s)                                                                          \
    do {                                                                                          \
        vf w[4];                                                                                  \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) w[v] = w_load(WT, wp[s] + v * VW * ES); \
        wp[s] += NR * ES;                                                                         \
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
            gemm_ksum(WT, NV, mr, kb[s], kb[s + 1], ar, Bp, q);
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) a[r][v] = v_add(a[r][v], q[r][v]);
        }
    }
    if (scale) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            vf sc = v_load(scale + v * VW);
#pragma GCC unroll 8
            for (int r = 0; r < mr; r++) a[r][v] = v_opaque(v_mul(a[r][v], sc));   /* never fused */
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

/* One block s of K (rows kb[s]..kb[s+1]) of an mr x NV tile, summed from zero in k order, then
 * added to the partial sum of the blocks before it, which the tile left in P (s = 0: zero);
 * blocks before the last store the sum back to P, the last adds the bias and writes C: gemm_tile's order exactly, so the same bits. The many-row path
 * runs every tile of a block of rows over one block of K before the next, so that the panel's
 * block (K/4 x NR floats, 16 KiB at K = 256) stays in L1 across the tiles instead of coming from
 * L2 for every tile. */
static inline __attribute__((always_inline)) void
gemm_kblock(const int WT, const int NV, const int mr, int K, int s, const float *const *ar, const char *Bp,
            const float *scale, const float *bias, float *P, float *C, int64_t ldc, int ncols) {
    const int NR = NV * VW;
    vf q[G_MR][4];
    gemm_ksum(WT, NV, mr, (int)((int64_t)s * K / GB), (int)((int64_t)(s + 1) * K / GB), ar, Bp, q);
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc, *p = P + r * NR;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            vf a = v_add(s > 0 ? v_load(p + v * VW) : v_zero(), q[r][v]);
            if (s < GB - 1) { v_store(p + v * VW, a); continue; }
            if (scale) a = v_opaque(v_mul(a, v_load(scale + v * VW)));
            if (bias) a = v_add(a, v_load(bias + v * VW));
            const int n = ncols - v * VW;
            if (n >= VW) v_store(c + v * VW, a);
            else if (n > 0) v_store_n(c + v * VW, a, n);
        }
    }
}

/* One tile: block s of K (gemm_kblock), or all of K when s < 0 (gemm_tile) */
static inline __attribute__((always_inline)) void
gemm_one(const int WT, const int NV, const int mr, int K, int s, const float *const *ar, const char *Bp,
         const float *scale, const float *bias, float *P, float *C, int64_t ldc, int ncols) {
    if (s < 0) gemm_tile(WT, NV, mr, K, ar, Bp, scale, bias, C, ldc, ncols);
    else gemm_kblock(WT, NV, mr, K, s, ar, Bp, scale, bias, P, C, ldc, ncols);
}

/* rows [m0, m1) of one panel: tiles of MR rows, then the last rows with a constant row count.
 * ar: the rows of A from m0 on; P: the partial sums of row m0's tile on (stride NR) */
static inline __attribute__((always_inline)) void
gemm_rows(const int WT, const int NV, const int MR, int m0, int m1, int K, int s, const float *const *ar,
          const char *panel, const float *scale, const float *bias, float *P, float *C, int64_t ldc,
          int ncols) {
    const int NR = NV * VW;
    int m = m0;
    for (; m + MR <= m1; m += MR)
        gemm_one(WT, NV, MR, K, s, ar + (m - m0), panel, scale, bias, P + (m - m0) * NR, C + m * ldc, ldc, ncols);
    switch (m1 - m) {
#define FRNN_TAIL(R) \
    case R: gemm_one(WT, NV, R, K, s, ar + (m - m0), panel, scale, bias, P + (m - m0) * NR, C + m * ldc, ldc, \
                     ncols); break;
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

/* Loop order: blocks of MC rows of A (sized to stay in L2, ~256 KiB) outside, the packed panels
 * inside, so A is read from memory once and each panel once per block (rather than all of A
 * once per panel). With at least 2 tiles of rows, blocks of G_KB_ROWS rows then the 4 blocks of
 * K (gemm_kblock: the panel's block stays in L1 across the tiles, the partial sums in a 12 KiB
 * scratch P); with fewer (streams), every tile runs all of K at once (gemm_tile). Results do not
 * depend on the blocking (both sum in one order, batch-invariant).
 * Measured on AVX-512 (Skylake-SP; the builds without and with the blocks of K alternated call
 * by call in one process, medians of 20 pairs): 6400x1024x256 0.84x the time, 1600x2048x512
 * 0.93x, 1600x2048x128 0.88x (all panels as before). Whole workloads: LSTM 256 batch 64
 * T = 100 0.92x, 2-layer bi-LSTM batch 32 0.95x. */
static inline __attribute__((always_inline)) void
gemm_panel(const int WT, const int NV, const int MR, int m0, int m1, int K, const float *const *ar,
           const char *panel, const float *scale, const float *bias, float *P, float *C, int64_t ldc,
           int ncols) {
    if (m1 - m0 < 2 * MR) {
        gemm_rows(WT, NV, MR, m0, m1, K, -1, ar, panel, scale, bias, P, C, ldc, ncols);
        return;
    }
    const int KR = G_KB_ROWS / MR * MR;
    for (int r0 = m0; r0 < m1; r0 += KR) {
        const int r1 = m1 - r0 < KR ? m1 : r0 + KR;
        for (int s = 0; s < GB; s++)
            gemm_rows(WT, NV, MR, r0, r1, K, s, ar + (r0 - m0), panel, scale, bias, P, C, ldc, ncols);
    }
}

/* Row m of A is at A + (m / grp) * gld + (m % grp) * lda: groups of grp rows gld floats apart
 * (a chunk of steps of every batch row of a sequence, engine.c); grp >= M: plain rows. The row
 * pointers of a block of rows are computed once, and every tile reads its rows through them. */
static inline __attribute__((always_inline)) void
row_ptrs(const float **ar, int m0, int m1, const float *A, int64_t lda, int grp, int64_t gld) {
    for (int m = m0, g = m0 ? m0 / grp : 0, i = m0 ? m0 % grp : 0; m < m1; m++) {
        ar[m - m0] = A + g * gld + i * lda;
        if (++i == grp) { i = 0; g++; }
    }
}

/* Fewer rows than this never run the blocks of K (gemm_panel): stream steps, small pools */
enum { G_FEW = 2 * (G_MR4 ? G_MR4 : G_MR) };

/* A stream step's GEMM (M < G_FEW): every tile shape is its own small function. Inlined into
 * gemm_impl's many paths (or into one function for all the few-row shapes), GCC kept the 1-row
 * tile's loop counter and block pointers on the stack, updated in memory every row of k: a
 * 1 x 256 x 64 GEMV (a stream step's input projection) took 1.18x the time. */
#define FRNN_TILE_FN1(WT, NV, MR)                                                                  \
    static __attribute__((noinline)) void gemm_tile_##WT##_##NV##_##MR(                                \
        int K, const float *const *ar, const char *Bp, const float *scale, const float *bias, float *C, \
        int64_t ldc, int ncols) {                                                                       \
        gemm_tile(WT, NV, MR, K, ar, Bp, scale, bias, C, ldc, ncols);                                   \
    }
#define FRNN_TILE_FN(NV, MR) FRNN_TILE_FN1(0, NV, MR)
/* every (vectors, rows) tile shape of this ISA */
#if G_MR > 6
#define FRNN_FEW_2(X) X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) X(2, 6) X(2, 7) X(2, 8)
#elif G_MR > 4
#define FRNN_FEW_2(X) X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) X(2, 6)
#else
#define FRNN_FEW_2(X) X(2, 1) X(2, 2) X(2, 3) X(2, 4)
#endif
#if G_MR4
#define FRNN_FEW_SHAPES(X) FRNN_FEW_2(X) X(4, 1) X(4, 2) X(4, 3) X(4, 4) X(4, 5) X(4, 6)
#define FRNN_ROW1_SHAPES(X, WT) X(WT, 2, 1) X(WT, 4, 1)
#else
#define FRNN_FEW_SHAPES(X) FRNN_FEW_2(X)
#define FRNN_ROW1_SHAPES(X, WT) X(WT, 2, 1)
#endif
_Static_assert(G_MR <= 8 && (!G_MR4 || G_MR4 == 6), "FRNN_FEW_SHAPES must list every tile shape");
FRNN_FEW_SHAPES(FRNN_TILE_FN)
/* one row over bf16 / int8 panels, widened in registers (a stream step); more rows widen the
 * panel once first and take the fp32 tiles (gemm_panels) */
FRNN_ROW1_SHAPES(FRNN_TILE_FN1, 1) FRNN_ROW1_SHAPES(FRNN_TILE_FN1, 2)
#undef FRNN_TILE_FN
#undef FRNN_TILE_FN1

/* rows [m, m + mr) (mr <= the panel's MR) against one panel of nv vectors with elements of
 * precision wt: FRNN_W_F32 for any mr, bf16 / int8 for mr = 1 */
static void gemm_few_tile(int wt, int nv, int mr, int K, const float *const *ar, const char *panel,
                          const float *scale, const float *bias, float *C, int64_t ldc, int ncols) {
    switch (wt * 256 + nv * 16 + mr) {
#define FRNN_TILE_CASE1(WT, NV, MR) \
    case WT * 256 + NV * 16 + MR: gemm_tile_##WT##_##NV##_##MR(K, ar, panel, scale, bias, C, ldc, ncols); return;
#define FRNN_TILE_CASE(NV, MR) FRNN_TILE_CASE1(0, NV, MR)
        FRNN_FEW_SHAPES(FRNN_TILE_CASE)
        FRNN_ROW1_SHAPES(FRNN_TILE_CASE1, 1) FRNN_ROW1_SHAPES(FRNN_TILE_CASE1, 2)
#undef FRNN_TILE_CASE
#undef FRNN_TILE_CASE1
    default: return;   /* unreachable: the list has every shape (the _Static_assert above) */
    }
}
/* ---- int8 with dynamic activations (FRNN_W_Q8, simd/q8.h) ---------------------------------------
 * Panels of the same widths as above; the panel at column n0 starts at byte n0 * KP (KP: K rounded
 * up to Q_KG) and holds, group of Q_KG k after group, its nr columns' Q_KG weights each. The rows
 * of A are quantized a block at a time (gemm_q8); a tile of mr rows x NV vectors sums all of K in
 * int32 registers (exact, so no order to keep), then q8_out scales each sum and the bias is added. */
static inline __attribute__((always_inline)) void
q8_tile(const int NV, const int mr, int ng, const uint8_t *xq, int64_t xs, const float *sx, const int32_t *zp,
        const int8_t *panel, const float *sw, const int32_t *csum, const float *bias, float *C, int64_t ldc,
        int ncols) {
    const int NR = NV * VW;
    vq acc[G_MR][4];
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = q_zero();
    const int8_t *w = panel;
    for (int g = 0; g < ng; g++, w += NR * Q_KG) {
        vqw wv[4];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) wv[v] = q_wload(w + v * VW * Q_KG);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            const vqw xb = q_xload(xq + r * xs + g * 4);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = q_dot(acc[r][v], wv[v], xb);
        }
    }
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            vf y = q8_out(acc[r][v], sx[r], zp[r], csum + v * VW, sw + v * VW);
            if (bias) y = v_add(y, v_load(bias + v * VW));
            const int n = ncols - v * VW;
            if (n >= VW) v_store(c + v * VW, y);
            else if (n > 0) v_store_n(c + v * VW, y, n);
        }
    }
}
#define FRNN_Q8_FN(NV, MR)                                                                           \
    static __attribute__((noinline)) void q8_tile_##NV##_##MR(                                       \
        int ng, const uint8_t *xq, int64_t xs, const float *sx, const int32_t *zp, const int8_t *panel,  \
        const float *sw, const int32_t *csum, const float *bias, float *C, int64_t ldc, int ncols) {     \
        q8_tile(NV, MR, ng, xq, xs, sx, zp, panel, sw, csum, bias, C, ldc, ncols);                       \
    }
FRNN_FEW_SHAPES(FRNN_Q8_FN)
#undef FRNN_Q8_FN

enum { Q8_BLOCK = 65536, Q8_ROWS = 256 };   /* bytes of codes, rows, quantized at a time (stack) */
_Static_assert(FRNN_Q8_K_MAX / Q_KG * 4 <= Q8_BLOCK, "one row of codes fits the block");
static void gemm_q8(int M, int N, int K, const float *A, int64_t lda, int grp, int64_t gld, const frnn_wmat *B,
                    const float *bias, float *C, int64_t ldc, int desc) {
    const int64_t xs = q8_row_bytes(K), kp = xs / 4 * Q_KG;
    const int ng = (int)(xs / 4), full = panel_nv(INT_MAX) * VW, np = (N + full - 1) / full;
    int MB = (int)(Q8_BLOCK / xs);
    if (MB > Q8_ROWS) MB = Q8_ROWS;
    uint8_t xq[Q8_BLOCK] __attribute__((aligned(64)));
    float sx[Q8_ROWS];
    int32_t zp[Q8_ROWS];
    for (int m0 = 0; m0 < M; m0 += MB) {
        const int m1 = M - m0 < MB ? M : m0 + MB;
        for (int m = m0; m < m1; m++)
            q8_row(A + (int64_t)(m / grp) * gld + (int64_t)(m % grp) * lda, K, xq + (m - m0) * xs, sx + (m - m0),
                   zp + (m - m0));
        for (int i = 0; i < np; i++) {
            const int n0 = (desc ? np - 1 - i : i) * full, nv = panel_nv(N - n0), MR = nv == 4 ? G_MR4 : G_MR;
            const int8_t *panel = (const int8_t *)B->p + (int64_t)n0 * kp;
            const float *bp = bias ? bias + n0 : NULL;
            for (int m = m0; m < m1; m += MR) {
                const int mr = m1 - m < MR ? m1 - m : MR, o = m - m0;
                switch (nv * 16 + mr) {
#define FRNN_Q8_CASE(NV, R)                                                                          \
    case NV * 16 + R:                                                                                \
        q8_tile_##NV##_##R(ng, xq + o * xs, xs, sx + o, zp + o, panel, B->scale + n0, B->csum + n0, bp, \
                           C + (int64_t)m * ldc + n0, ldc, N - n0);                                   \
        break;
                    FRNN_FEW_SHAPES(FRNN_Q8_CASE)
#undef FRNN_Q8_CASE
                default: break;   /* unreachable: every shape is listed */
                }
            }
        }
    }
}

#undef FRNN_FEW_SHAPES
#undef FRNN_ROW1_SHAPES
#undef FRNN_FEW_2

/* rows [m0, m1) (pointers ar) against every panel: few (< G_FEW rows, a compile-time
 * constant) through the tile functions above, else gemm_panel (P: its partial sums).
 * Every panel but a narrower last one is panel_nv(INT_MAX) vectors wide, so panel i starts at
 * column i * that width. desc: the panels from the last to the first. A stream step reads W_ih
 * (here) and then W_hh (rec/impl.h), whose tiles already alternate direction step by step
 * (zig): when the two together are about L2's size (LSTM 256: 2 MiB), a sweep in the same order
 * every step is LRU's worst case (a line is evicted just before it is needed again). With this
 * sweep alternating too (desc = the step's zig), a stream step of LSTM 256 took 0.89-0.94x the
 * time (one process, the same weights, the two orders alternated, 15 pairs, 3 runs); GRU 256
 * (1.5 MiB), LSTM 64 and LSTM 256 batch 1 T = 100 within noise.
 * wide (bf16 / int8 elements, several rows): each panel is first widened into it (K x the
 * panel's width floats) and read as fp32. A tile widening its own loads pays 2 conversions per
 * vector per tile of rows, which the FMAs cannot hide (bilstm2 128x256 batch 32 1.13x, LSTM 256
 * batch 64 1.12x the fp32 time, Zen 3); the widened panel pays them once per block of rows. Same
 * values, same order, int8 sums scaled the same way: the same bits as one row's (batch
 * invariance). Without wide, the elements are read as they are packed (fp32 and int8 stored as
 * floats for any rows, bf16 / int8 for one row). */
static inline __attribute__((always_inline)) void
gemm_panels(const int few, int m0, int m1, int N, int K, const float *const *ar, const frnn_wmat *B,
            const float *bias, float *P, float *C, int64_t ldc, int desc, float *wide) {
    const int full = panel_nv(INT_MAX) * VW, np = (N + full - 1) / full, ES = W_SIZE(B->wt);
    const int lw = wide || B->wt == FRNN_W_I8W ? FRNN_W_F32 : B->wt;   /* how the tiles load */
    for (int i = 0; i < np; i++) {
        const int n0 = (desc ? np - 1 - i : i) * full, nv = panel_nv(N - n0);
        const char *panel = (const char *)B->p + (int64_t)n0 * K * ES;
        const float *bp = bias ? bias + n0 : NULL, *sp = B->scale ? B->scale + n0 : NULL;
        if (wide) {
            w_widen(wide, panel, (int64_t)K * nv * VW, B->wt);
            panel = (const char *)wide;
        }
        if (few) {
            const int MR = nv == 4 ? G_MR4 : G_MR;
            for (int m = m0; m < m1; m += MR)
                gemm_few_tile(lw, nv, m1 - m < MR ? m1 - m : MR, K, ar + (m - m0), panel, sp, bp,
                              C + m * ldc + n0, ldc, N - n0);
            continue;
        }
#if G_MR4
        if (nv == 4) {
            gemm_panel(FRNN_W_F32, 4, G_MR4, m0, m1, K, ar, panel, sp, bp, P, C + n0, ldc, N - n0);
            continue;
        }
#endif
        gemm_panel(FRNN_W_F32, 2, G_MR, m0, m1, K, ar, panel, sp, bp, P, C + n0, ldc, N - n0);
    }
}

static void gemm_few(int M, int N, int K, const float *A, int64_t lda, int grp, int64_t gld,
                     const frnn_wmat *B, const float *bias, float *C, int64_t ldc, int desc, float *wide) {
    const float *ar[G_FEW];
    row_ptrs(ar, 0, M, A, lda, grp, gld);
    gemm_panels(1, 0, M, N, K, ar, B, bias, NULL, C, ldc, desc, wide);
}

/* the many-row path (a function of its own, as it was before precisions: fp32 loads only) */
static __attribute__((noinline)) void gemm_many(int m0, int m1, int N, int K, const float *const *ar,
                                                const frnn_wmat *B, const float *bias, float *P, float *C,
                                                int64_t ldc, int desc, float *wide) {
    gemm_panels(0, m0, m1, N, K, ar, B, bias, P, C, ldc, desc, wide);
}

static void gemm_impl(int M, int N, int K, const float *A, int64_t lda, int grp, int64_t gld,
                      const frnn_wmat *B, const float *bias, float *C, int64_t ldc, int desc) {
    if (B->wt == FRNN_W_Q8) {
        gemm_q8(M, N, K, A, lda, grp, gld, B, bias, C, ldc, desc);
        return;
    }
    void *wide = NULL;
    if ((B->wt == FRNN_W_BF16 || B->wt == FRNN_W_I8) && M > 1 &&
        posix_memalign(&wide, 64, (size_t)(K > 0 ? K : 1) * panel_nv(INT_MAX) * VW * 4)) {
        for (int m = 0; m < M; m++)      /* no scratch: one row at a time (the same bits) */
            gemm_few(1, N, K, A + (int64_t)(m / grp) * gld + (int64_t)(m % grp) * lda, lda, 1, 0, B, bias,
                     C + (int64_t)m * ldc, ldc, desc, NULL);
        return;
    }
    if (M < G_FEW) {
        gemm_few(M, N, K, A, lda, grp, gld, B, bias, C, ldc, desc, wide);
        free(wide);
        return;
    }
    float P[G_KB_ROWS * 4 * VW] __attribute__((aligned(64)));
    const float *ar[G_MC_MAX];
    int MC = (int)((256 * 1024) / ((int64_t)(K > 0 ? K : 1) * 4)) / G_KB_ROWS * G_KB_ROWS;
    if (MC < G_KB_ROWS) MC = G_KB_ROWS;
    if (MC > G_MC_MAX) MC = G_MC_MAX;
    for (int m0 = 0; m0 < M; m0 += MC) {
        const int m1 = M - m0 < MC ? M : m0 + MC;
        row_ptrs(ar, m0, m1, A, lda, grp, gld);
        gemm_many(m0, m1, N, K, ar, B, bias, P, C, ldc, desc, wide);
    }
    free(wide);
}

void ISA_SUFFIX(gemm)(int M, int N, int K, const float *A, int64_t lda, const frnn_wmat *B,
                      const float *bias, float *C, int64_t ldc) {
    gemm_impl(M, N, K, A, lda, M > 0 ? M : 1, 0, B, bias, C, ldc, 0);
}

void ISA_SUFFIX(gemm_groups)(int M, int N, int K, const float *A, int64_t lda, int grp, int64_t gld,
                             const frnn_wmat *B, const float *bias, float *C, int64_t ldc, int desc) {
    gemm_impl(M, N, K, A, lda, grp, gld, B, bias, C, ldc, desc);
}
#endif
