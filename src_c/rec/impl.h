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
 * W_hh's elements are fp32, bf16 or int8 (frnn_wmat, kernels.h): every block is instantiated per
 * precision WT; an int8 tile's sums are multiplied by their units' scales before the epilogue.
 */
#ifndef FRNN_REC_IMPL_H
#define FRNN_REC_IMPL_H
#include <stdlib.h>
#include "../act/vec.h"
#include "../simd/wload.h"
#include "../simd/q8.h"

#ifndef V_TILE_LANES
#define V_TILE_LANES 0   /* simd/<isa>.h: 1 = batch 1 runs groups of tiles as the epilogue's lanes */
#endif

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
/* Chains in lockstep at most: 24 on AVX-512's 32 registers; on AVX2's 16 registers 24 chains
 * spilled (LSTM batch 64: three rows' 24 accumulators went to the stack every k), 12 do not. */
#ifndef REC_PAR_MAX
#define REC_PAR_MAX (VW == 8 ? 12 : 24)
#endif
FRNN_INLINE void rec_gemv(const int WT, const int G, const int nb, int K, const char *W, const float *h,
                          int64_t hs, vf acc[4][V_RB]) {
    const int NB = G == 1 ? 8 : G == 4 ? 2 : 4;
    const int PAR = G * nb * NB <= REC_PAR_MAX, ES = W_SIZE(WT);
    const int64_t ws = (int64_t)G * VW * ES;   /* bytes per k in the packed tile */
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
        const char *wp[8];
        const float *xp[8][V_RB];
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
                part[s][g][r] = v_fma(w_load(WT, wp[s] + g * VW * ES), x, part[s][g][r]);         \
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
        const char *w = W + kb[s] * ws;
        for (int k = kb[s]; k < kb[s + 1]; k++, w += ws) {
            vf wv[4];
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) wv[g] = w_load(WT, w + g * VW * ES);
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) __builtin_prefetch(w + FRNN_PF_K * ws + g * VW * ES);
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

/* The epilogues work on nb lanes at once, gate by gate (act_n: the lanes' activations in
 * lockstep). Lane r is row b0 + r rs, units j + r js: a block's rows (rs = 1, js = 0) or, at batch
 * 1, a group of tiles (rs = 0, js = VW). Each lane gets the operations of the one-row form in the
 * same order, so the bits depend neither on nb nor on what the lanes are. */
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

/* lane r's row and unit (rs, js: the epilogues' arguments) */
#define LB(r) ((int64_t)b0 + (r) * rs)
#define LJ(r) (j + (r) * js)
FRNN_INLINE void lstm_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB],
                          const int rs, const int js) {
    const int64_t Hp = a->Hp;
    /* the default gates: i g and o tanh(c) each with one reciprocal (v_sig_tanh_n) */
    const int pair = a->act[0].kind == FRNN_ACT_SIGMOID && a->act[1].kind == FRNN_ACT_TANH &&
                     a->act[2].kind == FRNN_ACT_TANH && !a->input_forget;
    const float *xp[V_RB];
    vf cp[V_RB], i[V_RB], f[V_RB], g[V_RB], o[V_RB];
    FRNN_LANES(nb, r) {
        xp[r] = xp_row(a, LB(r)) + LJ(r);
        cp[r] = v_load(a->c + LB(r) * Hp + LJ(r));
        i[r] = v_add(acc[0][r], v_load(xp[r]));
        f[r] = v_add(acc[1][r], v_load(xp[r] + Hp));
    }
    if (a->peep) FRNN_LANES(nb, r) {
        i[r] = v_fma(v_load(a->peep + LJ(r)), cp[r], i[r]);
        f[r] = v_fma(v_load(a->peep + Hp + LJ(r)), cp[r], f[r]);
    }
    clip_n(a, nb, i);
    if (!pair) act_n(&a->act[0], nb, i);
    if (a->input_forget) {
        FRNN_LANES(nb, r) f[r] = v_sub(v_set1(1.0f), i[r]);
    } else {
        clip_n(a, nb, f);
        act_n(&a->act[0], nb, f);
    }
    FRNN_LANES(nb, r) g[r] = v_add(acc[2][r], v_load(xp[r] + 2 * Hp));
    clip_n(a, nb, g);
    if (pair) v_sig_tanh_n(nb, i, g, g);   /* g = i g */
    else {
        act_n(&a->act[1], nb, g);
        FRNN_LANES(nb, r) g[r] = v_mul(i[r], g[r]);
    }
    FRNN_LANES(nb, r) {
        cp[r] = v_fma(f[r], cp[r], g[r]);   /* the new c */
        o[r] = v_add(acc[3][r], v_load(xp[r] + 3 * Hp));
    }
    if (a->peep) FRNN_LANES(nb, r) o[r] = v_fma(v_load(a->peep + 2 * Hp + LJ(r)), cp[r], o[r]);
    clip_n(a, nb, o);
    FRNN_LANES(nb, r) {
        v_store(a->c_out + LB(r) * Hp + LJ(r), cp[r]);
        g[r] = cp[r];
    }
    if (pair) v_sig_tanh_n(nb, o, g, g);   /* g = o tanh(c) */
    else {
        act_n(&a->act[0], nb, o);
        act_n(&a->act[2], nb, g);
        FRNN_LANES(nb, r) g[r] = v_mul(o[r], g[r]);
    }
    FRNN_LANES(nb, r) v_store(a->h_out + LB(r) * a->h_out_stride + LJ(r), g[r]);
}

