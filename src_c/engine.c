/* engine.c - models, weight packing, the whole-sequence driver and streams (ISA-independent:
 * every flop goes through the kernel table the model bound at creation, see dispatch.c).
 *
 * Whole sequences, per recurrent layer and direction: a packed GEMM computes the input part of
 * every gate for every row and a chunk of steps (xp, biases folded in; rec_tc: about 256 KiB, so
 * it stays in L2), then the recurrence runs through those steps one by one (rec_step: recurrent
 * GEMV/GEMM with the gate math in its epilogue), then the next chunk. Layers read their input in
 * place and write into two ping-pong buffers; everything stays batch-major (row b*T + t), the
 * recurrence reads xp and writes outputs through row strides, so nothing is ever transposed.
 *
 * Inactive steps (lengths: t >= lengths[b]; Keras masks) keep the state (h and c copied back) and
 * output zeros (lengths, or masked_output=zero) or the carried output (Keras default).
 *
 * Streams own a context (buffers + state) allocated once; a step is run(T=1) over it: no
 * allocation, no Python, one call for the whole pipeline.
 *
 * Threads (set_num_threads, the workers of pool.c): a big batch is cut into one chunk of rows
 * per thread, each with its own context; a small batch (and every stream step) runs as one chunk
 * whose recurrent layers split their work (run_rec: directions on threads, or the hidden units
 * of each step). Rows are independent and every kernel sums in a fixed order per output, so the
 * results never depend on the thread count or the split.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"
#include "kernels.h"
#include "pool.h"

enum { L_EMB, L_MASK, L_DENSE, L_ACT, L_REC, L_POOL, L_CONV, L_POOL1, L_REPEAT, L_FLAT, L_ATTN };
#define FRNN_EMB_FUSE_MAX_BYTES (64.0 * 1024 * 1024)

/* one pool of a pooling layer: kind over input columns [start, start + width); an attention
 * term reads its score in column score, with its activation, eps and bias per position */
typedef struct {
    int kind, start, width, score, nbias;
    frnn_act act; float eps, *bias;
} pool_term;

typedef struct {
    int type, in, out;
    /* embedding */
    float *table; int vocab, mask_zero; int64_t mask_id;   /* mask_zero 1: Keras (id 0 masks every
                                                             layer), 2: id mask_id masks pools only */
    /* masking */
    float mask_value;
    /* dense / activation (and conv1d's weights); own: the columns they compute (out counts the
       carried ones after them: ncarry ranges [carry[2i], carry[2i+1]) of the input) */
    frnn_wmat Wp; float *bp; frnn_act act;
    int own, ncarry, *carry;
    /* recurrent */
    frnn_rec_desc d;               /* options; weight pointers cleared */
    int G, H, R, Hp, Rp, ndir, nx, nr, state0, slot0;   /* nx = ndir*G*Hp; nr: W_ih's full panel width */
    frnn_wmat Wih_p[2];            /* per direction: N = G*Hp columns (padded gate blocks) */
    float *bih_p[2];
    float *emb_xp;                 /* first recurrent layer right after the Embedding: the input
                                      projection of every token, (vocab, nx), computed at load */
    int fused;                     /* embedding: its output goes only into the layer's emb_xp */
    frnn_wmat Whh_p[2], Whh_n_p[2], Whr_p[2];
    float *bhn[2], *peep[2];
    float *h0[2], *c0[2];          /* per direction: the initial h (R floats) and c (H), NULL: zeros */
    /* pooling over time: its terms side by side; its state (one slot, R floats a row: each
       term's running values (pool_width), then the count of steps taken) */
    pool_term terms[FRNN_POOL_TERMS]; int npool, pool_over, pool_query;   /* pool_query: a FRNN_POOL_QUERY term */
    /* windows over time (conv1d, pool1d): kernel, stride, dilation, padding; repeat: n */
    int win, stride, dil, pad_mode, pad_b, pad_a, p1kind, count_pad, repeat_n;   /* flatten: repeat_n steps */
    /* self-attention: heads over the own columns of each of q, k and v (the first 3 * own of in), causal, scale */
    int heads, causal; float scale;
} layer;

static int changes_time(const layer *L) {
    return L->type == L_CONV || L->type == L_POOL1 || L->type == L_REPEAT || L->type == L_FLAT;
}

/* a window whose output has as many steps as its input, for every T (stride 1, padded by its
 * span - 1): step t of a row is still step t, so lengths keep their meaning through it */
static int keeps_steps(const layer *L) {
    if (L->type != L_CONV && L->type != L_POOL1) return !changes_time(L);
    const int64_t eff = (int64_t)(L->win - 1) * L->dil + 1;
    return L->stride == 1 && (L->pad_mode == FRNN_PAD_SAME || L->pad_mode == FRNN_PAD_CAUSAL ||
                              (L->pad_mode == FRNN_PAD_EXPLICIT && (int64_t)L->pad_b + L->pad_a == eff - 1));
}

/* The padding and output steps of a window layer for T input steps (*To 0: T too short). */
static void window_steps(const layer *L, int T, int *pb, int *pa, int *To) {
    const int64_t eff = (int64_t)(L->win - 1) * L->dil + 1, s = L->stride;
    int64_t b = 0, a = 0;
    if (L->pad_mode == FRNN_PAD_CAUSAL) b = eff - 1;
    else if (L->pad_mode == FRNN_PAD_EXPLICIT) { b = L->pad_b; a = L->pad_a; }
    else if (L->pad_mode == FRNN_PAD_SAME) {
        const int64_t n = (T + s - 1) / s, total = (n - 1) * s + eff - T;
        b = total > 0 ? total / 2 : 0;
        a = total > 0 ? total - b : 0;
    }
    *pb = (int)b; *pa = (int)a;
    const int64_t span = (int64_t)T + b + a;
    *To = span < eff ? 0 : (int)((span - eff) / s + 1);
}

/* steps after layer L for T steps before it */
static int layer_steps(const layer *L, int T) {
    int pb, pa, To;
    if (L->type == L_REPEAT) return L->repeat_n ? L->repeat_n : T;   /* T passes a pool unchanged */
    if (L->type == L_FLAT) return T == L->repeat_n;      /* one vector, of exactly that many steps */
    if (L->type != L_CONV && L->type != L_POOL1) return T;
    window_steps(L, T, &pb, &pa, &To);
    return To;
}

/* a layer with states (slots of h and c buffers): recurrent, or pooling over time */
static int has_state(const layer *L) { return L->type == L_REC || L->type == L_POOL; }
static int num_layer_states(const layer *L) {
    return L->type == L_REC ? (L->d.cell == FRNN_CELL_LSTM ? 2 : 1) : L->type == L_POOL;
}

struct frnn_model {
    const frnn_kernels *k;
    int isa, vw, finalized;
    int wt;                       /* FRNN_W_*: the precision layers added from now on pack at */
    size_t wide_max;              /* matrices up to this many fp32 bytes pack as fp32 (storage_wt) */
    int nlayers, cap;
    layer *L;
    int input_ids, input_size, output_size, output_seq;
    int nstates, nslots, can_stream, emb_fused;
    int max_w, max_Hp, max_Rp, max_merge;
    int time_changes, max_cols;   /* a layer changes the steps; conv1d im2col row width */
    int keeps_steps;              /* every such layer is a window of stride 1 padded to keep T steps */
    int has_init;                 /* a recurrent layer starts from a state other than zeros */
};

/* ---- allocation ------------------------------------------------------------------------ */
static void *amalloc(size_t n) {
    void *p = NULL;
    if (n == 0) n = 64;
    if (posix_memalign(&p, 64, (n + 63) & ~(size_t)63)) return NULL;
    return p;
}
static void *azalloc(size_t n) {
    void *p = amalloc(n);
    if (p) memset(p, 0, n);
    return p;
}
static int rup(int x, int m) { return (x + m - 1) / m * m; }
/* caller-provided inputs may be unaligned (NumPy allows it): read through memcpy */
static float ld_f32(const char *p) { float v; memcpy(&v, p, 4); return v; }
static double ld_f64(const char *p) { double v; memcpy(&v, p, 8); return v; }

/* ---- packing (once, at add time, for the model's ISA) ---------------------------------- */
/* B (N, K) row-major -> panels of k->gemm_nr(columns left) columns, the panel at column n0 at
 * n0 * K (gemm/impl.h). rowmap(n) gives the source row of packed column n or -1 for a zero
 * column. */
typedef int (*rowmap_fn)(const layer *L, int n);

/* Reduced precision (kernels.h, frnn_wmat; fastrnn/precision.py is the same arithmetic): bf16 is
 * the nearest bfloat16 (ties to even); int8 is q = rint(w / s) with s = max |row| / 127 per row
 * of W. Weights that already lie on the grid (a model made with Model.with_precision) come back
 * exactly. */
static float row_scale(const float *s, int K) {
    float mx = 0.0f;
    for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(s[k]));
    return mx / 127.0f;
}
/* element i of a packed matrix of storage st: v at precision wt (bf16, int8 with its row's scale)
 * in its own format, or (st F32 / I8W, small matrices: storage_wt) as fp32 */
static void put_w(int wt, int st, void *P, size_t i, float v, float scale) {
    if (wt == FRNN_W_BF16) {
        uint32_t u;
        memcpy(&u, &v, 4);
        u = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        if (st == FRNN_W_BF16) { ((uint16_t *)P)[i] = (uint16_t)u; return; }
        u <<= 16;
        memcpy(&v, &u, 4);
    } else if (wt == FRNN_W_I8) {
        double q = scale > 0.0f ? rint((double)v / scale) : 0.0;
        q = q > 127 ? 127 : q < -127 ? -127 : q;
        if (st == FRNN_W_I8 || st == FRNN_W_Q8) { ((int8_t *)P)[i] = (int8_t)q; return; }
        v = (float)q;
    }
    ((float *)P)[i] = v;
}

/* Where a matrix's bytes are not what a step waits for, its reduced values are packed as fp32
 * (bf16 values, or int8 q with the scales after the sum: FRNN_W_I8W) -- the same numbers, the
 * fp32 kernels' speed. Measured on Zen 3 (AVX2), LSTM 64 stream step (W_ih, W_hh 64 KiB each in
 * fp32): bf16 panels 1.08x, int8 0.98-1.01x the fp32 time, both widened in registers, where the
 * weights come from L1/L2 anyway. Above this size the step streams the weights and 2 or 1 bytes
 * a weight win (LSTM 256: 0.72x / 0.60x). */
#define FRNN_WIDE_PACK_MAX (128 * 1024)
/* int8 matrices above the limit run on the integer kernels (FRNN_W_Q8), which quantize the other
 * operand: where a step streams the weights, their bytes win (without VNNI, on AVX2 / AVX-512,
 * LSTM 256 stream 0.40x / 0.27x the fp32 time; batches 1.01-1.03x: vpmaddwd and an add do the
 * work of two FMAs, no faster). At or below it, without VNNI, int8 is weight-only (I8W: fp32
 * speed, fp32 activations: the more accurate). With VNNI, vpdpbusd's 64 products a cycle win at
 * every size (Sapphire Rapids, 1 thread: LSTM 64 stream 0.50x, Embedding -> LSTM 32 batch 128
 * 0.93x, where I8W gave 0.98x / 1.04x), so every int8 matrix runs on them (limit 0 for int8).
 * The choice is the model's, made at packing: every batch size gets the same kernel (batch
 * invariance). */
#define FRNN_WIDE_DEFAULT ((size_t)-1)
/* FASTRNN_PACK_WIDE_BYTES (read when a model is created; the tests set 0 to run the reduced
 * kernels on small matrices, or a large value for the wide ones), else FRNN_WIDE_DEFAULT */
static size_t wide_pack_max(void) {
    const char *e = getenv("FASTRNN_PACK_WIDE_BYTES");
    if (!e || !*e) return FRNN_WIDE_DEFAULT;
    char *end;
    unsigned long long v = strtoull(e, &end, 10);
    return *end ? FRNN_WIDE_DEFAULT : (size_t)v;
}
/* elems: of the whole matrix the kernel sees as one (a GRU's W_hh packed in two passes: both) */
static int storage_wt(const frnn_model *m, size_t elems) {
    size_t max = m->wide_max;
    if (max == FRNN_WIDE_DEFAULT)
        max = m->wt == FRNN_W_I8 && m->isa == FRNN_ISA_AVX512_VNNI ? 0 : FRNN_WIDE_PACK_MAX;
    if (m->wt == FRNN_W_F32 || elems * 4 > max) return m->wt;
    return m->wt == FRNN_W_I8 ? FRNN_W_I8W : FRNN_W_F32;
}
static void wmat_free(frnn_wmat *w) {
    free((void *)w->p); free((void *)w->scale); free((void *)w->csum);
    w->p = NULL; w->scale = NULL; w->csum = NULL;
}
/* the columns from n0 on of a GEMM's packed matrix with K rows (n0: a panel's start) */
static frnn_wmat wmat_cols(const frnn_model *m, const frnn_wmat *w, int n0, int K) {
    const int64_t kp = w->wt == FRNN_W_Q8 ? (int64_t)rup(K, m->k->q8_kg()) : K;
    return (frnn_wmat){(const char *)w->p + n0 * kp * W_SIZE(w->wt), w->scale ? w->scale + n0 : NULL, w->wt,
                       w->csum ? w->csum + n0 : NULL};
}

