/* fastrnn.h - the whole C API of the fastrnn engine.
 *
 * A model is built layer by layer (frnn_model_add_*), then frnn_model_finalize() packs every
 * weight once into the layout of the kernels of the ISA in use (see frnn_isa_*). After finalize the
 * model is immutable: any number of threads may run frnn_forward / their own streams on it.
 *
 * Conventions: float32 everywhere; matrices row-major; weights in the canonical layout of
 * fastrnn/ir.py (PyTorch's: LSTM gates i,f,g,o; GRU r,z,n; W (out, in)). Every function returns an
 * frnn_status; nothing aborts or prints. Arguments are marked IN / OUT.
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    FRNN_OK = 0,
    FRNN_ENOMEM = 1,        /* allocation failed */
    FRNN_EINVAL = 2,        /* bad argument (caller should have checked) */
    FRNN_EIDRANGE = 3,      /* a token id outside [0, vocab) */
    FRNN_ESTATE = 4,        /* call out of order (e.g. adding a layer after finalize) */
    FRNN_EUNSUPPORTED = 5,  /* e.g. streaming a bidirectional/reverse layer */
    FRNN_EISA = 6,          /* requested ISA not available on this CPU */
    FRNN_ESTEPS = 7         /* a step past the last position an attention pool has a bias for */
} frnn_status;

/* Activation kinds; codes shared with fastrnn/ir.py ACTIVATIONS. */
enum {
    FRNN_ACT_LINEAR = 0, FRNN_ACT_SIGMOID = 1, FRNN_ACT_TANH = 2, FRNN_ACT_RELU = 3,
    FRNN_ACT_HARD_SIGMOID = 4, FRNN_ACT_ELU = 5, FRNN_ACT_SOFTSIGN = 6, FRNN_ACT_SOFTPLUS = 7,
    FRNN_ACT_AFFINE = 8, FRNN_ACT_LEAKY_RELU = 9, FRNN_ACT_THRESHOLDED_RELU = 10,
    FRNN_ACT_SCALED_TANH = 11, FRNN_ACT_SELU = 12, FRNN_ACT_EXPONENTIAL = 13, FRNN_ACT_SILU = 14,
    FRNN_ACT_RELU6 = 15, FRNN_ACT_GELU = 16 /* x Phi(x) */, FRNN_ACT_GELU_TANH = 17 /* tanh form */,
    FRNN_ACT_MISH = 18 /* x tanh(softplus(x)) */, FRNN_ACT_HARDSWISH = 19 /* x relu6(x + 3) / 6 */,
    FRNN_ACT_CLIP = 20 /* min(max(x, alpha), beta) */,
    FRNN_ACT_SOFTMAX = 32, FRNN_ACT_LOG_SOFTMAX = 33,  /* row-wise, Dense/Activation only */
    FRNN_ACT_LAYER_NORM = 34,  /* row-wise: (x - mean) / sqrt(var + alpha), alpha the epsilon */
    FRNN_ACT_L2_NORMALIZE = 35, /* row-wise: x / max(||x||, alpha) (beta 0) or x / (||x|| + alpha) (beta 1) */
    FRNN_ACT_MUL_HALVES = 36   /* row-wise over an even width 2n: x[:n] *= x[n:], x[n:] kept (a gating
                                  product of two tensors placed side by side) */
};

typedef struct { int kind; float alpha, beta; } frnn_act;

/* Pooling over time (frnn_model_add_pool): what is computed, and which steps count. */
enum { FRNN_POOL_MEAN = 0, FRNN_POOL_MAX = 1, FRNN_POOL_SUM = 2, FRNN_POOL_ATTN = 3,
       /* the value at the row's last step within its lengths (every step without lengths), and
        * at its first step (a recurrent layer's final state beside pools of its output: a forward
        * direction's is its last step, a backward one's its first); masks and `over` do not move them */
       FRNN_POOL_LAST = 4, FRNN_POOL_FIRST = 5,
       /* attention whose query is the row's own final value (frnn_model_add_pool_terms) */
       FRNN_POOL_QUERY = 6 };