FRNN_INLINE void gru_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB],
                         const int rs, const int js) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf rg[V_RB], z[V_RB], n[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, LB(r)) + LJ(r);
    gate_n(a, &a->act[0], nb, rg, acc[0], xp, 0);
    gate_n(a, &a->act[0], nb, z, acc[1], xp, Hp);
    FRNN_LANES(nb, r) n[r] = v_fma(rg[r], v_add(acc[2][r], v_load(a->b_hn + LJ(r))), v_load(xp[r] + 2 * Hp));
    clip_n(a, nb, n);
    act_n(&a->act[1], nb, n);
    FRNN_LANES(nb, r) {   /* (1-z)n + zh */
        vf hp = v_load(a->h + LB(r) * a->h_stride + LJ(r));
        v_store(a->h_out + LB(r) * a->h_out_stride + LJ(r), v_fma(z[r], v_sub(hp, n[r]), n[r]));
    }
}

/* GRU linear_before_reset=0, pass 1: r and z; keeps r*h and z in scratch */
FRNN_INLINE void gru0_epi1(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB],
                           const int rs, const int js) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf rg[V_RB], z[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, LB(r)) + LJ(r);
    gate_n(a, &a->act[0], nb, rg, acc[0], xp, 0);
    gate_n(a, &a->act[0], nb, z, acc[1], xp, Hp);
    FRNN_LANES(nb, r) {
        v_store(a->scratch + LB(r) * Hp + LJ(r), v_mul(rg[r], v_load(a->h + LB(r) * a->h_stride + LJ(r))));
        v_store(a->scratch + ((int64_t)a->B + LB(r)) * Hp + LJ(r), z[r]);
    }
}

FRNN_INLINE void gru0_epi2(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB],
                           const int rs, const int js) {
    const int64_t Hp = a->Hp;
    const float *xp[V_RB];
    vf n[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, LB(r)) + LJ(r);
    gate_n(a, &a->act[1], nb, n, acc[0], xp, 2 * Hp);
    FRNN_LANES(nb, r) {
        vf hp = v_load(a->h + LB(r) * a->h_stride + LJ(r));
        vf z = v_load(a->scratch + ((int64_t)a->B + LB(r)) * Hp + LJ(r));
        v_store(a->h_out + LB(r) * a->h_out_stride + LJ(r), v_fma(z, v_sub(hp, n[r]), n[r]));
    }
}