/* B (N, K) row-major -> panels of k->gemm_nr(columns left) columns, the panel at column n0 at
 * element n0 * K (gemm/impl.h), elements of precision wt (int8: scales padded like a bias).
 * rowmap(n) gives the source row of packed column n or -1 for a zero column. Returns 0 when out
 * of memory (nothing left allocated). */
static int pack_gemm(frnn_wmat *out, const frnn_model *m, const float *W, int N, int K,
                     const layer *L, rowmap_fn map) {
    const frnn_kernels *k = m->k;
    const int wt = m->wt;
    const size_t Npad = (size_t)rup(N, k->gemm_nr(INT_MAX));
    int st = storage_wt(m, Npad * K);
    /* int8 where the bytes matter: the integer kernel (kernels.h FRNN_W_Q8), its k in groups of kg */
    if (st == FRNN_W_I8 && K <= FRNN_Q8_K_MAX) st = FRNN_W_Q8;
    const int kg = st == FRNN_W_Q8 ? k->q8_kg() : 1;
    const size_t KP = (size_t)rup(K, kg);
    void *P = azalloc(Npad * KP * W_SIZE(st));
    float *S = wt == FRNN_W_I8 ? azalloc(Npad * sizeof(float)) : NULL;
    int32_t *CS = st == FRNN_W_Q8 ? azalloc(Npad * sizeof(int32_t)) : NULL;
    if (!P || (wt == FRNN_W_I8 && !S) || (st == FRNN_W_Q8 && !CS)) { free(P); free(S); free(CS); return 0; }
    for (int n0 = 0, nr; n0 < N; n0 += nr) {
        nr = k->gemm_nr(N - n0);
        for (int n = n0; n < N && n < n0 + nr; n++) {
            int src = map ? map(L, n) : n;
            if (src < 0) continue;
            const float *s = W + (size_t)src * K;
            const float sc = S ? (S[n] = row_scale(s, K)) : 0.0f;
            for (int k = 0; k < K; k++) {   /* element (k, n): group k / kg, column n, k % kg */
                const size_t i = n0 * KP + ((size_t)(k / kg) * nr + (n - n0)) * kg + k % kg;
                put_w(wt, st, P, i, s[k], sc);
                if (CS) CS[n] += ((const int8_t *)P)[i];
            }
        }
    }
    *out = (frnn_wmat){P, S, st, CS};
    return 1;
}

/* W_hh rows of gates g0..g0+G-1 -> tiles of vw units: [tile][k][gate][lane], elements of
 * precision wt (int8: scales [gate][Hp]). Returns 0 when out of memory. */
static int pack_rec(frnn_wmat *out, const frnn_model *m, const float *W, int H, int K, int g0, int G,
                    int Gall) {
    const int wt = m->wt, vw = m->vw;
    int Hp = rup(H, vw);
    int st = storage_wt(m, (size_t)Hp * K * Gall);
    if (st == FRNN_W_I8 && K <= FRNN_Q8_K_MAX) st = FRNN_W_Q8;   /* as pack_gemm */
    const int kg = st == FRNN_W_Q8 ? m->k->q8_kg() : 1;
    const size_t KP = (size_t)rup(K, kg);
    void *P = azalloc((size_t)Hp * KP * G * W_SIZE(st));
    float *S = wt == FRNN_W_I8 ? azalloc((size_t)G * Hp * sizeof(float)) : NULL;
    int32_t *CS = st == FRNN_W_Q8 ? azalloc((size_t)G * Hp * sizeof(int32_t)) : NULL;
    if (!P || (wt == FRNN_W_I8 && !S) || (st == FRNN_W_Q8 && !CS)) { free(P); free(S); free(CS); return 0; }
    for (int u = 0; u < H; u++)
        for (int g = 0; g < G; g++) {
            const float *s = W + (size_t)((g0 + g) * H + u) * K;
            const float sc = S ? (S[(size_t)g * Hp + u] = row_scale(s, K)) : 0.0f;
            /* element k: [tile][k / kg][gate][lane][k % kg] (kg = 1: [tile][k][gate][lane]) */
            const size_t at = (size_t)(u / vw) * KP * G * vw + ((size_t)g * vw + u % vw) * kg;
            for (int k = 0; k < K; k++) {
                const size_t i = at + (size_t)(k / kg) * G * vw * kg + k % kg;
                put_w(wt, st, P, i, s[k], sc);
                if (CS) CS[(size_t)g * Hp + u] += ((const int8_t *)P)[i];
            }
        }
    *out = (frnn_wmat){P, S, st, CS};
    return 1;
}

/* ---- model building -------------------------------------------------------------------- */
frnn_status frnn_model_new(frnn_model **out) {
    frnn_model *m = calloc(1, sizeof *m);
    if (!m) return FRNN_ENOMEM;
    m->isa = frnn_isa_current();
    m->k = frnn_kernels_for(m->isa);
    m->vw = m->k->vw();
    m->wide_max = wide_pack_max();
    *out = m;
    return FRNN_OK;
}

frnn_status frnn_model_set_precision(frnn_model *m, int wt) {
    if (m->finalized || m->nlayers) return FRNN_ESTATE;
    if (wt < FRNN_W_F32 || wt > FRNN_W_I8) return FRNN_EINVAL;
    m->wt = wt;
    return FRNN_OK;
}

static void layer_free(layer *L) {
    for (int k = 0; k < L->npool; k++) free(L->terms[k].bias);
    free(L->carry); free(L->table); wmat_free(&L->Wp); free(L->bp); free(L->emb_xp);
    for (int d = 0; d < 2; d++) {
        wmat_free(&L->Wih_p[d]); free(L->bih_p[d]);
        wmat_free(&L->Whh_p[d]); wmat_free(&L->Whh_n_p[d]); free(L->bhn[d]); free(L->peep[d]);
        wmat_free(&L->Whr_p[d]); free(L->h0[d]); free(L->c0[d]);
    }
}

void frnn_model_free(frnn_model *m) {
    if (!m) return;
    for (int i = 0; i < m->nlayers; i++) layer_free(&m->L[i]);
    free(m->L);
    free(m);
}

static layer *new_layer(frnn_model *m, int type) {
    if (m->finalized) return NULL;
    if (m->nlayers == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        layer *L = realloc(m->L, (size_t)cap * sizeof *L);
        if (!L) return NULL;
        m->L = L; m->cap = cap;
    }
    layer *L = &m->L[m->nlayers];
    memset(L, 0, sizeof *L);
    L->type = type;
    return L;
}
#define NEW_LAYER(L, m, type)                                           \
    if ((m)->finalized) return FRNN_ESTATE;                             \
    layer *L = new_layer(m, type);                                      \
    if (!L) return FRNN_ENOMEM;

frnn_status frnn_model_add_embedding(frnn_model *m, int vocab, int dim, const float *table,
                                     int mask_zero) {
    if (vocab < 1 || dim < 1 || !table || m->nlayers) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_EMB)
    L->table = amalloc((size_t)vocab * dim * sizeof(float));
    if (!L->table) return FRNN_ENOMEM;
    memcpy(L->table, table, (size_t)vocab * dim * sizeof(float));
    L->vocab = vocab; L->out = dim; L->mask_zero = mask_zero;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_set_embedding_pool_mask(frnn_model *m, int64_t id) {
    if (!m || m->finalized) return FRNN_ESTATE;
    if (m->nlayers != 1 || m->L[0].type != L_EMB || m->L[0].mask_zero || id < 0) return FRNN_EINVAL;
    m->L[0].mask_zero = 2; m->L[0].mask_id = id;
    return FRNN_OK;
}

frnn_status frnn_model_add_masking(frnn_model *m, int size, float mask_value) {
    if (size < 1) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_MASK)
    L->in = L->out = size; L->mask_value = mask_value;
    m->nlayers++;
    return FRNN_OK;
}

/* width: the columns the activation acts on (mul_halves needs an even number) */
static int act_ok(frnn_act a, int rowwise_ok, int width) {
    if (a.kind == FRNN_ACT_MUL_HALVES) return rowwise_ok && width % 2 == 0;
    if (a.kind == FRNN_ACT_CLIP) return a.alpha <= a.beta;          /* false for a NaN bound */
    return (a.kind >= 0 && a.kind <= FRNN_ACT_HARDSWISH) ||
           (rowwise_ok && (a.kind == FRNN_ACT_SOFTMAX || a.kind == FRNN_ACT_LOG_SOFTMAX ||
                           (a.kind == FRNN_ACT_LAYER_NORM && isfinite(a.alpha) && a.alpha >= 0) ||
                           (a.kind == FRNN_ACT_L2_NORMALIZE && isfinite(a.alpha) && a.alpha >= 0 &&
                            (a.beta == 0 || a.beta == 1))));
}

/* L's GEMM weights W (out, K) packed, and its bias (NULL: none) padded to the panel width; the
 * layer is then counted. On failure nothing is left allocated. */
static frnn_status gemm_layer(frnn_model *m, layer *L, const float *W, int out, int K, const float *b) {
    if (!pack_gemm(&L->Wp, m, W, out, K, NULL, NULL)) return FRNN_ENOMEM;
    if (b) {
        L->bp = azalloc((size_t)rup(out, m->k->gemm_nr(INT_MAX)) * sizeof(float));
        if (!L->bp) { wmat_free(&L->Wp); return FRNN_ENOMEM; }
        memcpy(L->bp, b, (size_t)out * sizeof(float));
    }
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_dense(frnn_model *m, int in, int out, const float *W, const float *b,
                                 frnn_act act) {
    if (in < 1 || out < 1 || !W || !act_ok(act, 1, out)) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_DENSE)
    L->in = in; L->out = L->own = out; L->act = act;
    return gemm_layer(m, L, W, out, in, b);
}

frnn_status frnn_model_add_activation(frnn_model *m, int size, frnn_act act) {
    if (size < 1 || !act_ok(act, 1, size)) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_ACT)
    L->in = L->out = L->own = size; L->act = act;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_carry(frnn_model *m, int start, int stop) {
    if (m->finalized) return FRNN_ESTATE;
    if (!m->nlayers) return FRNN_EINVAL;
    layer *L = &m->L[m->nlayers - 1];
    const int rec = L->type == L_REC && L->d.return_sequences;    /* per step: a sequence out */
    const int fixed_in = L->type == L_DENSE || L->type == L_ATTN || rec;
    if ((L->type != L_DENSE && L->type != L_ACT && L->type != L_ATTN && !rec) || start < 0 || stop <= start ||
        (fixed_in && stop > L->in) || (int64_t)L->out + (stop - start) > INT32_MAX / 4)
        return FRNN_EINVAL;
    int *c = realloc(L->carry, (size_t)(L->ncarry + 1) * 2 * sizeof(int));
    if (!c) return FRNN_ENOMEM;
    L->carry = c;
    c[2 * L->ncarry] = start; c[2 * L->ncarry + 1] = stop;
    L->ncarry++;
    L->out += stop - start;
    if (stop > L->in) L->in = stop;          /* an activation's input reaches its last carried column */
    return FRNN_OK;
}

/* The carried columns of rows of `in` after each output row's own ones. */
static void carry_rows(const layer *L, const float *in, int64_t ld, float *out, int64_t rows) {
    if (!L->ncarry) return;
    for (int64_t i = 0; i < rows; i++) {
        float *o = out + i * L->out + L->own;
        for (int r = 0; r < L->ncarry; r++) {
            const int a = L->carry[2 * r], n = L->carry[2 * r + 1] - a;
            memcpy(o, in + i * ld + a, (size_t)n * 4);
            o += n;
        }
    }
}

/* The floats of pool term k's running values in a row of its state. */
static int pool_width(const layer *L, int k) {
    const pool_term *t = &L->terms[k];
    return t->kind == FRNN_POOL_ATTN || t->kind == FRNN_POOL_QUERY ? 2 * t->width + 3
         : t->kind == FRNN_POOL_FIRST ? t->width + 1 : t->width;
}

