/* rec/impl.h - one time step of a recurrent layer (one direction, B rows), written once against
 * simd/<isa>.h; args in kernels.h (frnn_rec_args).
 *
 * Fused: for each tile of VW hidden units and each block of up to V_RB batch rows, the G gate
 * accumulators (recurrent GEMV/GEMM: h_prev x W_hh^T) stay in registers for the whole K loop;
 * the epilogue then adds the precomputed input part (x W_ih^T + biases), applies the gate
 * activations and the state update for those units at once, and stores h and c. The packed tile
 * of W_hh (gates interleaved per k) is read once per block of V_RB rows: at batch 1 the step
 * streams W_hh exactly once.
 *   LSTM (+ peepholes, clip, input_forget; projection is a GEMM the driver runs afterwards);
 *   GRU linear_before_reset=1: n = g(xn + r*(W_hn h + b_hn)), one pass;
 *   GRU linear_before_reset=0: pass 1 computes r, z and r*h; pass 2 the n-gate GEMV over r*h;
 *   RNN.
 * Padded lanes (units H..Hp-1) see zero weights and biases and are never copied out.
 */
#ifndef FRNN_REC_IMPL_H
#define FRNN_REC_IMPL_H
#include "../act/vec.h"

FRNN_INLINE vf clipv(vf x, float clip) {
    return clip > 0 ? v_min(v_set1(clip), v_max(v_set1(-clip), x)) : x;
}

/* acc[g][r] = sum_k W[k][g][:] * h[r][k] for G gates and nb rows (both compile-time constants).
 *
 * Summation order: K is cut into NB contiguous blocks (NB depends on G only: 8, 4, 4, 2 for
 * G = 1..4), each summed in k order from zero, and the block sums are added left to right to
 * zero. The
 * order never depends on nb, so a row's result does not depend on which rows share its tile (batch
 * composition, thread chunks, stream pools): batch-invariant, bit for bit.
 * Speed: FMA latency x 2 ports wants >= 8 independent chains. With few accumulators (batch 1) the
 * NB blocks run in lockstep as separate chains (G*nb*NB of them); with many, one block at a time. */
FRNN_INLINE void rec_gemv(const int G, const int nb, int K, const float *W, const float *h,
                          int64_t hs, vf acc[4][V_RB]) {
    const int NB = G == 1 ? 8 : G == 4 ? 2 : 4;
    const int PAR = G * nb * NB <= 24;
    const int64_t ws = (int64_t)G * VW;   /* floats per k in the packed tile */
    const float *hr[V_RB];
#pragma GCC unroll 8
    for (int r = 0; r < nb; r++) hr[r] = h + r * hs;
    int kb[9];
#pragma GCC unroll 9
    for (int s = 0; s <= NB; s++) kb[s] = (int)((int64_t)s * K / NB);
    if (PAR) {
        vf part[8][4][V_RB];
#pragma GCC unroll 8
        for (int s = 0; s < NB; s++)
#pragma GCC unroll 4
            for (int g = 0; g < G; g++)
#pragma GCC unroll 8
                for (int r = 0; r < nb; r++) part[s][g][r] = v_zero();
        /* every block has len or len + 1 elements of k: len in lockstep (a pointer per block
         * and row, no index arithmetic or branch in the loop), then the blocks' last ones */
        const int len = K / NB;
        const float *wp[8], *xp[8][V_RB];
#pragma GCC unroll 8
        for (int s = 0; s < NB; s++) {
            wp[s] = W + kb[s] * ws;
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) xp[s][r] = hr[r] + kb[s];
        }
#define FRNN_GEMV_ROW(s)                                                                          \
    do {                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < nb; r++) {                                   \
            vf x = v_set1(*xp[s][r]++);                                                           \
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)                                  \
                part[s][g][r] = v_fma(v_load(wp[s] + g * VW), x, part[s][g][r]);                  \
        }                                                                                         \
        wp[s] += ws;                                                                              \
    } while (0)
        for (int i = 0; i < len; i++) {
#pragma GCC unroll 8
            for (int s = 0; s < NB; s++) FRNN_GEMV_ROW(s);
        }