FRNN_INLINE void rnn_epi(const frnn_rec_args *a, const int nb, int b0, int j, vf acc[4][V_RB],
                         const int rs, const int js) {
    const float *xp[V_RB];
    vf x[V_RB];
    FRNN_LANES(nb, r) xp[r] = xp_row(a, LB(r)) + LJ(r);
    gate_n(a, &a->act[0], nb, x, acc[0], xp, 0);
    FRNN_LANES(nb, r) v_store(a->h_out + LB(r) * a->h_out_stride + LJ(r), x[r]);
}
#undef LB
#undef LJ

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

/* int8 tiles (S: the scales; NULL for fp32 and bf16): the nb lanes' sums of each gate times
 * their units' scales (lane r: unit j + r js) */
FRNN_INLINE void scale_n(const int G, const int nb, const float *S, int64_t Hp, int j, const int js,
                         vf acc[4][V_RB]) {
    if (!S) return;
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
        FRNN_LANES(nb, r) acc[g][r] = v_opaque(v_mul(acc[g][r], v_load(S + g * Hp + j + r * js)));
}

/* One block: nb rows from b0 for the tile at unit j; W points at the tile (bytes), S at the
 * scales (int8). The epilogue's lanes are the rows (row b0 + r, unit j). */
#define FRNN_ROW_BLOCK(NAME, G, K, HIN, HS, EPI)                                                \
    FRNN_INLINE void NAME(const frnn_rec_args *a, const int WT, const int nb, int b0, int j,    \
                          const char *W, const float *S) {                                      \
        vf acc[4][V_RB];                                                                         \
        prefetch_xp(a, G, nb, b0, j);                                                            \
        rec_gemv(WT, G, nb, K, W, (HIN) + b0 * (HS), HS, acc);                                   \
        scale_n(G, nb, S, a->Hp, j, 0, acc);                                                     \
        EPI(a, nb, b0, j, acc, 1, 0);                                                            \
    }
/* Batch 1 with short tiles (V_TILE_LANES, simd/<isa>.h): the one row, nt consecutive tiles from
 * unit j (W: the first one's), read in descending order when desc; the epilogue's lanes are the
 * tiles (row 0, unit j + r VW), so a step's gate math is nt chains in lockstep instead of one chain per
 * tile. The GEMV of each tile and each lane's operations are the one-row form's: the same bits. */
#if V_TILE_LANES
#define FRNN_BLOCK(NAME, G, K, HIN, HS, EPI)                                                    \
    FRNN_ROW_BLOCK(NAME, G, K, HIN, HS, EPI)                                                    \
    /* a function of its own: inlined, GCC kept the GEMV's pointers on the stack (GRU 64 1.15x) */ \
    static __attribute__((noinline)) void NAME##_gemv1(const frnn_rec_args *a, const char *W,   \
                                                       vf at[4][V_RB]) {                        \
        rec_gemv(FRNN_W_F32, G, 1, K, W, HIN, HS, at);                                           \
    }                                                                                            \
    /* fp32 loads only (fp32, int8 stored as floats: rec_step) */                                \
    FRNN_INLINE void NAME##_t(const frnn_rec_args *a, const int nt, int j, const char *W,       \
                              const float *S, int desc) {                                        \
        vf acc[4][V_RB];                                                                         \
        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) prefetch_xp(a, G, 1, 0, j + t * VW); \
        _Pragma("GCC unroll 8") for (int i = 0; i < nt; i++) {                                  \
            const int t = desc ? nt - 1 - i : i;                                                 \
            vf at[4][V_RB];                                                                      \
            NAME##_gemv1(a, W + (int64_t)t * (K) * (G) * VW * 4, at);                            \
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) acc[g][t] = at[g][0];            \
        }                                                                                        \
        scale_n(G, nt, S, a->Hp, j, VW, acc);                                                    \
        EPI(a, nt, 0, j, acc, 0, VW);                                                            \
    }