frnn_status frnn_model_add_pool_terms(frnn_model *m, int in, int nterms, const int *kinds, const int *starts,
                                      const int *widths, const int *scores, int over) {
    if (in < 1 || nterms < 1 || nterms > FRNN_POOL_TERMS || !kinds || !starts || !widths || !scores ||
        over < FRNN_POOL_VALID || over > FRNN_POOL_LONGEST)
        return FRNN_EINVAL;
    int64_t out = 0, R = 1;
    for (int k = 0; k < nterms; k++) {
        if (kinds[k] < FRNN_POOL_MEAN || kinds[k] > FRNN_POOL_QUERY || starts[k] < 0 || widths[k] < 1 ||
            (int64_t)starts[k] + widths[k] > in || (kinds[k] == FRNN_POOL_ATTN && (scores[k] < 0 || scores[k] >= in)) ||
            (kinds[k] == FRNN_POOL_QUERY && (scores[k] < 0 || scores[k] > widths[k])))
            return FRNN_EINVAL;
        out += widths[k];
        R += kinds[k] == FRNN_POOL_ATTN || kinds[k] == FRNN_POOL_QUERY ? 2 * (int64_t)widths[k] + 3
             : widths[k] + (kinds[k] == FRNN_POOL_FIRST);
    }
    if (out + R + in > INT32_MAX / 4) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_POOL)
    L->in = in; L->out = (int)out;
    L->npool = nterms; L->pool_over = over;
    for (int k = 0; k < nterms; k++) {
        pool_term *t = &L->terms[k];
        t->kind = kinds[k]; t->start = starts[k]; t->width = widths[k];
        t->score = kinds[k] == FRNN_POOL_ATTN || kinds[k] == FRNN_POOL_QUERY ? scores[k] : -1;
        L->pool_query |= kinds[k] == FRNN_POOL_QUERY;
        t->act.kind = FRNN_ACT_LINEAR;
    }
    L->ndir = 1;
    L->R = L->Rp = (int)R;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_pool(frnn_model *m, int size, int nkinds, const int *kinds, int over) {
    if (size < 1 || nkinds < 1 || nkinds > 3 || !kinds) return FRNN_EINVAL;
    int natt = 0, starts[3], widths[3], scores[3] = {0, 0, 0};
    for (int k = 0; k < nkinds; k++) natt += kinds[k] == FRNN_POOL_ATTN;
    if (natt > 1 || (int64_t)size * (nkinds + 2) + 4 > INT32_MAX / 4) return FRNN_EINVAL;
    for (int k = 0; k < nkinds; k++) { starts[k] = natt; widths[k] = size; }
    return frnn_model_add_pool_terms(m, size + natt, nkinds, kinds, starts, widths, scores, over);
}

frnn_status frnn_model_set_pool_term_attention(frnn_model *m, int term, frnn_act act, float eps, int nbias,
                                               const float *bias) {
    if (m->finalized) return FRNN_ESTATE;
    layer *L = m->nlayers ? &m->L[m->nlayers - 1] : NULL;
    if (!L || L->type != L_POOL || term < 0 || term >= L->npool ||
        (L->terms[term].kind != FRNN_POOL_ATTN && L->terms[term].kind != FRNN_POOL_QUERY) ||
        !act_ok(act, 0, 1) || !isfinite(eps) || nbias < 0 || (nbias > 0 && !bias) ||
        (L->terms[term].kind == FRNN_POOL_QUERY && (eps != 0 || nbias)))
        return FRNN_EINVAL;
    float *copy = NULL;
    if (nbias) {
        if (!(copy = malloc((size_t)nbias * sizeof(float)))) return FRNN_ENOMEM;
        memcpy(copy, bias, (size_t)nbias * sizeof(float));
    }
    pool_term *t = &L->terms[term];
    free(t->bias);
    t->bias = copy; t->nbias = nbias; t->act = act; t->eps = eps;
    return FRNN_OK;
}

frnn_status frnn_model_set_pool_attention(frnn_model *m, frnn_act act, float eps, int nbias, const float *bias) {
    if (m->finalized) return FRNN_ESTATE;
    const layer *L = m->nlayers ? &m->L[m->nlayers - 1] : NULL;
    for (int k = 0; L && L->type == L_POOL && k < L->npool; k++)
        if (L->terms[k].kind == FRNN_POOL_ATTN) return frnn_model_set_pool_term_attention(m, k, act, eps, nbias, bias);
    return FRNN_EINVAL;
}

static int pad_ok(int mode, int b, int a) {
    return mode >= FRNN_PAD_VALID && mode <= FRNN_PAD_EXPLICIT && b >= 0 && a >= 0 && b <= 1 << 20 && a <= 1 << 20;
}

frnn_status frnn_model_add_conv1d(frnn_model *m, int in, int out, int kernel, int stride, int dilation,
                                  int pad_mode, int pad_before, int pad_after, const float *W,
                                  const float *b, frnn_act act) {
    if (in < 1 || out < 1 || kernel < 1 || stride < 1 || dilation < 1 || !W || !act_ok(act, 1, out) ||
        !pad_ok(pad_mode, pad_before, pad_after) || (int64_t)kernel * in > INT32_MAX / 4 ||
        (int64_t)(kernel - 1) * dilation > 1 << 20)
        return FRNN_EINVAL;
    NEW_LAYER(L, m, L_CONV)
    const int K = kernel * in;
    float *Wk = malloc((size_t)out * K * sizeof(float));   /* (out, kernel, in): an im2col row's order */
    if (!Wk) return FRNN_ENOMEM;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            for (int j = 0; j < kernel; j++)
                Wk[((size_t)o * kernel + j) * in + i] = W[((size_t)o * in + i) * kernel + j];
    L->in = in; L->out = out; L->act = act;
    L->win = kernel; L->stride = stride; L->dil = dilation;
    L->pad_mode = pad_mode; L->pad_b = pad_before; L->pad_a = pad_after;
    const frnn_status st = gemm_layer(m, L, Wk, out, K, b);
    free(Wk);
    return st;
}