enum {
    FRNN_POOL_VALID = 0,    /* the row's valid steps: within lengths and unmasked (Keras masks) */
    FRNN_POOL_STEPS = 1,    /* every step of the sequence (padding zeros included: torch) */
    FRNN_POOL_LONGEST = 2   /* the first max(lengths) steps over the whole batch (torch's
                               pad_packed_sequence without total_length), else every step */
};

enum { FRNN_CELL_RNN = 0, FRNN_CELL_LSTM = 1, FRNN_CELL_GRU = 2 };
enum { FRNN_DIR_FORWARD = 0, FRNN_DIR_REVERSE = 1, FRNN_DIR_BIDIRECTIONAL = 2 };
enum { FRNN_MERGE_CONCAT = 0, FRNN_MERGE_SUM = 1, FRNN_MERGE_MUL = 2, FRNN_MERGE_AVE = 3 };

/* Weights of one direction of a recurrent layer (IN; copied at add time; NULL = absent). */
typedef struct {
    const float *W_ih;   /* (G*H, I) */
    const float *W_hh;   /* (G*H, R)  R = proj or H */
    const float *b_ih;   /* (G*H) or NULL (then b_hh must be NULL too) */
    const float *b_hh;   /* (G*H) or NULL */
    const float *P;      /* (3, H) peepholes i,f,o, LSTM only, or NULL */
    const float *W_hr;   /* (proj, H), LSTM projection, or NULL */
    const float *h0;     /* (R) the state every row starts from (a learned initial state), or NULL: zeros */
    const float *c0;     /* (H) the LSTM cell's, or NULL: zeros */
} frnn_rec_weights;

typedef struct {
    int cell, direction, merge;
    int input_size, hidden_size, proj_size;   /* proj_size 0 = none */
    float clip;                               /* <= 0: no clip */
    int input_forget, linear_before_reset, return_sequences;
    int masked_output_zero;                   /* Keras mask: 1 = zeros, 0 = carry previous output */
    frnn_act acts[2][3];                      /* per direction: rnn f; lstm f,g,h; gru f,g */
    frnn_rec_weights w[2];
} frnn_rec_desc;

/* ---- ISA dispatch ---------------------------------------------------------------------- */
/* ordered: each includes the ones before it. AVX512_VNNI: AVX-512 + VNNI, whose only difference
 * is the int8 dot product (kernels.h FRNN_W_Q8): every ISA gives int8 models the same bits. */
enum { FRNN_ISA_SCALAR = 0, FRNN_ISA_AVX2 = 1, FRNN_ISA_AVX512 = 2, FRNN_ISA_AVX512_VNNI = 3,
       FRNN_ISA_COUNT = 4 };
int frnn_isa_best(void);                 /* best this CPU supports (CPUID + XGETBV) */
int frnn_isa_current(void);              /* the one new models will use */
frnn_status frnn_isa_set(int isa);       /* FRNN_EISA if the CPU lacks it */
const char *frnn_isa_name(int isa);
int frnn_kernel_count(void);
const char *frnn_kernel_name(int i);     /* the kernel list (src_c/kernels.inc) */

/* ---- threads --------------------------------------------------------------------------- */
void frnn_set_num_threads(int n);        /* >= 1; used by frnn_forward on large batches */
int frnn_get_num_threads(void);
/* testing only: every recurrent layer's input projection in chunks of exactly `steps` steps
 * (0: the automatic size, engine.c rec_tc). Results never depend on it. */
void frnn_testing_set_xp_chunk(int steps);

/* ---- model ----------------------------------------------------------------------------- */
typedef struct frnn_model frnn_model;

frnn_status frnn_model_new(frnn_model **out);
/* The precision of the weights of the matrix products of the layers added after it (before the
 * first): 0 fp32 (the default), 1 bf16, 2 int8 with one scale per output row (kernels.h,
 * frnn_wmat). The weights are given in fp32 and rounded here (fastrnn/precision.py). */
frnn_status frnn_model_set_precision(frnn_model *m, int wt);
void frnn_model_free(frnn_model *m);
frnn_status frnn_model_add_embedding(frnn_model *m, int vocab, int dim, const float *table,
                                     int mask_zero);