#pragma GCC unroll 8
        for (int s = 0; s < NB; s++)
            if (kb[s] + len < kb[s + 1]) FRNN_GEMV_ROW(s);
#undef FRNN_GEMV_ROW
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) {
                vf t = v_zero();
#pragma GCC unroll 8
                for (int s = 0; s < NB; s++) t = v_add(t, part[s][g][r]);
                acc[g][r] = t;
            }
        return;
    }
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int r = 0; r < nb; r++) acc[g][r] = v_zero();
    for (int s = 0; s < NB; s++) {
        vf p[4][V_RB];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) p[g][r] = v_zero();
        const float *w = W + kb[s] * ws;
        for (int k = kb[s]; k < kb[s + 1]; k++, w += ws) {
            vf wv[4];
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) wv[g] = v_load(w + g * VW);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) __builtin_prefetch(w + FRNN_PF_K * ws + g * VW);
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) {
                vf x = v_set1(hr[r][k]);
#pragma GCC unroll 4
                for (int g = 0; g < G; g++) p[g][r] = v_fma(wv[g], x, p[g][r]);
            }
        }
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) acc[g][r] = v_add(acc[g][r], p[g][r]);
    }
}

/* row b's input part of this step: in the xp buffer, or (Embedding folded into the layer) the
 * projected token's row of the table */
FRNN_INLINE const float *xp_row(const frnn_rec_args *a, int b) {
    return a->xp_rows ? a->xp_rows[b * a->xp_stride] + a->xp_off : a->xp + b * a->xp_stride;
}

/* The epilogues work on a block's nb rows at once, gate by gate (act_n: the rows' activations in
 * lockstep); each row and lane gets the operations of the one-row form in the same order, so the
 * bits do not depend on nb. */
FRNN_INLINE void clip_n(const frnn_rec_args *a, const int nb, vf *x) {
    if (a->clip > 0) FRNN_LANES(nb, r) x[r] = clipv(x[r], a->clip);
}

/* x[r] = acc[r] + the row's xp at offset off (+ the unit j), clipped, activated by act */
FRNN_INLINE void gate_n(const frnn_rec_args *a, const frnn_act *act, const int nb, vf *x,
                        const vf *acc, const float *const *xp, int64_t off) {
    FRNN_LANES(nb, r) x[r] = v_add(acc[r], v_load(xp[r] + off));
    clip_n(a, nb, x);
    act_n(act, nb, x);
}

FRNN_INLINE void lstm_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB]) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf cp[V_RB], i[V_RB], f[V_RB], g[V_RB], o[V_RB];
    FRNN_LANES(nb, r) {
        xp[r] = xp_row(a, b0 + r) + j;
        cp[r] = v_load(a->c + (b0 + r) * Hp + j);
        i[r] = v_add(acc[0][r], v_load(xp[r]));
        f[r] = v_add(acc[1][r], v_load(xp[r] + Hp));
    }
    if (a->peep) FRNN_LANES(nb, r) {
        i[r] = v_fma(v_load(a->peep + j), cp[r], i[r]);
        f[r] = v_fma(v_load(a->peep + Hp + j), cp[r], f[r]);
    }
    clip_n(a, nb, i);
    act_n(&a->act[0], nb, i);
    if (a->input_forget) {
        FRNN_LANES(nb, r) f[r] = v_sub(v_set1(1.0f), i[r]);
    } else {
        clip_n(a, nb, f);
        act_n(&a->act[0], nb, f);
    }
    gate_n(a, &a->act[1], nb, g, acc[2], xp, 2 * Hp);
    FRNN_LANES(nb, r) {
        cp[r] = v_fma(f[r], cp[r], v_mul(i[r], g[r]));   /* the new c */
        o[r] = v_add(acc[3][r], v_load(xp[r] + 3 * Hp));
    }
    if (a->peep) FRNN_LANES(nb, r) o[r] = v_fma(v_load(a->peep + 2 * Hp + j), cp[r], o[r]);
    clip_n(a, nb, o);
    act_n(&a->act[0], nb, o);
    FRNN_LANES(nb, r) {
        v_store(a->c_out + (b0 + r) * Hp + j, cp[r]);
        g[r] = cp[r];
    }
    act_n(&a->act[2], nb, g);
    FRNN_LANES(nb, r) v_store(a->h_out + (b0 + r) * a->h_out_stride + j, v_mul(o[r], g[r]));
}