frnn_status frnn_model_add_pool1d(frnn_model *m, int size, int kind, int window, int stride, int pad_mode,
                                  int pad_before, int pad_after, int count_pad) {
    if (size < 1 || window < 1 || stride < 1 || (kind != FRNN_POOL1D_MAX && kind != FRNN_POOL1D_AVG) ||
        pad_mode == FRNN_PAD_CAUSAL || !pad_ok(pad_mode, pad_before, pad_after) || window > 1 << 20)
        return FRNN_EINVAL;
    NEW_LAYER(L, m, L_POOL1)
    L->in = L->out = size;
    L->win = window; L->stride = stride; L->dil = 1; L->p1kind = kind; L->count_pad = !!count_pad;
    L->pad_mode = pad_mode; L->pad_b = pad_before; L->pad_a = pad_after;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_repeat(frnn_model *m, int size, int n) {
    if (size < 1 || n < 0 || n > 1 << 24) return FRNN_EINVAL;     /* n 0: the steps the sequence had */
    NEW_LAYER(L, m, L_REPEAT)
    L->in = L->out = size;
    L->repeat_n = n;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_flatten(frnn_model *m, int size, int steps) {
    if (size < 1 || steps < 1 || (int64_t)size * steps > 1 << 28) return FRNN_EINVAL;
    NEW_LAYER(L, m, L_FLAT)
    L->in = size; L->out = size * steps;
    L->repeat_n = steps;
    m->nlayers++;
    return FRNN_OK;
}

frnn_status frnn_model_add_attention(frnn_model *m, int size, int heads, int causal, float scale, int in) {
    if (size < 1 || heads < 1 || size % heads || !(scale > 0.0f) || !isfinite(scale) || size > INT32_MAX / 4 ||
        in < 3 * size)
        return FRNN_EINVAL;
    NEW_LAYER(L, m, L_ATTN)
    L->in = in; L->out = L->own = size;      /* columns past q, k, v: carried (frnn_model_add_carry) or not read */
    L->heads = heads; L->causal = !!causal; L->scale = scale;
    m->nlayers++;
    return FRNN_OK;
}

int frnn_model_output_steps(const frnn_model *m, int T) {
    for (int l = 0; l < m->nlayers && T > 0; l++) T = layer_steps(&m->L[l], T);
    return T;
}

int frnn_model_changes_time(const frnn_model *m) { return m->time_changes; }
int frnn_model_keeps_steps(const frnn_model *m) { return m->keeps_steps; }

/* the most steps any layer sees or makes for T input steps */
static int max_steps(const frnn_model *m, int T) {
    int mx = T;
    for (int l = 0; l < m->nlayers && T > 0; l++) {
        T = layer_steps(&m->L[l], T);
        if (T > mx) mx = T;
    }
    return mx;
}

/* packed column n of a direction's xp GEMM -> row of its W_ih */
static int rec_rowmap(const layer *L, int n) {
    int g = n / L->Hp, u = n % L->Hp;
    return u < L->H ? g * L->H + u : -1;
}

frnn_status frnn_model_add_recurrent(frnn_model *m, const frnn_rec_desc *d) {
    static const int gates[] = {1, 4, 3};
    if (!d || d->cell < 0 || d->cell > 2 || d->direction < 0 || d->direction > 2 ||
        d->merge < 0 || d->merge > 3 || d->input_size < 1 || d->hidden_size < 1 || d->proj_size < 0 ||
        (d->proj_size && d->cell != FRNN_CELL_LSTM))
        return FRNN_EINVAL;
    int ndir = d->direction == FRNN_DIR_BIDIRECTIONAL ? 2 : 1;
    for (int i = 0; i < ndir; i++) {
        const frnn_rec_weights *w = &d->w[i];
        if (!w->W_ih || !w->W_hh || (!w->b_ih) != (!w->b_hh) || (!w->b_ih) != (!d->w[0].b_ih) ||
            (!w->P) != (!d->w[0].P) || (w->P && d->cell != FRNN_CELL_LSTM) ||
            (!w->W_hr) != (d->proj_size == 0) || (w->c0 && d->cell != FRNN_CELL_LSTM))
            return FRNN_EINVAL;
        for (int a = 0; a < 3; a++)
            if (!act_ok(d->acts[i][a], 0, 1)) return FRNN_EINVAL;
    }
    NEW_LAYER(L, m, L_REC)
    int vw = m->vw, nr = m->k->gemm_nr(INT_MAX), G = gates[d->cell], H = d->hidden_size;
    int I = d->input_size;
    int R = d->proj_size ? d->proj_size : H;
    L->d = *d;
    memset(L->d.w, 0, sizeof L->d.w);
    L->G = G; L->H = H; L->R = R; L->Hp = rup(H, vw); L->Rp = rup(R, vw); L->ndir = ndir; L->nr = nr;
    L->nx = ndir * G * L->Hp;
    L->in = I;
    L->out = L->own = ndir == 2 && d->merge == FRNN_MERGE_CONCAT ? 2 * R : R;
    int gru_lbr = d->cell == FRNN_CELL_GRU && d->linear_before_reset;
    /* W_ih per direction, packed with padded gate blocks; b_hh folded into its bias, except
     * GRU's n gate with linear_before_reset */
    for (int i = 0; i < ndir; i++) {
        const frnn_rec_weights *w = &d->w[i];
        L->bih_p[i] = azalloc((size_t)rup(G * L->Hp, nr) * sizeof(float));
        if (!pack_gemm(&L->Wih_p[i], m, w->W_ih, G * L->Hp, I, L, rec_rowmap) || !L->bih_p[i]) {
            layer_free(L);
            return FRNN_ENOMEM;
        }
        if (w->b_ih)
            for (int g = 0; g < G; g++)
                for (int u = 0; u < H; u++)
                    L->bih_p[i][g * L->Hp + u] =
                        w->b_ih[g * H + u] + (gru_lbr && g == 2 ? 0.0f : w->b_hh[g * H + u]);
    }
    for (int i = 0; i < ndir; i++) {
        const frnn_rec_weights *w = &d->w[i];
        int ok = 1;
        if (d->cell == FRNN_CELL_GRU && !d->linear_before_reset) {
            ok &= pack_rec(&L->Whh_p[i], m, w->W_hh, H, R, 0, 2, 3);    /* one storage for both */
            ok &= pack_rec(&L->Whh_n_p[i], m, w->W_hh, H, R, 2, 1, 3);
        } else {
            ok &= pack_rec(&L->Whh_p[i], m, w->W_hh, H, R, 0, G, G);
        }
        if (gru_lbr) {
            ok &= !!(L->bhn[i] = azalloc((size_t)L->Hp * sizeof(float)));
            if (ok && w->b_hh) memcpy(L->bhn[i], w->b_hh + 2 * H, (size_t)H * sizeof(float));
        }
        if (ok && w->P) {
            ok &= !!(L->peep[i] = azalloc((size_t)3 * L->Hp * sizeof(float)));
            for (int g = 0; ok && g < 3; g++)
                memcpy(L->peep[i] + g * L->Hp, w->P + g * H, (size_t)H * sizeof(float));
        }
        if (ok && w->W_hr)
            ok &= pack_gemm(&L->Whr_p[i], m, w->W_hr, R, H, NULL, NULL);
        if (ok && w->h0 && (ok = !!(L->h0[i] = amalloc((size_t)R * 4))))
            memcpy(L->h0[i], w->h0, (size_t)R * 4);
        if (ok && w->c0 && (ok = !!(L->c0[i] = amalloc((size_t)H * 4))))
            memcpy(L->c0[i], w->c0, (size_t)H * 4);
        if (!ok) { layer_free(L); return FRNN_ENOMEM; }
        m->has_init |= w->h0 || w->c0;
    }
    m->nlayers++;
    return FRNN_OK;
}

static int imax(int a, int b) { return a > b ? a : b; }

frnn_status frnn_model_finalize(frnn_model *m, int input_size) {
    if (m->finalized) return FRNN_ESTATE;
    if (m->nlayers == 0) return FRNN_EINVAL;
    m->input_ids = m->L[0].type == L_EMB;
    m->input_size = m->input_ids ? 1 : input_size;
    int w = m->input_ids ? m->L[0].out : input_size, seq = 1;
    if (w < 1) return FRNN_EINVAL;
    m->can_stream = 1;
    m->keeps_steps = 1;
    for (int i = m->input_ids; i < m->nlayers; i++) {
        layer *L = &m->L[i];
        if (L->type == L_EMB || L->in != w) return FRNN_EINVAL;
        if (L->type == L_POOL) {
            if (!seq) return FRNN_EINVAL;
            seq = 0;
            L->state0 = m->nstates++;
            L->slot0 = m->nslots++;
        }
        if (L->type == L_CONV || L->type == L_POOL1) {
            if (!seq) return FRNN_EINVAL;
            if (L->type == L_CONV) m->max_cols = imax(m->max_cols, L->win * L->in);
        }
        if (L->type == L_REPEAT) {
            if (seq) return FRNN_EINVAL;
            seq = 1;
        }
        if (L->type == L_FLAT) {
            if (!seq) return FRNN_EINVAL;
            seq = 0;
        }
        if (L->type == L_ATTN) {      /* every step reads every other: predict only */
            if (!seq) return FRNN_EINVAL;
            m->can_stream = 0;
        }
        if (changes_time(L)) { m->time_changes = 1; m->can_stream = 0; }
        if (!keeps_steps(L)) m->keeps_steps = 0;
        if (L->type == L_POOL && L->pool_query) m->can_stream = 0;      /* its query is the final value */
        if (L->type == L_REC) {
            if (!seq) return FRNN_EINVAL;
            seq = L->d.return_sequences;
            L->state0 = m->nstates;
            L->slot0 = m->nslots;
            m->nstates += L->d.cell == FRNN_CELL_LSTM ? 2 : 1;
            m->nslots += L->ndir;
            if (L->d.direction != FRNN_DIR_FORWARD) m->can_stream = 0;
            m->max_Hp = imax(m->max_Hp, L->Hp);
            m->max_Rp = imax(m->max_Rp, L->Rp);
            if (L->ndir == 2 && L->d.merge != FRNN_MERGE_CONCAT) m->max_merge = imax(m->max_merge, 2 * L->R);
        }
        w = L->out;
        /* a flatten's B rows of steps * in floats fit in the B * steps rows of its input */
        m->max_w = imax(m->max_w, L->type == L_FLAT ? L->in : w);
    }
    m->max_w = imax(m->max_w, m->L[0].out);
    /* Embedding -> recurrent: project every token once, here, so that the layer's input GEMM
     * becomes a row lookup (bit-identical: the GEMM is batch-invariant). Only when the table
     * stays small. */
    if (m->input_ids && m->nlayers > 1 && m->L[1].type == L_REC && !m->L[1].ncarry &&
        (double)m->L[0].vocab * m->L[1].nx * 4 <= FRNN_EMB_FUSE_MAX_BYTES) {
        layer *E = &m->L[0], *R = &m->L[1];
        R->emb_xp = amalloc((size_t)E->vocab * R->nx * sizeof(float));
        if (R->emb_xp) {
            const int nxd = R->G * R->Hp;
            const unsigned fp = frnn_fp_enter();   /* the same arithmetic as a run's (kernels.h) */
            for (int d = 0; d < R->ndir; d++)
                m->k->gemm(E->vocab, nxd, E->out, E->table, E->out, &R->Wih_p[d], R->bih_p[d],
                           R->emb_xp + d * nxd, R->nx);
            frnn_fp_leave(fp);
            E->fused = 1;
            m->emb_fused = 1;
        }   /* else: out of memory for the table, run unfused */
    }
    m->output_size = w;
    m->output_seq = seq;
    m->finalized = 1;
    return FRNN_OK;
}

int frnn_model_num_states(const frnn_model *m) { return m->nstates; }
int frnn_model_output_size(const frnn_model *m) { return m->output_size; }
int frnn_model_output_is_sequence(const frnn_model *m) { return m->output_seq; }
int frnn_model_can_stream(const frnn_model *m) { return m->can_stream; }
const char *frnn_model_isa(const frnn_model *m) { return m->k->isa; }

static const layer *state_layer(const frnn_model *m, int i, int *is_c) {
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        int n = num_layer_states(L);
        if (i >= L->state0 && i < L->state0 + n) { *is_c = i - L->state0; return L; }
    }
    return NULL;
}

void frnn_model_state_dims(const frnn_model *m, int i, int *dirs, int *width) {
    int is_c = 0;
    const layer *L = state_layer(m, i, &is_c);
    *dirs = L ? L->ndir : 0;
    *width = L ? (is_c ? L->H : L->R) : 0;
}

/* ---- running context ------------------------------------------------------------------- */
typedef struct {
    int B, T;
    float *seq[2], *xp, *merge, *hfull, *scratch, *xin;
    const float **xrows;    /* Embedding folded into the first layer: each token's projected row */
    uint8_t *mask, *lenok;
    int64_t *ids;
    float **h[2], **c[2];   /* per slot (layer, direction): double-buffered states */
    int *cur;
    void *block;            /* everything above lives in one allocation */
    size_t size;
    int cached;             /* the block comes from / returns to this thread's cache */
    int par;                /* threads a layer may use (1 inside a batch chunk) */
    int tlong;              /* max(lengths) over the whole batch (FRNN_POOL_LONGEST); 0: T */
    float *cols;            /* conv1d: im2col rows */
    unsigned zig;           /* steps run so far (streams): the parity of the next tile order */
    int tc_forced;          /* frnn_testing_set_xp_chunk when the context was made */
} ctx;

/* Workspace blocks: the calling thread of frnn_forward keeps its last block (thread-local) and
 * reuses it when big enough: large fresh allocations come from mmap and cost a page fault per
 * 4 KiB on every call otherwise. A block is never shared between threads; a thread keeps at most
 * one (the largest it needed, until it exits or a smaller call finds it big enough). */
static __thread void *tl_block;
static __thread size_t tl_size;
static pthread_key_t tl_key;
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;
static void tl_destroy(void *p) { free(p); }
static int tl_ok;
static void tl_init(void) { tl_ok = pthread_key_create(&tl_key, tl_destroy) == 0; }

static void *block_get(size_t n, int cached) {
    if (!cached) return amalloc(n);
    if (tl_block && tl_size >= n) {
        void *p = tl_block;
        tl_block = NULL;
        return p;
    }
    return amalloc(n);
}

static void block_put(void *p, size_t n, int cached) {
    if (!cached || !p) { free(p); return; }
    pthread_once(&tl_once, tl_init);
    if (!tl_ok) { free(p); return; }   /* no key: no cache */
    if (tl_block && tl_size >= n) { free(p); return; }
    free(tl_block);
    tl_block = p;
    tl_size = n;
    (void)pthread_setspecific(tl_key, p);   /* freed at thread exit */
}

static void ctx_free(ctx *c) { block_put(c->block, c->size, c->cached); memset(c, 0, sizeof *c); }

/* Steps per chunk of a recurrent layer's input projection (rec_part): the xp of B rows x tc
 * steps of one direction is about FRNN_XP_CHUNK_BYTES, so that the GEMM writes it into L2 and
 * the steps read it from there (not from memory: xp of a whole sequence is B*T*G*Hp floats, 26
 * MB for LSTM 256 at batch 64, T = 100); but at least enough rows (B * tc) to read W_ih once per
 * FRNN_XP_ROWS_PER_KB rows per KiB of it: every chunk reads all of W_ih again (16 MiB for LSTM
 * 1024: from memory), so a big layer at a small batch keeps the whole sequence in one chunk;
 * and a sequence whose xp is at most two chunks is one. Measured (LSTM 256, old and new
 * library alternated in one process, medians of 24 pairs, time chunked / whole): batch 64
 * T = 100 0.97-0.98 (chunks of 1 step), 2-layer bi-LSTM batch 32 T = 50 0.96 (2 steps), both
 * within noise at 2 threads; 128 KiB and 512 KiB chunks within noise of 256. */
#define FRNN_XP_CHUNK_BYTES (256 * 1024)
#define FRNN_XP_ROWS_PER_KB (1.0 / 16)
static atomic_int xp_chunk_forced;
void frnn_testing_set_xp_chunk(int steps) { atomic_store(&xp_chunk_forced, steps < 0 ? 0 : steps); }

static int rec_tc(const layer *L, int B, int T, int forced) {
    if (forced) return forced < T ? forced : T;
    const int64_t row = (int64_t)L->G * L->Hp * 4;   /* bytes of one row's xp */
    if (row * B * T <= 2 * FRNN_XP_CHUNK_BYTES) return T;   /* small (every stream step): one chunk */
    double tc = (double)FRNN_XP_CHUNK_BYTES / (row * B);
    const double tw = (double)row * L->in / 1024 * FRNN_XP_ROWS_PER_KB / B;   /* W_ih's KiB */
    if (tw > tc) tc = tw;
    return tc < 1 ? 1 : tc > T ? T : (int)tc;
}

/* xp floats a context needs: the largest chunk buffer (every direction's) of its layers */
static size_t xp_floats(const frnn_model *m, int B, int T, int forced) {
    size_t n = 0;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (L->type != L_REC || L->emb_xp) continue;   /* Embedding folded in: reads its table */
        size_t f = (size_t)L->ndir * B * rec_tc(L, B, T, forced) * L->G * L->Hp;
        if (f > n) n = f;
    }
    return n;
}

/* carve one aligned block: sizes in bytes, each part 64-byte aligned. Only the states (and the
 * step counters) are zeroed: every other buffer is written before it is read. */
static frnn_status ctx_alloc(const frnn_model *m, int B, int T, int cached, ctx *c) {
    memset(c, 0, sizeof *c);
    c->tc_forced = atomic_load(&xp_chunk_forced);
    c->B = B; c->T = T;
    const int Tmax = m->time_changes ? max_steps(m, T) : T;   /* layers may make more steps */
    size_t BT = (size_t)B * T, BTm = (size_t)B * Tmax, S = (size_t)m->nslots;
    size_t sz[17]; int n = 0;
#define PART(bytes) (sz[n++] = (((size_t)(bytes)) + 63) & ~(size_t)63)
    PART(BTm * m->max_w * 4); PART(BTm * m->max_w * 4);        /* seq[0], seq[1] */
    PART(xp_floats(m, B, Tmax, c->tc_forced) * 4);            /* xp (chunks) */
    PART(BTm * m->max_cols * 4);                               /* cols (conv1d) */
    PART(BTm * m->max_merge * 4);                              /* merge */
    PART((size_t)2 * B * m->max_Hp * 4);                       /* hfull, per direction */
    PART((size_t)4 * B * m->max_Hp * 4);                       /* scratch, per direction */
    PART((size_t)B * (m->input_ids ? 0 : m->input_size) * 4); /* xin (streams) */
    PART(BT); PART(BT);                                        /* mask, lenok */
    PART((size_t)B * 8);                                       /* ids (streams) */
    PART(m->emb_fused ? BT * sizeof(float *) : 0);             /* xrows */
    PART(S * 4 * sizeof(float *));                             /* h[0], h[1], c[0], c[1] */
    PART(S * sizeof(int));                                     /* cur */
    size_t states = 0;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (has_state(L))
            states += (size_t)L->ndir * 2 * (((size_t)B * L->Rp * 4 + 63) / 64 * 64 +
                                             ((size_t)B * L->Hp * 4 + 63) / 64 * 64);
    }
    PART(states);