/* The embedding (the first and only layer so far, without mask_zero): steps whose id is `id` are
 * left out of the pools over valid steps (FRNN_POOL_VALID) after it; recurrent layers still run
 * them (torch's masks made from the ids, x != pad, that only a pooling reads). */
frnn_status frnn_model_set_embedding_pool_mask(frnn_model *m, int64_t id);
frnn_status frnn_model_add_masking(frnn_model *m, int size, float mask_value);
frnn_status frnn_model_add_dense(frnn_model *m, int in, int out, const float *W, const float *b,
                                 frnn_act act);
frnn_status frnn_model_add_activation(frnn_model *m, int size, frnn_act act);
/* The last layer added (a Dense, an Activation, or a recurrent layer that returns sequences) also
 * copies input columns [start, stop) after its output, step by step, after those of earlier
 * calls (a branch: ir.Dense.carry). An activation's input then reaches at least column stop. */
frnn_status frnn_model_add_carry(frnn_model *m, int start, int stop);
frnn_status frnn_model_add_recurrent(frnn_model *m, const frnn_rec_desc *d);
/* Pooling over time of a sequence of `size` features into one step of nkinds*size: the kinds
 * (FRNN_POOL_MEAN / MAX / SUM, 1 to 3 of them) side by side, over the steps `over` says. It
 * keeps a state (dirs 1, width nkinds*size + 1: the running sums or maxima and the count of
 * steps taken), so a stream's step t gives the pool over steps 0..t; a mean of no step is 0/0. */
frnn_status frnn_model_add_pool(frnn_model *m, int size, int nkinds, const int *kinds, int over);
/* FRNN_POOL_ATTN (attention over time; at most one per pool): the pool's input is then size + 1
 * features, a score e_t first and the values after it (every kind pools the values). Per row,
 * z_t = act(e_t + bias[t]) (t: the step's position; bias NULL: none, else nbias positions, a step
 * past them is FRNN_ESTEPS), and the pool is sum_t (softmax(z)_t + eps) v_t over the steps that
 * count, computed online (running max, sum and weighted sum: a stream's step t gives what a
 * sequence of t + 1 steps gives, bit for bit). Its state: sum of w_t v_t (size), sum of v_t
 * (size), the running max, the running sum of w_t, the position. Set on the last layer added. */
frnn_status frnn_model_set_pool_attention(frnn_model *m, frnn_act act, float eps, int nbias, const float *bias);
/* The general pool (ir.Pool terms): nterms (1 to FRNN_POOL_TERMS) pools side by side over an
 * input of `in` features, term k of kind kinds[k] over columns [starts[k], starts[k] + widths[k]),
 * an attention term reading its score in column scores[k] (ignored for the other kinds). The state
 * is each term's running values (widths[k]; 2 * widths[k] + 3 for attention, as above; widths[k]
 * + 1 for FRNN_POOL_FIRST: the value and whether it is taken) in order, then the count. frnn_model_add_pool is the terms of one range after the score column.
 * A FRNN_POOL_QUERY term is attention whose query is the row's own final value (torch's
 * torch.bmm(out, h_n[-1].unsqueeze(2)) scores): q is the term's first scores[k] columns at the
 * row's last step within its lengths (every step without lengths) and the others at its first
 * step (a forward direction's final state, a backward one's), z_t = act(v_t . q) (act from
 * frnn_model_set_pool_term_attention, eps 0, no bias), then the softmax-weighted sum of v_t over
 * the steps that count, as FRNN_POOL_ATTN computes it (its state holds q where ATTN keeps the
 * sum of v_t). q needs the whole sequence: a call continuing a state (a position > 0) is
 * FRNN_EINVAL, and a model with one cannot stream. */
enum { FRNN_POOL_TERMS = 16 };
frnn_status frnn_model_add_pool_terms(frnn_model *m, int in, int nterms, const int *kinds, const int *starts,
                                      const int *widths, const int *scores, int over);
/* The options of attention term `term` of the last layer added (a pool); as above. */
frnn_status frnn_model_set_pool_term_attention(frnn_model *m, int term, frnn_act act, float eps, int nbias,
                                               const float *bias);