FRNN_INLINE void gru_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB]) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf rg[V_RB], z[V_RB], n[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, b0 + r) + j;
    gate_n(a, &a->act[0], nb, rg, acc[0], xp, 0);
    gate_n(a, &a->act[0], nb, z, acc[1], xp, Hp);
    FRNN_LANES(nb, r) n[r] = v_fma(rg[r], v_add(acc[2][r], v_load(a->b_hn + j)), v_load(xp[r] + 2 * Hp));
    clip_n(a, nb, n);
    act_n(&a->act[1], nb, n);
    FRNN_LANES(nb, r) {   /* (1-z)n + zh */
        vf hp = v_load(a->h + (b0 + r) * a->h_stride + j);
        v_store(a->h_out + (b0 + r) * a->h_out_stride + j, v_fma(z[r], v_sub(hp, n[r]), n[r]));
    }
}

/* GRU linear_before_reset=0, pass 1: r and z; keeps r*h and z in scratch */
FRNN_INLINE void gru0_epi1(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB]) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf rg[V_RB], z[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, b0 + r) + j;
    gate_n(a, &a->act[0], nb, rg, acc[0], xp, 0);
    gate_n(a, &a->act[0], nb, z, acc[1], xp, Hp);
    FRNN_LANES(nb, r) {
        const int b = b0 + r;
        v_store(a->scratch + b * Hp + j, v_mul(rg[r], v_load(a->h + b * a->h_stride + j)));
        v_store(a->scratch + ((int64_t)a->B + b) * Hp + j, z[r]);
    }
}

FRNN_INLINE void gru0_epi2(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB]) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf n[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, b0 + r) + j;
    gate_n(a, &a->act[1], nb, n, acc[0], xp, 2 * Hp);
    FRNN_LANES(nb, r) {
        const int b = b0 + r;
        vf hp = v_load(a->h + b * a->h_stride + j);
        vf z = v_load(a->scratch + ((int64_t)a->B + b) * Hp + j);
        v_store(a->h_out + b * a->h_out_stride + j, v_fma(z, v_sub(hp, n[r]), n[r]));
    }
}

FRNN_INLINE void rnn_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB]) {
    const float *xp[V_RB];
    vf x[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, b0 + r) + j;
    gate_n(a, &a->act[0], nb, x, acc[0], xp, 0);
    FRNN_LANES(nb, r) v_store(a->h_out + (b0 + r) * a->h_out_stride + j, x[r]);
}

/* The epilogue's xp lines of a block, requested before its GEMV (thousands of cycles): xp rows
 * are a whole step apart (4 KiB and more), so the hardware prefetcher does not follow them, and at
 * large B*T they come from memory. */
FRNN_INLINE void prefetch_xp(const frnn_rec_args *a, const int G, const int nb, int b0, int j) {
#pragma GCC unroll 8
    for (int r = 0; r < nb; r++) {
        const float *xp = xp_row(a, b0 + r) + j;
        const int ng = G == 2 ? 3 : G;   /* GRU lbr=0 pass 1: pass 2's n gate too */
        for (int g = 0; g < ng; g++) __builtin_prefetch(xp + g * a->Hp);
    }
}