#undef PART
    size_t total = 0;
    for (int i = 0; i < n; i++) total += sz[i];
    char *p = block_get(total, cached);
    if (!p) return FRNN_ENOMEM;
    c->block = p;
    c->size = total;
    c->cached = cached;
    memset(p + (total - sz[n - 1] - sz[n - 2]), 0, sz[n - 1] + sz[n - 2]);   /* cur, states */
    c->seq[0] = (float *)p; p += sz[0];
    c->seq[1] = (float *)p; p += sz[1];
    c->xp = (float *)p; p += sz[2];
    c->cols = (float *)p; p += sz[3];
    c->merge = (float *)p; p += sz[4];
    c->hfull = (float *)p; p += sz[5];
    c->scratch = (float *)p; p += sz[6];
    c->xin = (float *)p; p += sz[7];
    c->mask = (uint8_t *)p; p += sz[8];
    c->lenok = (uint8_t *)p; p += sz[9];
    c->ids = (int64_t *)p; p += sz[10];
    c->xrows = (const float **)p; p += sz[11];
    float **ptrs = (float **)p; p += sz[12];
    c->h[0] = ptrs; c->h[1] = ptrs + S; c->c[0] = ptrs + 2 * S; c->c[1] = ptrs + 3 * S;
    c->cur = (int *)p; p += sz[13];
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        for (int d = 0; d < L->ndir; d++)
            for (int b = 0; b < 2; b++) {
                c->h[b][L->slot0 + d] = (float *)p; p += ((size_t)B * L->Rp * 4 + 63) / 64 * 64;
                c->c[b][L->slot0 + d] = (float *)p; p += ((size_t)B * L->Hp * 4 + 63) / 64 * 64;
            }
    }
    return FRNN_OK;
}

/* The state a row of layer L starts from (h, or c when is_c; direction d): its initial state
 * (Recurrent h0 / c0), or zeros. The padding columns stay as they are (zero). */
static void state_init(const layer *L, int is_c, int d, float *row) {
    const float *v = is_c ? L->c0[d] : L->h0[d];
    const size_t n = (size_t)(is_c ? L->H : L->R) * 4;
    if (v) memcpy(row, v, n);
    else memset(row, 0, n);
}

/* State tensor i (h, or c when is_c) of layer L in context c <-> the API's (dirs, Btot, width)
 * array, for the context's rows, which are rows b0.. of the API's batch. api NULL when reading
 * into the context means the initial state (state_init). */
static void state_copy(const layer *L, int is_c, ctx *c, int Btot, int b0, float *api, int to_api) {
    const int width = is_c ? L->H : L->R, stride = is_c ? L->Hp : L->Rp;
    for (int d = 0; d < L->ndir; d++) {
        const int slot = L->slot0 + d, cur = c->cur[slot];
        float *buf = is_c ? c->c[cur][slot] : c->h[cur][slot];
        for (int b = 0; b < c->B; b++) {
            float *x = api ? api + ((size_t)d * Btot + b0 + b) * width : NULL, *y = buf + (size_t)b * stride;
            if (to_api) memcpy(x, y, (size_t)width * 4);
            else if (x) memcpy(y, x, (size_t)width * 4);
            else state_init(L, is_c, d, y);
        }
    }
}

/* every state into the context (start 1: in, its NULL entries the initial states, or in NULL:
 * the initial states; a fresh context holds zeros), or the context out (NULL entries skipped) */
static void states_io(const frnn_model *m, ctx *c, int Btot, int b0, int start, const float *const *in,
                      float *const *out) {
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        for (int is_c = 0; is_c < num_layer_states(L); is_c++) {
            if (start) state_copy(L, is_c, c, Btot, b0, in ? (float *)in[L->state0 + is_c] : NULL, 0);   /* read only */
            if (out && out[L->state0 + is_c]) state_copy(L, is_c, c, Btot, b0, out[L->state0 + is_c], 1);
        }
    }
}

static void merge_dirs(int mode, const float *src, int64_t rows, int R, float *dst, int64_t ld) {
    for (int64_t r = 0; r < rows; r++) {
        const float *a = src + r * 2 * R, *b = a + R;
        float *o = dst + r * ld;
        for (int u = 0; u < R; u++)
            o[u] = mode == FRNN_MERGE_SUM ? a[u] + b[u] : mode == FRNN_MERGE_MUL ? a[u] * b[u]
                                                                                  : (a[u] + b[u]) * 0.5f;
    }
}

/* One recurrent layer over T steps, as one parallel region (pool.c) of up to nt parts (the
 * Embedding lookup's rows split among them first):
 *   DIRS, each direction of a bidirectional layer in its own part, its input GEMM chunks too
 *   (no sync);
 *   or TILES, the parts split each chunk's input GEMM by output panels (a barrier after it) and
 *   the hidden units of every step, one barrier per step (h of the step before is read whole by
 *   everyone; after a chunk's last step, its xp may be overwritten); each part also does the
 *   state carry and output copies for its own units. Results are the same bits in every mode
 *   and chunk size (every kernel's sum order is fixed per unit). */
enum { PAR_SERIAL, PAR_DIRS, PAR_TILES };
typedef struct {
    const frnn_model *m;
    const layer *L;
    ctx *c;
    const float *in; int64_t ld_in;
    const int64_t *ids;
    const uint8_t *mask, *lenok;
    float *dst; int64_t dst_ld;
    int mode;
    frnn_barrier bar;
} rec_job;

/* [lo, hi) of n items (in units of q) for part tid of nt */
static void share(int n, int q, int tid, int nt, int *lo, int *hi) {
    int u = (n + q - 1) / q;
    *lo = (int)((int64_t)u * tid / nt) * q;
    *hi = (int)((int64_t)u * (tid + 1) / nt) * q;
    if (*hi > n) *hi = n;
    if (*lo > n) *lo = n;
}

/* After a step, for units [u0, u1) of every row: inactive rows keep their state, outputs. */
static void step_rows(const layer *L, const rec_job *J, int d, int t, const float *hp, float *hn,
                      const float *cp, float *cn, int h0, int h1, int c0, int c1) {
    const int B = J->c->B, T = J->c->T, R = L->R, seq_out = L->d.return_sequences;
    const int o1 = h1 < R ? h1 : R;
    for (int b = 0; b < B; b++) {
        const int64_t bt = (int64_t)b * T + t;
        const int len_ok = !J->lenok || J->lenok[bt], active = len_ok && (!J->mask || J->mask[bt]);
        if (!active) {   /* keep the state */
            memcpy(hn + (size_t)b * L->Rp + h0, hp + (size_t)b * L->Rp + h0, (size_t)(h1 - h0) * 4);
            memcpy(cn + (size_t)b * L->Hp + c0, cp + (size_t)b * L->Hp + c0, (size_t)(c1 - c0) * 4);
        }
        if (!seq_out || o1 <= h0) continue;
        float *o = J->dst + bt * J->dst_ld + (int64_t)d * R + h0;
        if (!len_ok || (!active && L->d.masked_output_zero)) memset(o, 0, (size_t)(o1 - h0) * 4);
        else memcpy(o, hn + (size_t)b * L->Rp + h0, (size_t)(o1 - h0) * 4);
    }
}

static void rec_part(void *arg, int tid, int nt) {
    rec_job *J = arg;
    const frnn_model *m = J->m;
    const layer *L = J->L;
    ctx *c = J->c;
    const frnn_kernels *k = m->k;
    const int B = c->B, T = c->T, R = L->R, G = L->G, vw = m->vw, nxd = G * L->Hp;
    const int mode = nt == 1 ? PAR_SERIAL : J->mode, tc = rec_tc(L, B, T, c->tc_forced);
    if (L->emb_xp) {   /* token ids, validated by the Embedding layer: point at their rows */
        int i0, i1;
        share(B * T, 1, tid, nt, &i0, &i1);
        for (int64_t i = i0; i < i1; i++) c->xrows[i] = L->emb_xp + J->ids[i] * L->nx;
        frnn_barrier_wait(&J->bar, 0);   /* xrows complete */
    }
    int d0 = 0, d1 = L->ndir, j0 = 0, j1 = L->Hp, n0 = 0, n1 = nxd;
    if (mode == PAR_DIRS) {
        if (tid >= L->ndir) return;
        d0 = tid; d1 = tid + 1;
    } else if (mode == PAR_TILES) {
        share(L->Hp, vw, tid, nt, &j0, &j1);
        share(nxd, L->nr, tid, nt, &n0, &n1);   /* its panels of each chunk's GEMM */
    }
    /* the state index of this part's directions only: in DIRS, the other direction's part
     * writes its own index when it finishes (reading it here would be a data race) */
    int cur0[2] = {0, 0};
    for (int d = d0; d < d1; d++) cur0[d] = c->cur[L->slot0 + d];
    /* units this part carries: all of h (R wide) and c in the serial/DIRS modes; its tiles in
     * TILES (no projection there: R = H, Rp = Hp) */
    const int h0 = mode == PAR_TILES ? j0 : 0, h1 = mode == PAR_TILES ? j1 : L->Rp;
    frnn_rec_args a;
    memset(&a, 0, sizeof a);
    a.cell = L->d.cell; a.B = B; a.H = L->H; a.R = R; a.Hp = L->Hp; a.j0 = j0; a.j1 = j1;
    a.clip = L->d.clip; a.input_forget = L->d.input_forget; a.lbr = L->d.linear_before_reset;
    for (int d = d0; d < d1; d++) {
        const int s = L->slot0 + d;
        const int rev = L->d.direction == FRNN_DIR_REVERSE || d == 1;
        float *hfull = c->hfull + (size_t)d * B * L->Hp;
        float *xpc = c->xp + (size_t)d * B * tc * nxd;   /* this direction's chunk */
        a.scratch = c->scratch + (size_t)d * 2 * B * L->Hp;
        a.Whh = L->Whh_p[d]; a.Whh_n = L->Whh_n_p[d]; a.b_hn = L->bhn[d]; a.peep = L->peep[d];
        a.xp_off = (int64_t)d * nxd;   /* in a table row (Embedding folded in) */
        for (int i = 0; i < 3; i++) a.act[i] = L->d.acts[d][i];
        int cur = cur0[d];
        /* direct: the step writes h into its output rows, and the next step reads it there (no
         * copy of 64 KiB per step at batch 64, H = 256): every row active, no projection, h
         * unpadded; the last step's h is copied into the state after the loop */
        const int direct = L->d.return_sequences && !J->mask && !J->lenok && !L->Whr_p[d].p && R == L->Rp;
        const int64_t o_ld = (int64_t)T * J->dst_ld;   /* between a step's output rows */
        const float *hlast = NULL;   /* direct: the last step's h (in the output), or NULL */
        /* chunks of tc steps, taken from the direction's own end: steps [tlo, tlo + n) */
        for (int st0 = 0; st0 < T; st0 += tc) {
            const int n = T - st0 < tc ? T - st0 : tc, tlo = rev ? T - st0 - n : st0;
            if (!L->emb_xp) {   /* xp row b * n + i: input row b * T + tlo + i */
                if (n1 > n0) {
                    const frnn_wmat part = wmat_cols(m, &L->Wih_p[d], n0, L->in);   /* a thread's share */
                    k->gemm_groups(B * n, n1 - n0, L->in, J->in + (int64_t)tlo * J->ld_in, J->ld_in, n,
                                   (int64_t)T * J->ld_in, &part, L->bih_p[d] + n0, xpc + n0, nxd,
                                   (c->zig + st0) & 1);   /* the panels' order: gemm_panels */
                }
                if (mode == PAR_TILES) frnn_barrier_wait(&J->bar, 0);   /* the chunk's xp complete */
            }
            a.xp_stride = L->emb_xp ? T : (int64_t)n * nxd;
            for (int i = 0; i < n; i++) {
                const int t = rev ? tlo + n - 1 - i : tlo + i;
                float *hp = c->h[cur][s], *hn = c->h[cur ^ 1][s], *cp = c->c[cur][s], *cn = c->c[cur ^ 1][s];
                if (L->emb_xp) a.xp_rows = c->xrows + t;
                else a.xp = xpc + (int64_t)(t - tlo) * nxd;
                a.h = hlast ? hlast : hp; a.h_stride = hlast ? o_ld : L->Rp;
                a.c = cp; a.c_out = cn;
                a.zig = (c->zig + st0 + i) & 1;
                float *ot = J->dst + (int64_t)t * J->dst_ld + (int64_t)d * R;   /* row 0's output */
                a.h_out = direct ? ot : L->Whr_p[d].p ? hfull : hn;
                a.h_out_stride = direct ? o_ld : L->Whr_p[d].p ? L->Hp : L->Rp;
                k->rec_step(&a);
                if (L->Whr_p[d].p) k->gemm(B, R, L->H, hfull, L->Hp, &L->Whr_p[d], NULL, hn, L->Rp);
                if (direct) hlast = ot;
                else step_rows(L, J, d, t, hp, hn, cp, cn, h0, h1, j0, j1);
                cur ^= 1;
                /* h of step t complete (and, after a chunk's last step, its xp free to reuse) */
                if (mode == PAR_TILES) frnn_barrier_wait(&J->bar, 1);
            }
        }
        if (hlast)   /* the state's h: this part's units of the last step's output */
            for (int b = 0; b < B; b++)
                memcpy(c->h[cur][s] + (size_t)b * L->Rp + h0, hlast + b * o_ld + h0, (size_t)(h1 - h0) * 4);
        if (!L->d.return_sequences) {
            const float *h = c->h[cur][s];
            const int o1 = h1 < R ? h1 : R;
            for (int b = 0; o1 > h0 && b < B; b++)
                memcpy(J->dst + (int64_t)b * J->dst_ld + (int64_t)d * R + h0, h + (size_t)b * L->Rp + h0,
                       (size_t)(o1 - h0) * 4);
        }
        if (mode != PAR_TILES || tid == 0) c->cur[s] = cur;   /* the others read cur0 before */
    }
}