/* Layers that change the number of time steps (whole sequences only: a model with one cannot
 * stream, and takes no lengths). Padding of a window over time: */
enum {
    FRNN_PAD_VALID = 0,     /* none: windows inside the sequence */
    FRNN_PAD_SAME = 1,      /* ceil(T / stride) steps, the padding split as TensorFlow does
                               (the extra one after) */
    FRNN_PAD_CAUSAL = 2,    /* (kernel - 1) * dilation steps before (Keras padding="causal") */
    FRNN_PAD_EXPLICIT = 3   /* pad_before / pad_after steps (torch padding=p) */
};
/* Conv1D over time: W (out, in, kernel) (torch's layout), b (out) or NULL, then act.
 * y[t] = act(b + sum_j W[:, :, j] x[t*stride - pad_before + j*dilation]), zeros outside x. */
frnn_status frnn_model_add_conv1d(frnn_model *m, int in, int out, int kernel, int stride, int dilation,
                                  int pad_mode, int pad_before, int pad_after, const float *W,
                                  const float *b, frnn_act act);
/* Max or average pooling over windows of time (features kept); an average over a window that
 * reaches into the padding divides by the window (count_pad) or by the steps inside. */
enum { FRNN_POOL1D_MAX = 0, FRNN_POOL1D_AVG = 1 };
frnn_status frnn_model_add_pool1d(frnn_model *m, int size, int kind, int window, int stride, int pad_mode,
                                  int pad_before, int pad_after, int count_pad);
/* RepeatVector: one step (batch, size) -> n steps of it (batch, n, size). */
frnn_status frnn_model_add_repeat(frnn_model *m, int size, int n);
/* A sequence of exactly `steps` steps of `size` features -> one vector of steps * size (step after
 * step): Keras Flatten after a layer returning sequences, a Linear over torch's out.reshape(B, -1).
 * Whole sequences of that many steps only (frnn_model_output_steps is 0 for any other length). */
frnn_status frnn_model_add_flatten(frnn_model *m, int size, int steps);
/* self-attention over the steps of each row: the first 3 * size of its `in` columns are q, k, v
 * (of `heads` heads side by side), out = size (then any carried columns, frnn_model_add_carry);
 * scores scale * q.k (causal: the steps so far), softmax, the weighted sum of v; a step past the
 * row's length gives zeros. A model with it does not stream. */
frnn_status frnn_model_add_attention(frnn_model *m, int size, int heads, int causal, float scale, int in);
/* Time steps of the output for T input steps (0: too few for a window); and whether some
 * layer changes the number of steps. */
int frnn_model_output_steps(const frnn_model *m, int T);
int frnn_model_changes_time(const frnn_model *m);
/* 1 when every layer that may change the number of steps keeps it (windows of stride 1 padded
 * "same" or causally): predict then takes lengths */
int frnn_model_keeps_steps(const frnn_model *m);
/* input_size: features of a float input (ignored when the first layer is an Embedding). */
frnn_status frnn_model_finalize(frnn_model *m, int input_size);
/* Number of state tensors (per recurrent layer: h, then c for an LSTM; per pooling layer: its
 * running pool) and the shape of one: (dirs, batch, width). */
int frnn_model_num_states(const frnn_model *m);
void frnn_model_state_dims(const frnn_model *m, int i, int *dirs, int *width);
int frnn_model_output_size(const frnn_model *m);
int frnn_model_output_is_sequence(const frnn_model *m);
int frnn_model_can_stream(const frnn_model *m);   /* 0 when some layer is reverse/bidirectional */
const char *frnn_model_isa(const frnn_model *m);
/* Flops (2 x multiply-adds) of one time step of one batch row through the whole pipeline: the
 * measure of work the thread and GIL thresholds use. */
double frnn_model_row_step_flops(const frnn_model *m);

/* Whole sequences.
 *   x        IN  float32 (B, T, input_size) or int64 ids (B, T), C-contiguous
 *   lengths  IN  (B) int64 in [0, T], or NULL
 *   init     IN  NULL, or num_states pointers (each NULL = zeros) to (dirs, B, width)
 *   y        OUT (B, T, out) if the output is a sequence, else (B, out)
 *   final    OUT NULL, or num_states pointers (each may be NULL) to (dirs, B, width)
 * Ids are range-checked (FRNN_EIDRANGE, nothing else written meaningfully). */