/* One block: nb rows from b0 for the tile at unit j; W points at the tile. */
#define FRNN_BLOCK(NAME, G, K, HIN, HS, EPI)                                                    \
    FRNN_INLINE void NAME(const frnn_rec_args *a, const int nb, int b0, int j, const float *W) { \
        vf acc[4][V_RB];                                                                         \
        prefetch_xp(a, G, nb, b0, j);                                                            \
        rec_gemv(G, nb, K, W, (HIN) + b0 * (HS), HS, acc);                                       \
        EPI(a, nb, b0, j, acc);                                                                  \
    }
FRNN_BLOCK(lstm_block, 4, a->R, a->h, a->h_stride, lstm_epi)
FRNN_BLOCK(gru_block, 3, a->H, a->h, a->h_stride, gru_epi)
FRNN_BLOCK(gru0_block1, 2, a->H, a->h, a->h_stride, gru0_epi1)
FRNN_BLOCK(gru0_block2, 1, a->H, a->scratch, (int64_t)a->Hp, gru0_epi2)
FRNN_BLOCK(rnn_block, 1, a->R, a->h, a->h_stride, rnn_epi)

/* every tile, every block of rows, with the row count a compile-time constant. The B rows are
 * cut into ceil(B / V_RB) blocks of equal size (+-1): 64 rows are 9 x 6 + 2 x 5 rather than
 * 10 x 6 + 4, 32 are 2 x 6 + 4 x 5 rather than 5 x 6 + 2, because a block of few rows reads the
 * whole tile of W_hh for few FMAs. Any split gives the same bits (rec_gemv). */
#if V_RB >= 6
#define FRNN_NB_CASES(F) case 6: F(6); break; case 5: F(5); break; case 4: F(4); break; \
                         case 3: F(3); break; case 2: F(2); break; case 1: F(1); break;
#elif V_RB >= 4
#define FRNN_NB_CASES(F) case 4: F(4); break; case 3: F(3); break; case 2: F(2); break; \
                         case 1: F(1); break;
#else
#define FRNN_NB_CASES(F) case 3: F(3); break; case 2: F(2); break; case 1: F(1); break;
#endif
#define FRNN_TILES(BLOCK, G, K, WBASE)                                                     \
    for (int jj = a->j0; jj < a->j1; jj += VW) {                                           \
        const int j = a->zig ? a->j1 - VW - (jj - a->j0) : jj;                               \
        const float *W = (WBASE) + (int64_t)(j / VW) * (K) * (G) * VW;                      \
        for (int i = 0, b0 = 0; i < nblk; i++) {                                           \
            const int nb = bq + (i < br), b1 = b0 + nb;   /* the first br blocks: one more */ \
            switch (nb) {                                                                   \
                FRNN_NB_CASES(FRNN_CALL_##BLOCK)                                            \
            default: break;                                                                 \
            }                                                                               \
            b0 = b1;                                                                        \
        }                                                                                   \
    }
#define FRNN_CALL_lstm_block(N) lstm_block(a, N, b0, j, W)
#define FRNN_CALL_gru_block(N) gru_block(a, N, b0, j, W)
#define FRNN_CALL_gru0_block1(N) gru0_block1(a, N, b0, j, W)
#define FRNN_CALL_gru0_block2(N) gru0_block2(a, N, b0, j, W)
#define FRNN_CALL_rnn_block(N) rnn_block(a, N, b0, j, W)

void ISA_SUFFIX(rec_step)(const frnn_rec_args *a) {
    const int nblk = (a->B + V_RB - 1) / V_RB, bq = a->B / nblk, br = a->B % nblk;
    switch (a->cell) {
    case FRNN_CELL_LSTM:
        FRNN_TILES(lstm_block, 4, a->R, a->Whh)
        break;
    case FRNN_CELL_GRU:
        if (a->lbr) {
            FRNN_TILES(gru_block, 3, a->H, a->Whh)
        } else {
            FRNN_TILES(gru0_block1, 2, a->H, a->Whh)
            FRNN_TILES(gru0_block2, 1, a->H, a->Whh_n)
        }
        break;
    default:
        FRNN_TILES(rnn_block, 1, a->R, a->Whh)
        break;
    }
}
#endif