/* flops of one row's step of a recurrent layer (both GEMVs; the gate math not counted) */
static double rec_row_flops(const layer *L) { return 2.0 * L->ndir * L->G * L->H * (double)(L->in + L->R); }

/* The parallel mode of a layer at nt threads: DIRS for two directions; TILES when each step is
 * big enough to pay for a barrier (~0.3 µs against >= ~5 µs of work) and splits into >= 2 tiles
 * per part (not with a projection or GRU linear_before_reset=0: their steps read whole vectors
 * mid-step). */
static int rec_mode(const frnn_model *m, const layer *L, int B, int T, int nt) {
    if (nt < 2) return PAR_SERIAL;
    const double step = rec_row_flops(L) * B;
    if (step * T < 5e5) return PAR_SERIAL;
    if (L->ndir == 2) return PAR_DIRS;
    if (L->Whr_p[0].p || (L->d.cell == FRNN_CELL_GRU && !L->d.linear_before_reset)) return PAR_SERIAL;
    if (L->Hp / m->vw < 2 * nt || step < 2.5e5) return PAR_SERIAL;
    return PAR_TILES;
}

static void run_rec(const frnn_model *m, const layer *L, ctx *c, const float *in, int64_t ld_in,
                    const int64_t *ids, const uint8_t *mask, const uint8_t *lenok, float *out) {
    const int B = c->B, T = c->T, R = L->R;
    const int seq_out = L->d.return_sequences, bimerge = L->ndir == 2 && L->d.merge != FRNN_MERGE_CONCAT;
    rec_job J = {m, L, c, in, ld_in, ids, mask, lenok, bimerge ? c->merge : out,
                 bimerge ? 2 * R : L->out, PAR_SERIAL, {0}};
    int nt = c->par;
    J.mode = rec_mode(m, L, B, T, nt);
    if (J.mode == PAR_SERIAL) nt = 1;
    if (J.mode == PAR_DIRS) nt = 2;
    frnn_parallel(nt, rec_part, &J, &J.bar);
    if (bimerge) merge_dirs(L->d.merge, c->merge, seq_out ? (int64_t)B * T : B, R, out, L->out);
    carry_rows(L, in, ld_in, out, (int64_t)B * T);      /* carries only when it returns sequences */
}

/* Pooling over time: each row's running pool (its state: each term's running values, then the
 * count of steps taken) continues over this call's steps, then the pool so far is the output (a
 * stream's step t: the pool over steps 0..t). Maxima propagate NaN. An attention term reads its
 * score column and updates its online softmax (fastrnn.h). */
static frnn_status run_pool(const frnn_model *m, const layer *L, ctx *c, const float *in, int64_t ld,
                            const uint8_t *mask, const uint8_t *lenok, float *out) {
    const int B = c->B, T = c->T, slot = L->slot0;
    const int extent = L->pool_over == FRNN_POOL_LONGEST && c->tlong > 0 && c->tlong < T ? c->tlong : T;
    float *st0 = c->h[c->cur[slot]][slot];
    for (int b = 0; b < B; b++) {
        float *st = st0 + (size_t)b * L->Rp, *cnt = st + L->R - 1;
        float *qa = st;
        for (int k = 0; L->pool_query && k < L->npool; qa += pool_width(L, k), k++) {
            const pool_term *pt = &L->terms[k];
            if (pt->kind != FRNN_POOL_QUERY) continue;
            /* q: the first pt->score columns at the row's last step within its lengths, the
             * others at its first step; the whole sequence must be in this call */
            const int F = pt->width, split = pt->score;
            if (qa[2 * F + 2] != 0) return FRNN_EINVAL;
            int tl = extent - 1;
            while (lenok && tl > 0 && !lenok[(int64_t)b * T + tl]) tl--;
            memcpy(qa + F, in + ((int64_t)b * T + tl) * ld + pt->start, (size_t)split * 4);
            memcpy(qa + F + split, in + (int64_t)b * T * ld + pt->start + split, (size_t)(F - split) * 4);
        }
        for (int t = 0; t < extent; t++) {
            const int64_t r = (int64_t)b * T + t;
            const int skip = L->pool_over == FRNN_POOL_VALID && ((lenok && !lenok[r]) || (mask && !mask[r]));
            float *a = st;
            for (int k = 0; k < L->npool; a += pool_width(L, k), k++) {
                const pool_term *pt = &L->terms[k];
                const float *x = in + r * ld + pt->start;
                const int F = pt->width;
                if (pt->kind == FRNN_POOL_ATTN || pt->kind == FRNN_POOL_QUERY) {
                    /* a: sum w v (F), sum v (F; a query term's q), max z, sum w, position (fastrnn.h) */
                    const int query = pt->kind == FRNN_POOL_QUERY;
                    float *sv = a + F, *mx = sv + F, *sw = mx + 1, *pos = sw + 1;
                    float z = 0;
                    if (query) {
                        for (int f = 0; f < F; f++) z += x[f] * sv[f];
                    } else {
                        z = in[r * ld + pt->score];
                        if (pt->bias) {        /* a state set from outside may hold any position */
                            if (!(*pos >= 0 && *pos < (float)pt->nbias)) return FRNN_ESTEPS;
                            z += pt->bias[(int)*pos];
                        }
                    }
                    *pos += 1;
                    if (skip) continue;
                    if (pt->act.kind != FRNN_ACT_LINEAR) m->k->act_rows(pt->act, &z, 1, 1, 1);
                    if (*cnt == 0) {
                        *mx = z; *sw = 1;
                        memcpy(a, x, (size_t)F * 4);
                        if (!query) memcpy(sv, x, (size_t)F * 4);
                    } else if (z > *mx) {             /* rescale what was summed to the new max */
                        const float q = expf(*mx - z);
                        *mx = z; *sw = *sw * q + 1;
                        for (int f = 0; f < F; f++) a[f] = a[f] * q + x[f];
                        if (!query) for (int f = 0; f < F; f++) sv[f] += x[f];
                    } else {
                        const float w = expf(z - *mx);
                        *sw += w;
                        for (int f = 0; f < F; f++) a[f] += w * x[f];
                        if (!query) for (int f = 0; f < F; f++) sv[f] += x[f];
                    }
                    continue;
                }
                if (pt->kind == FRNN_POOL_LAST || pt->kind == FRNN_POOL_FIRST) {
                    if ((lenok && !lenok[r]) || (pt->kind == FRNN_POOL_FIRST && a[F] != 0)) continue;
                    memcpy(a, x, (size_t)F * 4);
                    if (pt->kind == FRNN_POOL_FIRST) a[F] = 1;
                    continue;
                }
                if (skip) continue;
                if (pt->kind != FRNN_POOL_MAX) {
                    for (int f = 0; f < F; f++) a[f] += x[f];
                } else if (*cnt == 0) {
                    memcpy(a, x, (size_t)F * 4);
                } else {
                    for (int f = 0; f < F; f++)
                        if (!isnan(a[f]) && (isnan(x[f]) || x[f] > a[f])) a[f] = x[f];
                }
            }
            *cnt += !skip;
        }
        float *o = out + (size_t)b * L->out;
        const float *a = st;
        for (int k = 0; k < L->npool; a += pool_width(L, k), o += L->terms[k].width, k++) {
            const pool_term *pt = &L->terms[k];
            const int F = pt->width;
            if (pt->kind == FRNN_POOL_MEAN)
                for (int f = 0; f < F; f++) o[f] = a[f] / *cnt;
            else if (pt->kind == FRNN_POOL_ATTN || pt->kind == FRNN_POOL_QUERY) {
                const float sw = a[2 * F + 1], e = pt->eps;
                for (int f = 0; f < F; f++) o[f] = a[f] / sw + (e != 0 ? e * a[F + f] : 0.0f);
            } else
                memcpy(o, a, (size_t)F * 4);
        }
    }
    return FRNN_OK;
}

/* Conv1D: each output step's window of input steps side by side (im2col, zeros outside the
 * sequence), then one GEMM against the packed (out, kernel*in) weights. */
static frnn_status run_conv(const frnn_model *m, const layer *L, ctx *c, const float *in, int64_t ld, int T,
                            float *out, int *Tout) {
    int pb, pa, To;
    window_steps(L, T, &pb, &pa, &To);
    if (To < 1) return FRNN_EINVAL;
    const int B = c->B, K = L->win * L->in;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < To; t++) {
            float *row = c->cols + ((int64_t)b * To + t) * K;
            for (int j = 0; j < L->win; j++) {
                const int64_t ti = (int64_t)t * L->stride - pb + (int64_t)j * L->dil;
                if (ti >= 0 && ti < T) memcpy(row + (size_t)j * L->in, in + ((int64_t)b * T + ti) * ld, (size_t)L->in * 4);
                else memset(row + (size_t)j * L->in, 0, (size_t)L->in * 4);
            }
        }
    const int64_t rows = (int64_t)B * To;
    m->k->gemm((int)rows, L->out, K, c->cols, K, &L->Wp, L->bp, out, L->out);
    m->k->act_rows(L->act, out, (int)rows, L->out, L->out);
    *Tout = To;
    return FRNN_OK;
}

/* Max / average pooling over windows of time, each feature on its own; a max propagates NaN */
static frnn_status run_pool1d(const layer *L, ctx *c, const float *in, int64_t ld, int T, float *out, int *Tout) {
    int pb, pa, To;
    window_steps(L, T, &pb, &pa, &To);
    if (To < 1) return FRNN_EINVAL;
    const int F = L->in;
    for (int b = 0; b < c->B; b++)
        for (int t = 0; t < To; t++) {
            float *o = out + ((int64_t)b * To + t) * F;
            int n = 0;
            for (int j = 0; j < L->win; j++) {
                const int64_t ti = (int64_t)t * L->stride - pb + j;
                if (ti < 0 || ti >= T) continue;
                const float *x = in + ((int64_t)b * T + ti) * ld;
                if (!n) memcpy(o, x, (size_t)F * 4);
                else if (L->p1kind == FRNN_POOL1D_AVG)
                    for (int f = 0; f < F; f++) o[f] += x[f];
                else
                    for (int f = 0; f < F; f++)
                        if (!isnan(o[f]) && (isnan(x[f]) || x[f] > o[f])) o[f] = x[f];
                n++;
            }
            if (L->p1kind == FRNN_POOL1D_AVG) {
                const float d = (float)(L->count_pad ? L->win : n);
                for (int f = 0; f < F; f++) o[f] /= d;
            }
        }
    *Tout = To;
    return FRNN_OK;
}

/* W (N x K, element (n, k) at W[n * sn + k * sk]) -> fp32 GEMM panels in pack_gemm's layout
 * (gemm/impl.h): panel n0 of nr = gemm_nr(N - n0) columns at P + n0 * K, element (k, n) at
 * k * nr + n - n0, the columns past N zero. */
static void pack_f32(const frnn_kernels *k, float *P, const float *W, int64_t sn, int64_t sk, int N, int K) {
    for (int n0 = 0, nr; n0 < N; n0 += nr) {
        nr = k->gemm_nr(N - n0);
        float *pp = P + (size_t)n0 * K;
        for (int kk = 0; kk < K; kk++)
            for (int n = 0; n < nr; n++)
                pp[(size_t)kk * nr + n] = n0 + n < N ? W[(int64_t)(n0 + n) * sn + (int64_t)kk * sk] : 0.0f;
    }
}

/* Self-attention over the steps of each row: per head h (d = own / heads columns), step i's
 * output is sum_j p_ij v_j with p_i = softmax_j(scale * q_i . k_j) over the steps j a row has
 * (j < its length; j <= i when causal); a step past the row's length outputs zeros. q, k, v are
 * the input's columns [0, E), [E, 2E), [2E, 3E). Per (row, head) the keys and v are packed as a
 * GEMM's matrices and the ISA's fp32 GEMM makes the scores (Q K^T) and the output (P V): each
 * sum in the kernel's fixed order, the same bits for every batch and thread split; the
 * exponentials are the ISA's vector exp (the exponential activation). (4-head attention over 128
 * features, batch 32, T 100, 1 thread, Sapphire Rapids, the layer alone: 18.6 ms as scalar dot
 * products and expf, 8.6 ms with the GEMMs, 5.1 ms with the vector exp; bench in the commit.) */