#else
#define FRNN_BLOCK FRNN_ROW_BLOCK
#endif
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
/* every block of rows of the tile at unit j (W, S: its weights and scales) */
#define FRNN_ROW_BLOCKS(BLOCK)                                                              \
    for (int i = 0, b0 = 0; i < nblk; i++) {                                               \
        const int nb = bq + (i < br), b1 = b0 + nb;   /* the first br blocks: one more */     \
        switch (nb) {                                                                       \
            FRNN_NB_CASES(FRNN_CALL_##BLOCK)                                                \
        default: break;                                                                     \
        }                                                                                   \
        b0 = b1;                                                                            \
    }
/* every tile, read as fp32 (WT): fp32 or int8-as-float weights, or with `wide` (bf16 / int8
 * weights, several rows) each tile first widened to fp32 there */
#define FRNN_TILES(BLOCK, G, K, WBASE)                                                     \
    for (int jj = a->j0; jj < a->j1; jj += VW) {                                           \
        const int j = a->zig ? a->j1 - VW - (jj - a->j0) : jj;                               \
        const int64_t n = (int64_t)(K) * (G) * VW;   /* elements of a tile */               \
        const char *W = (const char *)(WBASE).p + (int64_t)(j / VW) * n * W_SIZE((WBASE).wt); \
        if (wide) {                                                                          \
            w_widen(wide, W, n, (WBASE).wt);                                                 \
            W = (const char *)wide;                                                          \
        }                                                                                    \
        const float *S = (WBASE).scale;                                                     \
        FRNN_ROW_BLOCKS(BLOCK)                                                              \
    }
#define FRNN_CALL_lstm_block(N) lstm_block(a, WT, N, b0, j, W, S)
#define FRNN_CALL_gru_block(N) gru_block(a, WT, N, b0, j, W, S)
#define FRNN_CALL_gru0_block1(N) gru0_block1(a, WT, N, b0, j, W, S)
#define FRNN_CALL_gru0_block2(N) gru0_block2(a, WT, N, b0, j, W, S)
#define FRNN_CALL_rnn_block(N) rnn_block(a, WT, N, b0, j, W, S)

/* every cell's pass(es) through LOOP(BLOCK, G, K, WBASE): FRNN_TILES or FRNN_GROUPS */
#define FRNN_CELLS(LOOP)                                  \
    switch (a->cell) {                                    \
    case FRNN_CELL_LSTM:                                  \
        LOOP(lstm_block, 4, a->R, a->Whh)                 \
        break;                                            \
    case FRNN_CELL_GRU:                                   \
        if (a->lbr) {                                     \
            LOOP(gru_block, 3, a->H, a->Whh)              \
        } else {                                          \
            LOOP(gru0_block1, 2, a->H, a->Whh)            \
            LOOP(gru0_block2, 1, a->H, a->Whh_n)          \
        }                                                 \
        break;                                            \
    default:                                              \
        LOOP(rnn_block, 1, a->R, a->Whh)                  \
        break;                                            \
    }

#if V_TILE_LANES
/* Batch 1 with tiles of at most 8192 floats (32 KiB: K <= 128 for LSTM, 170 for GRU): groups of
 * up to V_RB consecutive tiles (FRNN_BLOCK's NAME_t), cut into equal sizes (+-1) like the rows
 * above, the zig order kept by groups and within each. Longer tiles keep one tile at a time: their
 * GEMV hides the epilogue's latency, and the grouped epilogue would leave the stream of W_hh
 * from L3 idle (LSTM 256 and GRU 256 steps 1.03-1.08x slower grouped). A function of its own:
 * inlined into rec_step, it made the many-row path ~2% slower (Embedding -> LSTM 32 at batch 128). */
enum { FRNN_TILE_LANES_MAX = 8192 };
#define FRNN_GROUPS(BLOCK, G, K, WBASE)                                                     \
    for (int i = 0, t0 = 0; i < ng; i++) {                                                  \
        const int nt = tq + (i < tr), g0 = a->zig ? ntl - t0 - nt : t0;                     \
        const int j = a->j0 + g0 * VW;                                                       \
        const char *W = (const char *)(WBASE).p + (int64_t)(j / VW) * (K) * (G) * VW * 4;    \
        const float *S = (WBASE).scale;                                                     \
        switch (nt) {                                                                        \
            FRNN_NB_CASES(FRNN_TCALL_##BLOCK)                                                \
        default: break;                                                                      \
        }                                                                                    \
        t0 += nt;                                                                            \
    }
#define FRNN_TCALL_lstm_block(N) lstm_block_t(a, N, j, W, S, a->zig)
#define FRNN_TCALL_gru_block(N) gru_block_t(a, N, j, W, S, a->zig)
#define FRNN_TCALL_gru0_block1(N) gru0_block1_t(a, N, j, W, S, a->zig)
#define FRNN_TCALL_gru0_block2(N) gru0_block2_t(a, N, j, W, S, a->zig)
#define FRNN_TCALL_rnn_block(N) rnn_block_t(a, N, j, W, S, a->zig)

/* floats of W_hh per tile (GRU linear_before_reset=0: both passes' together) */
static inline int64_t tile_floats(const frnn_rec_args *a) {
    const int G = a->cell == FRNN_CELL_LSTM ? 4 : a->cell == FRNN_CELL_GRU ? 3 : 1;
    return (int64_t)(a->cell == FRNN_CELL_GRU ? a->H : a->R) * G * VW;
}

/* batch 1, fp32 loads (fp32 and int8-as-float weights) */
static __attribute__((noinline)) void rec_step_groups(const frnn_rec_args *a) {
    const int ntl = (a->j1 - a->j0) / VW, ng = (ntl + V_RB - 1) / V_RB;
    if (ng == 0) return;
    const int tq = ntl / ng, tr = ntl % ng;
    FRNN_CELLS(FRNN_GROUPS)
}
#endif

/* ---- int8 with dynamic activations (FRNN_W_Q8, simd/q8.h) ------------------------------------
 * The tile at unit j holds, group of Q_KG k after group, G gates x VW units x Q_KG int8:
 * [tile][K / Q_KG][G][VW][Q_KG]; csum and scale [gate][Hp]. Each step quantizes the rows of its
 * input (h; GRU linear_before_reset=0's second pass: r*h) a block of rows at a time, sums every
 * gate of a tile in int32 registers (exact: no order to keep), scales them (q8_out) and runs
 * the fp32 epilogue. With few sums at once (batch 1) each is split into NS over interleaved
 * groups of k, so that NS x G x nb dot products are in flight (vpdpbusd's latency is 5 cycles). */
FRNN_INLINE void rec_gemv_q8(const int G, const int nb, int ng, const int8_t *W, const uint8_t *xq, int64_t xs,
                             vq acc[4][V_RB]) {
    const int NS = G * nb >= 8 ? 1 : G * nb >= 4 ? 2 : 4;
    const int64_t ws = (int64_t)G * VW * Q_KG;   /* bytes per group of k */
    vq part[4][4][V_RB];
#pragma GCC unroll 4
    for (int s = 0; s < NS; s++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
#pragma GCC unroll 8
            for (int r = 0; r < nb; r++) part[s][g][r] = q_zero();
#define FRNN_Q8_GROUP(s, k)                                                                       \
    do {                                                                                          \
        const int8_t *w_ = W + (int64_t)(k) * ws;                                                 \
        vqw wv[4];                                                                                \
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) wv[g] = q_wload(w_ + g * VW * Q_KG);  \
        _Pragma("GCC unroll 8") for (int r = 0; r < nb; r++) {                                   \
            const vqw xb = q_xload(xq + r * xs + (int64_t)(k) * 4);                               \
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) part[s][g][r] = q_dot(part[s][g][r], wv[g], xb); \
        }                                                                                         \
    } while (0)
    int k = 0;
    for (; k + NS <= ng; k += NS) {
#pragma GCC unroll 4
        for (int s = 0; s < NS; s++) FRNN_Q8_GROUP(s, k + s);
    }
    for (; k < ng; k++) FRNN_Q8_GROUP(0, k);
#undef FRNN_Q8_GROUP
#pragma GCC unroll 4
    for (int g = 0; g < G; g++)
#pragma GCC unroll 8
        for (int r = 0; r < nb; r++) {
            vq t = part[0][g][r];
#pragma GCC unroll 4
            for (int s = 1; s < NS; s++) t = q_add(t, part[s][g][r]);
            acc[g][r] = t;
        }
}

/* nb rows from b0 (xq, s, zp: row b0's codes, scale, zero point) for the tile at unit j (W) */
#define FRNN_Q8_BLOCK(NAME, G, EPI)                                                              \
    FRNN_INLINE void NAME##_q8(const frnn_rec_args *a, const int nb, int b0, int j, const int8_t *W, int ng, \
                               const uint8_t *xq, int64_t xs, const float *s, const int32_t *zp,    \
                               const frnn_wmat *Wm) {                                                 \
        vq q[4][V_RB];                                                                            \
        vf acc[4][V_RB];                                                                          \
        prefetch_xp(a, G, nb, b0, j);                                                             \
        rec_gemv_q8(G, nb, ng, W, xq, xs, q);                                                     \
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)                                      \
            _Pragma("GCC unroll 8") for (int r = 0; r < nb; r++)                                 \
                acc[g][r] = q8_out(q[g][r], s[r], zp[r], Wm->csum + g * a->Hp + j, Wm->scale + g * a->Hp + j); \
        EPI(a, nb, b0, j, acc, 1, 0);                                                             \
    }