frnn_status frnn_forward(const frnn_model *m, int B, int T, const void *x, const int64_t *lengths,
                         const float *const *init, float *y, float *const *final);

/* ---- streams --------------------------------------------------------------------------- */
typedef struct frnn_stream frnn_stream;

enum { FRNN_DT_F32 = 0, FRNN_DT_F64 = 1, FRNN_DT_I8 = 2, FRNN_DT_I16 = 3, FRNN_DT_I32 = 4,
       FRNN_DT_I64 = 5, FRNN_DT_U8 = 6, FRNN_DT_U16 = 7, FRNN_DT_U32 = 8, FRNN_DT_U64 = 9 };

/* A stream of B rows over m (which must outlive it). All memory is allocated here; steps allocate
 * nothing. FRNN_EUNSUPPORTED if !frnn_model_can_stream(m). */
frnn_status frnn_stream_new(const frnn_model *m, int B, frnn_stream **out);
void frnn_stream_free(frnn_stream *s);
void frnn_stream_reset(frnn_stream *s);
/* One step of the whole pipeline.
 *   x   IN  B rows of this step's input, any strides in bytes: floats (F32/F64, B x input_size)
 *           or ids (any integer dtype, B); rows at x + b*sb, features at + f*sf
 *   y   OUT (B, out) C-contiguous float32 */
frnn_status frnn_stream_step(frnn_stream *s, const void *x, int dtype, int64_t sb, int64_t sf,
                             float *y);
/* Copy state tensor i to/from (dirs=1, B, width). */
void frnn_stream_get_state(const frnn_stream *s, int i, float *dst);
void frnn_stream_set_state(frnn_stream *s, int i, const float *src);

/* ---- stream pools ---------------------------------------------------------------------- */
/* Many batch-1 streams ("slots", one per conversation) over m, any subset of them stepped as ONE
 * batch: their states are gathered into one context, run together and scattered back, so each
 * slot's results are exactly those of its own batch-1 stream. A pool is used by one thread at a
 * time; open/close/reset/step allocate nothing. */
typedef struct frnn_streampool frnn_streampool;

frnn_status frnn_streampool_new(const frnn_model *m, int capacity, frnn_streampool **out);
void frnn_streampool_free(frnn_streampool *p);
int frnn_streampool_capacity(const frnn_streampool *p);
int frnn_streampool_num_open(const frnn_streampool *p);
int frnn_streampool_is_open(const frnn_streampool *p, int64_t slot);
/* The lowest closed slot, opened with a zero state; -1 when every slot is open. */
int frnn_streampool_open(frnn_streampool *p);
/* Zero the slot's state and close it (FRNN_EINVAL if it is not open). */
frnn_status frnn_streampool_close(frnn_streampool *p, int64_t slot);
frnn_status frnn_streampool_reset(frnn_streampool *p, int64_t slot);
/* One step of n distinct open slots.
 *   slots IN  n integers of dtype sdtype (FRNN_DT_*), ss bytes apart
 *   x     IN  n rows of input, as frnn_stream_step's (row i feeds slots[i])
 *   y     OUT (n, out) C-contiguous float32
 * FRNN_EINVAL if a slot is out of range, closed or given twice (nothing is run); FRNN_EIDRANGE
 * for a bad token id (no state changes). */
frnn_status frnn_streampool_step(frnn_streampool *p, int n, const void *slots, int sdtype,
                                 int64_t ss, const void *x, int dtype, int64_t sb, int64_t sf,
                                 float *y);
/* Copy state tensor i of an open slot to/from (dirs=1, 1, width); FRNN_EINVAL if not open. */
frnn_status frnn_streampool_get_state(const frnn_streampool *p, int64_t slot, int i, float *dst);
frnn_status frnn_streampool_set_state(frnn_streampool *p, int64_t slot, int i, const float *src);

#ifdef __cplusplus
}
#endif
#endif