static frnn_status run_attention(const frnn_model *m, const layer *L, ctx *c, const float *in, int64_t ld,
                                 const uint8_t *lenok, int T, float *out) {
    static const frnn_act EXP = {FRNN_ACT_EXPONENTIAL, 0.0f, 0.0f};
    const frnn_kernels *k = m->k;
    const int E = L->own, d = E / L->heads, nrmax = k->gemm_nr(INT_MAX);
    const size_t kp = (size_t)rup(T, nrmax) * d, vp = (size_t)rup(d, nrmax) * T, sc = (size_t)T * T;
    float *buf = amalloc((kp + vp + sc) * sizeof(float));
    if (!buf) return FRNN_ENOMEM;
    float *Kp = buf, *Vp = buf + kp, *S = Vp + vp;
    for (int b = 0; b < c->B; b++) {
        int n = T;                                   /* the row's steps */
        if (lenok)
            while (n > 0 && !lenok[(int64_t)b * T + n - 1]) n--;
        const float *x = in + (int64_t)b * T * ld;
        float *ob = out + (int64_t)b * T * L->out;
        for (int i = n; i < T; i++) memset(ob + (int64_t)i * L->out, 0, (size_t)E * 4);
        for (int h = 0; h < L->heads && n; h++) {
            pack_f32(k, Kp, x + E + h * d, ld, 1, n, d);          /* keys: N = n, K = d */
            pack_f32(k, Vp, x + 2 * E + h * d, 1, ld, d, n);      /* v^T: N = d, K = n */
            const frnn_wmat Kw = {Kp, NULL, FRNN_W_F32, NULL}, Vw = {Vp, NULL, FRNN_W_F32, NULL};
            k->gemm(n, n, d, x + h * d, ld, &Kw, NULL, S, n);    /* S = Q K^T */
            for (int i = 0; i < n; i++) {                         /* scale * s - the row's max */
                float *p = S + (int64_t)i * n, mx = -INFINITY;
                const int nj = L->causal ? i + 1 : n;
                for (int j = 0; j < nj; j++) {
                    p[j] *= L->scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j < nj; j++) p[j] -= mx;
                for (int j = nj; j < n; j++) p[j] = -INFINITY;      /* exp: 0 */
            }
            k->act_rows(EXP, S, n, n, n);                         /* the ISA's exp, every row at once */
            for (int i = 0; i < n; i++) {
                float *p = S + (int64_t)i * n, sum = 0.0f;
                for (int j = 0; j < n; j++) sum += p[j];
                const float inv = 1.0f / sum;
                for (int j = 0; j < n; j++) p[j] *= inv;
            }
            k->gemm(n, d, n, S, n, &Vw, NULL, ob + h * d, L->out);   /* O = P V */
        }
    }
    free(buf);
    return FRNN_OK;
}

/* The whole pipeline over the context's B rows and T steps; x float (B*T, input_size) or ids. */
static frnn_status run(const frnn_model *m, ctx *c, const float *x, const int64_t *ids,
                       const int64_t *lengths, float *y) {
    const int B = c->B, T = c->T;
    const int64_t BT = (int64_t)B * T;
    const float *cur = x;
    int64_t ld = m->input_size;
    int seq = 1, has_mask = 0, nb = 0;
    const uint8_t *lenok = NULL;
    if (lengths) {
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) c->lenok[(int64_t)b * T + t] = t < lengths[b];
        lenok = c->lenok;
    }
    int Tc = T;             /* steps of the current tensor (layers that change time change it) */
    frnn_status st = FRNN_OK;
    for (int l = 0; l < m->nlayers && !st; l++) {
        const layer *L = &m->L[l];
        float *out = l == m->nlayers - 1 ? y : c->seq[nb];   /* the last layer writes y itself */
        const int64_t rows = seq ? (int64_t)B * Tc : B;
        c->T = Tc;          /* what the layer kernels read as the sequence's length */
        switch (L->type) {
        case L_EMB:
            for (int64_t i = 0; i < BT; i++) {
                int64_t id = ids[i];
                if (id < 0 || id >= L->vocab) return FRNN_EIDRANGE;
                if (!L->fused) memcpy(out + i * L->out, L->table + id * L->out, (size_t)L->out * 4);
                if (L->mask_zero) c->mask[i] = id != L->mask_id;
            }
            has_mask = L->mask_zero;
            break;
        case L_MASK:
            if (seq) {
                for (int64_t i = 0; i < BT; i++) {
                    int any = 0;
                    for (int f = 0; f < L->in; f++) any |= cur[i * ld + f] != L->mask_value;
                    c->mask[i] = (uint8_t)any;
                }
                has_mask = 1;
            }
            for (int64_t i = 0; i < rows; i++) {   /* Keras: output = x * mask */
                if (seq && !c->mask[i])
                    for (int f = 0; f < L->out; f++) out[i * L->out + f] = cur[i * ld + f] * 0.0f;
                else
                    memcpy(out + i * L->out, cur + i * ld, (size_t)L->out * 4);
            }
            break;
        case L_DENSE:
            m->k->gemm((int)rows, L->own, L->in, cur, ld, &L->Wp, L->bp, out, L->out);
            m->k->act_rows(L->act, out, (int)rows, L->own, L->out);
            carry_rows(L, cur, ld, out, rows);
            break;
        case L_ACT:
            for (int64_t i = 0; i < rows; i++) memcpy(out + i * L->out, cur + i * ld, (size_t)L->own * 4);
            m->k->act_rows(L->act, out, (int)rows, L->own, L->out);
            carry_rows(L, cur, ld, out, rows);
            break;
        case L_POOL:
            st = run_pool(m, L, c, cur, ld, has_mask ? c->mask : NULL, lenok, out);
            seq = 0; has_mask = 0;
            break;
        case L_CONV:          /* a mask ends here (Keras: Conv1D and pooling drop it) */
            st = run_conv(m, L, c, cur, ld, Tc, out, &Tc);
            has_mask = 0;
            break;
        case L_POOL1:
            st = run_pool1d(L, c, cur, ld, Tc, out, &Tc);
            has_mask = 0;
            break;
        case L_FLAT:          /* step after step: row b is its steps' features side by side */
            if (!seq || Tc != L->repeat_n) return FRNN_EINVAL;
            for (int b = 0; b < B; b++)
                for (int t = 0; t < Tc; t++)
                    memcpy(out + (int64_t)b * L->out + (int64_t)t * L->in, cur + ((int64_t)b * Tc + t) * ld,
                           (size_t)L->in * 4);
            seq = 0; has_mask = 0;
            break;
        case L_ATTN:
            st = run_attention(m, L, c, cur, ld, lenok, Tc, out);
            carry_rows(L, cur, ld, out, rows);
            break;
        case L_REPEAT: {
            const int n = layer_steps(L, Tc);
            for (int b = 0; b < B; b++)
                for (int t = 0; t < n; t++)
                    memcpy(out + ((int64_t)b * n + t) * L->out, cur + b * ld, (size_t)L->out * 4);
            Tc = n; seq = 1;
            break;
        }
        default:
            run_rec(m, L, c, cur, ld, ids, has_mask == 1 ? c->mask : NULL, lenok, out);   /* 2: pools only */
            if (!L->d.return_sequences) { seq = 0; has_mask = 0; }
            break;
        }
        cur = out; ld = L->out; nb ^= 1;
    }
    c->T = T;
    return st;
}

/* ---- whole sequences ------------------------------------------------------------------- */
typedef struct {
    const frnn_model *m;
    int Btot, b0, nb, T, par, tlong;
    const void *x; const int64_t *lengths;
    const float *const *init; float *y; float *const *final;
    frnn_status st;
} chunk;

static void run_chunk(chunk *ch) {
    const frnn_model *m = ch->m;
    ctx c;
    ch->st = ctx_alloc(m, ch->nb, ch->T, 1, &c);
    if (ch->st) return;
    c.par = ch->par;
    c.tlong = ch->tlong;
    if (ch->init || m->has_init) states_io(m, &c, ch->Btot, ch->b0, 1, ch->init, NULL);   /* else zeros */
    const int64_t rows0 = (int64_t)ch->b0 * ch->T;
    const float *xf = m->input_ids ? NULL : (const float *)ch->x + rows0 * m->input_size;
    const int64_t *ids = m->input_ids ? (const int64_t *)ch->x + rows0 : NULL;
    const int To = m->time_changes ? frnn_model_output_steps(m, ch->T) : ch->T;
    float *y = ch->y + (m->output_seq ? (int64_t)ch->b0 * To : ch->b0) * (int64_t)m->output_size;
    ch->st = run(m, &c, xf, ids, ch->lengths ? ch->lengths + ch->b0 : NULL, y);
    if (!ch->st && ch->final) states_io(m, &c, ch->Btot, ch->b0, 0, NULL, ch->final);
    ctx_free(&c);
}

typedef struct { chunk *ch; int n; } chunks;
static void chunks_part(void *arg, int tid, int nt) {   /* every chunk runs, whatever nt */
    chunks *cs = arg;
    for (int i = tid; i < cs->n; i += nt) run_chunk(&cs->ch[i]);
}

double frnn_model_row_step_flops(const frnn_model *m) {
    double f = 0;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (L->type == L_DENSE) f += 2.0 * L->in * L->own;
        if (L->type == L_CONV) f += 2.0 * L->win * L->in * L->out / L->stride;
        if (L->type == L_REC) f += rec_row_flops(L);
    }
    return f;
}

/* Threads: at >= 8 rows per thread, the batch is cut into one chunk per thread (no sync at all);
 * below that, one chunk whose layers split their own work (rec_mode). Below ~1 ms of work
 * (2 GFLOP/s per thread, conservatively), no threads. */
static frnn_status forward(const frnn_model *m, int B, int T, const void *x, const int64_t *lengths,
                           const float *const *init, float *y, float *const *final) {
    if (!m || !m->finalized || B < 1 || T < 1 || !x || !y || (int64_t)B * T > INT32_MAX)
        return FRNN_EINVAL;
    if (m->time_changes) {   /* lengths only through windows that keep the steps; every layer's steps
                                exist and fit the row limit */
        const int Tm = max_steps(m, T);
        if ((lengths && !m->keeps_steps) || frnn_model_output_steps(m, T) < 1 || (int64_t)B * Tm > INT32_MAX)
            return FRNN_EINVAL;
    }
    if (lengths)
        for (int b = 0; b < B; b++)
            if (lengths[b] < 0 || lengths[b] > T) return FRNN_EINVAL;
    int nt = frnn_get_num_threads();
    if (nt > 64) nt = 64;
    if (nt > 1 && frnn_model_row_step_flops(m) * B * T < 2e6 * nt) nt = 1;
    const int n = B >= 8 * nt ? nt : 1;
    int tlong = 0;      /* the longest row, over the whole batch (every chunk's pools use it) */
    for (int b = 0; lengths && b < B; b++)
        if (lengths[b] > tlong) tlong = (int)lengths[b];
    if (!lengths) tlong = T;
    chunk ch[64];
    for (int i = 0; i < n; i++) {
        int b0 = (int)((int64_t)B * i / n), b1 = (int)((int64_t)B * (i + 1) / n);
        ch[i] = (chunk){m, B, b0, b1 - b0, T, n > 1 ? 1 : nt, tlong, x, lengths, init, y, final, FRNN_OK};
    }
    chunks cs = {ch, n};
    if (n > 1) frnn_parallel(n, chunks_part, &cs, NULL);
    else run_chunk(&ch[0]);
    for (int i = 0; i < n; i++)
        if (ch[i].st) return ch[i].st;
    return FRNN_OK;
}

frnn_status frnn_forward(const frnn_model *m, int B, int T, const void *x, const int64_t *lengths,
                         const float *const *init, float *y, float *const *final) {
    const unsigned fp = frnn_fp_enter();
    const frnn_status st = forward(m, B, T, x, lengths, init, y, final);
    frnn_fp_leave(fp);
    return st;
}

/* ---- streams --------------------------------------------------------------------------- */
struct frnn_stream {
    const frnn_model *m;
    ctx c;
};

frnn_status frnn_stream_new(const frnn_model *m, int B, frnn_stream **out) {
    if (!m || !m->finalized || B < 1) return FRNN_EINVAL;
    if (!m->can_stream) return FRNN_EUNSUPPORTED;
    frnn_stream *s = calloc(1, sizeof *s);
    if (!s) return FRNN_ENOMEM;
    s->m = m;
    frnn_status st = ctx_alloc(m, B, 1, 0, &s->c);
    if (st) { free(s); return st; }
    if (m->has_init) frnn_stream_reset(s);
    *out = s;
    return FRNN_OK;
}

void frnn_stream_free(frnn_stream *s) {
    if (!s) return;
    ctx_free(&s->c);
    free(s);
}