/* each (cell pass, row count) a function of its own: inlined into one step function, the 30 of
 * them took rec/avx512_vnni.c's AddressSanitizer build 2m46s (2m12s so) and its -O3 build 25 s
 * (21 s) */
#define FRNN_Q8_NB(NAME, N)                                                                      \
    static __attribute__((noinline)) void NAME##_q8_##N(const frnn_rec_args *a, int b0, int j,   \
                                                       const int8_t *W, int ng, const uint8_t *xq, \
                                                       int64_t xs, const float *s, const int32_t *zp, \
                                                       const frnn_wmat *Wm) {                     \
        NAME##_q8(a, N, b0, j, W, ng, xq, xs, s, zp, Wm);                                        \
    }
#if V_RB >= 6
#define FRNN_Q8_NBS(NAME) FRNN_Q8_NB(NAME, 1) FRNN_Q8_NB(NAME, 2) FRNN_Q8_NB(NAME, 3) \
                          FRNN_Q8_NB(NAME, 4) FRNN_Q8_NB(NAME, 5) FRNN_Q8_NB(NAME, 6)
#elif V_RB >= 4
#define FRNN_Q8_NBS(NAME) FRNN_Q8_NB(NAME, 1) FRNN_Q8_NB(NAME, 2) FRNN_Q8_NB(NAME, 3) FRNN_Q8_NB(NAME, 4)
#else
#define FRNN_Q8_NBS(NAME) FRNN_Q8_NB(NAME, 1) FRNN_Q8_NB(NAME, 2) FRNN_Q8_NB(NAME, 3)
#endif
_Static_assert(V_RB == 6 || V_RB == 4 || V_RB == 3, "FRNN_Q8_NBS lists every row count of FRNN_NB_CASES");
#define FRNN_Q8_CELL(NAME, G, EPI) FRNN_Q8_BLOCK(NAME, G, EPI) FRNN_Q8_NBS(NAME)
FRNN_Q8_CELL(lstm_block, 4, lstm_epi)
FRNN_Q8_CELL(gru_block, 3, gru_epi)
FRNN_Q8_CELL(gru0_block1, 2, gru0_epi1)
FRNN_Q8_CELL(gru0_block2, 1, gru0_epi2)
FRNN_Q8_CELL(rnn_block, 1, rnn_epi)
#undef FRNN_Q8_CELL
#undef FRNN_Q8_NBS
#undef FRNN_Q8_NB
#undef FRNN_Q8_BLOCK