void frnn_stream_reset(frnn_stream *s) {
    const frnn_model *m = s->m;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        for (int d = 0; d < L->ndir; d++)
            for (int b = 0; b < 2; b++) {
                float *h = s->c.h[b][L->slot0 + d], *c = s->c.c[b][L->slot0 + d];
                memset(h, 0, (size_t)s->c.B * L->Rp * 4);
                memset(c, 0, (size_t)s->c.B * L->Hp * 4);
                for (int r = 0; m->has_init && r < s->c.B; r++) {
                    state_init(L, 0, d, h + (size_t)r * L->Rp);
                    if (num_layer_states(L) == 2) state_init(L, 1, d, c + (size_t)r * L->Hp);
                }
            }
    }
}

/* One integer of dtype at p (unaligned) into *v; -1 for a dtype that is not an integer. A u64
 * above INT64_MAX reads as -1 (out of every range). */
static int ld_int(const char *p, int dtype, int64_t *v) {
    switch (dtype) {
#define LD(T) do { T t_; memcpy(&t_, p, sizeof t_); *v = (int64_t)t_; } while (0)
    case FRNN_DT_I8: LD(int8_t); return 0;
    case FRNN_DT_I16: LD(int16_t); return 0;
    case FRNN_DT_I32: LD(int32_t); return 0;
    case FRNN_DT_I64: LD(int64_t); return 0;
    case FRNN_DT_U8: LD(uint8_t); return 0;
    case FRNN_DT_U16: LD(uint16_t); return 0;
    case FRNN_DT_U32: LD(uint32_t); return 0;
#undef LD
    case FRNN_DT_U64: {
        uint64_t u;
        memcpy(&u, p, 8);
        *v = u > (uint64_t)INT64_MAX ? -1 : (int64_t)u;
        return 0;
    }
    default: return -1;
    }
}

/* One step of the pipeline over the c->B rows of c (T = 1): the input (see frnn_stream_step)
 * is read into c's own buffers, then run. */
static frnn_status stream_run(const frnn_model *m, ctx *c, const void *x, int dtype, int64_t sb,
                              int64_t sf, float *y) {
    const char *p = x;
    const int B = c->B;
    c->par = frnn_get_num_threads();
    c->zig++;   /* the next step's tile order (rec/impl.h, zig) */
    if (m->input_ids) {
        for (int b = 0; b < B; b++, p += sb)
            if (ld_int(p, dtype, &c->ids[b])) return FRNN_EINVAL;
        return run(m, c, NULL, c->ids, NULL, y);
    }
    const int F = m->input_size;
    float *xin = c->xin;
    if (dtype == FRNN_DT_F32 && sf == 4) {
        for (int b = 0; b < B; b++) memcpy(xin + (size_t)b * F, p + b * sb, (size_t)F * 4);
    } else if (dtype == FRNN_DT_F32) {
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++) xin[(size_t)b * F + f] = ld_f32(p + b * sb + f * sf);
    } else if (dtype == FRNN_DT_F64) {
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++)
                xin[(size_t)b * F + f] = (float)ld_f64(p + b * sb + f * sf);
    } else {
        return FRNN_EINVAL;
    }
    return run(m, c, xin, NULL, NULL, y);
}

frnn_status frnn_stream_step(frnn_stream *s, const void *x, int dtype, int64_t sb, int64_t sf,
                             float *y) {
    const unsigned fp = frnn_fp_enter();
    const frnn_status st = stream_run(s->m, &s->c, x, dtype, sb, sf, y);
    frnn_fp_leave(fp);
    return st;
}

void frnn_stream_get_state(const frnn_stream *s, int i, float *dst) {
    int is_c = 0;
    const layer *L = state_layer(s->m, i, &is_c);
    if (L) state_copy(L, is_c, (ctx *)&s->c, s->c.B, 0, dst, 1);   /* to_api: ctx only read */
}

void frnn_stream_set_state(frnn_stream *s, int i, const float *src) {
    int is_c = 0;
    const layer *L = state_layer(s->m, i, &is_c);
    if (L && src) state_copy(L, is_c, &s->c, s->c.B, 0, (float *)src, 0);   /* api only read */
}

/* ---- stream pools ---------------------------------------------------------------------- */
/* Each slot's state lives in the pool's own arrays (per (layer, direction): capacity rows of h,
 * and of c). A step gathers the stepped slots' rows into the first n rows of one context (built
 * for capacity rows, T = 1), runs the pipeline once on those n rows and scatters the new states
 * back. Rows are independent and every kernel sums in a fixed order per output whatever the
 * batch, so a slot's results are those of its own batch-1 stream, bit for bit. */
struct frnn_streampool {
    const frnn_model *m;
    ctx c;
    int cap, fresh, nfree; /* slots [fresh, cap) were never opened; nfree closed ones below */
    float **sh, **sc;      /* per state slot (layer, direction): (cap, Rp) h and (cap, Hp) c (LSTM) */
    uint8_t *open;         /* (cap) */
    uint32_t *mark;        /* (cap) the stamp of the step that last took the slot */
    uint32_t stamp;
    int *free;             /* (cap) stack of closed slots below fresh, the lowest on top */
    int64_t *rows;         /* (cap) the slots of the step being run */
};

frnn_status frnn_streampool_new(const frnn_model *m, int capacity, frnn_streampool **out) {
    if (!m || !m->finalized || capacity < 1) return FRNN_EINVAL;
    if (!m->can_stream) return FRNN_EUNSUPPORTED;
    frnn_streampool *p = calloc(1, sizeof *p);
    if (!p) return FRNN_ENOMEM;
    p->m = m;
    p->cap = capacity;
    const size_t S = m->nslots ? (size_t)m->nslots : 1, cap = (size_t)capacity;
    p->sh = calloc(S, sizeof *p->sh);
    p->sc = calloc(S, sizeof *p->sc);
    p->open = calloc(cap, 1);
    p->mark = calloc(cap, sizeof *p->mark);
    p->free = malloc(cap * sizeof *p->free);
    p->rows = malloc(cap * sizeof *p->rows);
    frnn_status st = FRNN_ENOMEM;
    if (!p->sh || !p->sc || !p->open || !p->mark || !p->free || !p->rows) goto fail;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        for (int d = 0; d < L->ndir; d++) {
            if (!(p->sh[L->slot0 + d] = calloc(cap * L->Rp, 4))) goto fail;
            if (L->d.cell == FRNN_CELL_LSTM && !(p->sc[L->slot0 + d] = calloc(cap * L->Hp, 4)))
                goto fail;   /* c: LSTM only */
        }
    }
    if ((st = ctx_alloc(m, capacity, 1, 0, &p->c))) goto fail;
    *out = p;
    return FRNN_OK;
fail:
    frnn_streampool_free(p);
    return st;
}

void frnn_streampool_free(frnn_streampool *p) {
    if (!p) return;
    for (int i = 0; p->sh && p->sc && i < p->m->nslots; i++) { free(p->sh[i]); free(p->sc[i]); }
    free(p->sh); free(p->sc); free(p->open); free(p->mark); free(p->free); free(p->rows);
    if (p->c.block) ctx_free(&p->c);
    free(p);
}

int frnn_streampool_capacity(const frnn_streampool *p) { return p->cap; }
int frnn_streampool_num_open(const frnn_streampool *p) { return p->fresh - p->nfree; }
int frnn_streampool_is_open(const frnn_streampool *p, int64_t slot) {
    return slot >= 0 && slot < p->cap && p->open[slot];
}

/* a slot's state back to the initial state (state_init) */
static void slot_init(frnn_streampool *p, int64_t slot) {
    const frnn_model *m = p->m;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        for (int d = 0; d < L->ndir; d++) {
            state_init(L, 0, d, p->sh[L->slot0 + d] + slot * L->Rp);
            if (p->sc[L->slot0 + d]) state_init(L, 1, d, p->sc[L->slot0 + d] + slot * L->Hp);
        }
    }
}

int frnn_streampool_open(frnn_streampool *p) {
    if (!p->nfree && p->fresh == p->cap) return -1;
    /* the lowest free slot; it holds the initial state: set when it was closed, or, never opened,
       calloc'ed zeros until now */
    const int never = !p->nfree;
    const int slot = never ? p->fresh++ : p->free[--p->nfree];
    if (never && p->m->has_init) slot_init(p, slot);
    p->open[slot] = 1;
    return slot;
}

frnn_status frnn_streampool_close(frnn_streampool *p, int64_t slot) {
    if (!frnn_streampool_is_open(p, slot)) return FRNN_EINVAL;
    slot_init(p, slot);
    p->open[slot] = 0;
    /* keep the stack sorted, lowest on top: open() hands out the lowest free slot */
    int i = p->nfree++;
    while (i > 0 && p->free[i - 1] < slot) { p->free[i] = p->free[i - 1]; i--; }
    p->free[i] = (int)slot;
    return FRNN_OK;
}

frnn_status frnn_streampool_reset(frnn_streampool *p, int64_t slot) {
    if (!frnn_streampool_is_open(p, slot)) return FRNN_EINVAL;
    slot_init(p, slot);
    return FRNN_OK;
}

/* rows[i] <-> row i of the context's current state buffers, for every state slot */
static void pool_move(frnn_streampool *p, int n, int to_pool) {
    const frnn_model *m = p->m;
    ctx *c = &p->c;
    for (int l = 0; l < m->nlayers; l++) {
        const layer *L = &m->L[l];
        if (!has_state(L)) continue;
        const int lstm = L->type == L_REC && L->d.cell == FRNN_CELL_LSTM;
        for (int d = 0; d < L->ndir; d++) {
            const int s = L->slot0 + d, cur = c->cur[s];
            float *ch = c->h[cur][s], *cc = c->c[cur][s], *ph = p->sh[s], *pc = p->sc[s];
            for (int i = 0; i < n; i++) {
                float *a = ch + (size_t)i * L->Rp, *b = ph + p->rows[i] * L->Rp;
                memcpy(to_pool ? b : a, to_pool ? a : b, (size_t)L->Rp * 4);
                if (!lstm) continue;
                a = cc + (size_t)i * L->Hp; b = pc + p->rows[i] * L->Hp;
                memcpy(to_pool ? b : a, to_pool ? a : b, (size_t)L->Hp * 4);
            }
        }
    }
}

static frnn_status pool_step(frnn_streampool *p, int n, const void *slots, int sdtype,
                             int64_t ss, const void *x, int dtype, int64_t sb, int64_t sf, float *y) {
    if (n < 0 || n > p->cap) return FRNN_EINVAL;
    if (n == 0) return FRNN_OK;
    if (++p->stamp == 0) {   /* wrapped: forget every old stamp */
        memset(p->mark, 0, (size_t)p->cap * sizeof *p->mark);
        p->stamp = 1;
    }
    const char *q = slots;
    for (int i = 0; i < n; i++, q += ss) {
        int64_t v;
        if (ld_int(q, sdtype, &v) || !frnn_streampool_is_open(p, v) || p->mark[v] == p->stamp)
            return FRNN_EINVAL;   /* not an integer, closed, out of range, or twice */
        p->mark[v] = p->stamp;
        p->rows[i] = v;
    }
    pool_move(p, n, 0);
    p->c.B = n;   /* this step's rows: the context's buffers hold cap >= n */
    frnn_status st = stream_run(p->m, &p->c, x, dtype, sb, sf, y);
    if (!st) pool_move(p, n, 1);   /* a failed step (bad id) leaves every state as it was */
    return st;
}

frnn_status frnn_streampool_step(frnn_streampool *p, int n, const void *slots, int sdtype,
                                 int64_t ss, const void *x, int dtype, int64_t sb, int64_t sf,
                                 float *y) {
    const unsigned fp = frnn_fp_enter();
    const frnn_status st = pool_step(p, n, slots, sdtype, ss, x, dtype, sb, sf, y);
    frnn_fp_leave(fp);
    return st;
}

/* State tensor i of an open slot <-> buf, (dirs, width) as a batch-1 stream's snapshot */
static frnn_status pool_state_io(frnn_streampool *p, int64_t slot, int i, float *buf, int to_api) {
    int is_c = 0;
    const layer *L = state_layer(p->m, i, &is_c);
    if (!frnn_streampool_is_open(p, slot) || !L || !buf) return FRNN_EINVAL;
    const int width = is_c ? L->H : L->R, stride = is_c ? L->Hp : L->Rp;
    for (int d = 0; d < L->ndir; d++) {
        float *x = buf + (size_t)d * width, *y = (is_c ? p->sc : p->sh)[L->slot0 + d] + slot * stride;
        memcpy(to_api ? x : y, to_api ? y : x, (size_t)width * 4);
    }
    return FRNN_OK;
}

frnn_status frnn_streampool_get_state(const frnn_streampool *p, int64_t slot, int i, float *dst) {
    return pool_state_io((frnn_streampool *)p, slot, i, dst, 1);   /* to_api: the pool only read */
}

frnn_status frnn_streampool_set_state(frnn_streampool *p, int64_t slot, int i, const float *src) {
    return pool_state_io(p, slot, i, (float *)src, 0);   /* src only read */
}