enum { Q8_REC_BLOCK = 65536, Q8_REC_ROWS = 256 };   /* bytes of codes, rows, quantized at a time */
/* one pass: rows of HIN (stride HS, K floats) quantized a block at a time, then every tile of
 * this call's units for the block's rows */
#define FRNN_Q8_TILES(BLOCK, G, K, WBASE, HIN, HS)                                                 \
    {                                                                                              \
        const int ng = ((K) + Q_KG - 1) / Q_KG;                                                    \
        const int64_t xs = q8_row_bytes(K);                                                        \
        int CB = (int)(Q8_REC_BLOCK / xs);                                                         \
        if (CB > Q8_REC_ROWS) CB = Q8_REC_ROWS;                                                    \
        for (int cb0 = 0; cb0 < a->B; cb0 += CB) {                                                 \
            const int cb1 = a->B - cb0 < CB ? a->B : cb0 + CB, rows = cb1 - cb0;                    \
            for (int b = cb0; b < cb1; b++)                                                        \
                q8_row((HIN) + (int64_t)b * (HS), K, xq + (b - cb0) * xs, sx + (b - cb0), zp + (b - cb0)); \
            const int nblk = (rows + V_RB - 1) / V_RB, bq = rows / nblk, br = rows % nblk;         \
            for (int jj = a->j0; jj < a->j1; jj += VW) {                                           \
                const int j = a->zig ? a->j1 - VW - (jj - a->j0) : jj;                               \
                const int8_t *W = (const int8_t *)(WBASE).p + (int64_t)(j / VW) * ng * (G) * VW * Q_KG; \
                for (int i = 0, b0 = cb0; i < nblk; i++) {                                         \
                    const int nb = bq + (i < br), o = b0 - cb0;                                    \
                    switch (nb) {                                                                  \
                        FRNN_NB_CASES(FRNN_QCALL_##BLOCK)                                          \
                    default: break;                                                                \
                    }                                                                              \
                    b0 += nb;                                                                      \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
#define FRNN_QCALL(NAME, N) NAME##_q8_##N(a, b0, j, W, ng, xq + o * xs, xs, sx + o, zp + o, &cur)
#define FRNN_QCALL_lstm_block(N) FRNN_QCALL(lstm_block, N)
#define FRNN_QCALL_gru_block(N) FRNN_QCALL(gru_block, N)
#define FRNN_QCALL_gru0_block1(N) FRNN_QCALL(gru0_block1, N)
#define FRNN_QCALL_gru0_block2(N) FRNN_QCALL(gru0_block2, N)
#define FRNN_QCALL_rnn_block(N) FRNN_QCALL(rnn_block, N)

static __attribute__((noinline)) void rec_step_q8(const frnn_rec_args *a) {
    uint8_t xq[Q8_REC_BLOCK] __attribute__((aligned(64)));
    float sx[Q8_REC_ROWS];
    int32_t zp[Q8_REC_ROWS];
    frnn_wmat cur;
    switch (a->cell) {
    case FRNN_CELL_LSTM:
        cur = a->Whh;
        FRNN_Q8_TILES(lstm_block, 4, a->R, a->Whh, a->h, a->h_stride)
        break;
    case FRNN_CELL_GRU:
        cur = a->Whh;
        if (a->lbr) {
            FRNN_Q8_TILES(gru_block, 3, a->H, a->Whh, a->h, a->h_stride)
        } else {
            FRNN_Q8_TILES(gru0_block1, 2, a->H, a->Whh, a->h, a->h_stride)
            cur = a->Whh_n;
            FRNN_Q8_TILES(gru0_block2, 1, a->H, a->Whh_n, a->scratch, (int64_t)a->Hp)
        }
        break;
    default:
        cur = a->Whh;
        FRNN_Q8_TILES(rnn_block, 1, a->R, a->Whh, a->h, a->h_stride)
        break;
    }
}
#undef FRNN_QCALL

/* every tile and block of rows, fp32 loads: fp32 weights, int8 stored as floats (engine.c,
 * storage_wt), or bf16 / int8 widened tile by tile into `wide` */
static __attribute__((noinline)) void rec_step_tiles(const frnn_rec_args *a, float *wide) {
    const int WT = FRNN_W_F32;
    const int nblk = (a->B + V_RB - 1) / V_RB, bq = a->B / nblk, br = a->B % nblk;
    FRNN_CELLS(FRNN_TILES)
}

/* One row over bf16 or int8 weights, widened in registers (a stream step reads the weights once:
 * widening them into a scratch first would only add its stores) */
#define FRNN_ROW1(BLOCK, G, K, WBASE)                                                      \
    for (int jj = a->j0; jj < a->j1; jj += VW) {                                           \
        const int j = a->zig ? a->j1 - VW - (jj - a->j0) : jj, b0 = 0;                       \
        const char *W = (const char *)(WBASE).p + (int64_t)(j / VW) * (K) * (G) * VW * W_SIZE(WT); \
        const float *S = (WBASE).scale;                                                     \
        FRNN_CALL_##BLOCK(1);                                                               \
    }
#define FRNN_ROW1_FN(W_)                                                                    \
    static __attribute__((noinline)) void rec_step_row1_##W_(const frnn_rec_args *a) {     \
        const int WT = W_;                                                                  \
        FRNN_CELLS(FRNN_ROW1)                                                               \
    }
FRNN_ROW1_FN(1) FRNN_ROW1_FN(2)
#undef FRNN_ROW1_FN

/* the rows one by one (bf16 / int8 weights when the scratch to widen them cannot be had): each
 * row is the one-row step over its own rows of every buffer, the same bits as in any batch */
static void rec_step_rows(const frnn_rec_args *a) {
    for (int b = 0; b < a->B; b++) {
        frnn_rec_args r = *a;
        r.B = 1;
        if (a->xp_rows) r.xp_rows = a->xp_rows + (int64_t)b * a->xp_stride;
        else r.xp = a->xp + (int64_t)b * a->xp_stride;
        r.h = a->h + (int64_t)b * a->h_stride;
        r.c = a->c ? a->c + (int64_t)b * a->Hp : NULL;
        r.h_out = a->h_out + (int64_t)b * a->h_out_stride;
        r.c_out = a->c_out ? a->c_out + (int64_t)b * a->Hp : NULL;
        if (a->Whh.wt == FRNN_W_I8) rec_step_row1_2(&r);
        else rec_step_row1_1(&r);
    }
}

void ISA_SUFFIX(rec_step)(const frnn_rec_args *a) {
    const int wt = a->Whh.wt;
    if (wt == FRNN_W_Q8) {
        rec_step_q8(a);
        return;
    }
    if (wt == FRNN_W_BF16 || wt == FRNN_W_I8) {
        if (a->B == 1) {
            if (wt == FRNN_W_I8) rec_step_row1_2(a);
            else rec_step_row1_1(a);
            return;
        }
        void *wide = NULL;
        const int G = a->cell == FRNN_CELL_LSTM ? 4 : a->cell == FRNN_CELL_GRU ? 3 : 1;
        const int64_t n = (int64_t)(a->cell == FRNN_CELL_GRU ? a->H : a->R) * G * VW;  /* >= any pass's tile */
        if (posix_memalign(&wide, 64, (size_t)n * 4)) {
            rec_step_rows(a);
            return;
        }
        rec_step_tiles(a, wide);
        free(wide);
        return;
    }
#if V_TILE_LANES
    if (a->B == 1 && tile_floats(a) <= FRNN_TILE_LANES_MAX) {
        rec_step_groups(a);
        return;
    }
#endif
    rec_step_tiles(a, NULL);
}
#endif
