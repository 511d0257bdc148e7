/* kernels.h - internal: the per-ISA kernel table and the argument block of a recurrent step. */
#ifndef FRNN_KERNELS_H
#define FRNN_KERNELS_H
#include <stdint.h>
#include "fastrnn.h"

/* Rows of k ahead that the many-row GEMM and GEMV tiles prefetch their packed weights into L1
 * (gemm/impl.h says why and what it measured). */
enum { FRNN_PF_K = 8 };

/* A packed weight matrix and the precision of its elements (issue: reduced precision).
 * FRNN_W_F32: fp32. FRNN_W_BF16: bfloat16 bit patterns, widened to fp32 in registers (exact).
 * FRNN_W_I8: int8, symmetric; the product's sum for output column n is multiplied by scale[n]
 * after the summation (weight-only: x stays fp32, sums are fp32 FMAs of the widened q). The
 * layout (panels, tiles) is the fp32 one with elements of W_SIZE(wt) bytes; scale (I8 only) is
 * laid out like the bias of the same product (gemm: padded columns; rec: [gate][Hp]); it is
 * non-NULL exactly for int8 (FRNN_W_I8, FRNN_W_I8W), and the kernels scale when it is.
 * The kernels read bf16 / int8 elements as they are only for one row (a stream step: the
 * weights are read once); for more rows they widen each panel / tile once into an fp32 scratch
 * and run the fp32 code over it (gemm/impl.h gemm_panels, rec/impl.h rec_step). */
enum { FRNN_W_F32 = 0, FRNN_W_BF16 = 1, FRNN_W_I8 = 2,
       FRNN_W_I8W = 3,    /* int8 q stored as floats (small matrices, engine.c storage_wt):
                             fp32 loads, the scales after the sum */
       FRNN_W_Q8 = 4 };   /* int8 with dynamic activations (simd/q8.h): each row of the other
                             operand quantized to u8 per call, integer dot products (VNNI's
                             vpdpbusd; vpmaddwd elsewhere), int32 sums. Packed with the k of a
                             column in groups of Q_KG (simd/<isa>.h; the table's q8_kg); csum:
                             each column's sum of q (int32), laid out like scale */
enum { FRNN_Q8_K_MAX = 32768 };   /* FRNN_W_Q8's longest K: its int32 sums stay exact (simd/q8.h) */
typedef struct {
    const void *p;
    const float *scale;
    int wt;
    const int32_t *csum;  /* FRNN_W_Q8 only */
} frnn_wmat;
#define W_SIZE(wt) ((wt) == FRNN_W_BF16 ? 2 : (wt) == FRNN_W_I8 || (wt) == FRNN_W_Q8 ? 1 : 4)

/* One time step of one direction of a recurrent layer for B rows (rec/impl.h).
 * Packed weights come from frnn_pack_rec (engine.c). Strides are in floats. */
typedef struct {
    int cell, B;
    int H, R;            /* hidden units; width of h (R = proj or H) */
    int Hp;              /* H rounded up to the ISA's VW: gate block stride in xp, c row stride */
    int j0, j1;          /* the units this call computes: [j0, j1), multiples of VW, j1 <= Hp
                            (a thread's share of the tiles; 0, Hp for all) */
    int zig;             /* 1: tiles in descending order. Alternated step by step, so that each
                            step starts on the weights the last one read most recently: when
                            W_hh is about the cache's size, LRU keeps them instead of evicting
                            exactly the next ones. The order of tiles never changes a result. */
    frnn_wmat Whh;       /* tiles of VW units: [H/VW][R][G'][VW]; G' = 2 (r,z) for GRU lbr=0;
                            scale [G'][Hp] */
    frnn_wmat Whh_n;     /* GRU lbr=0 only: n gate, [H/VW][H][VW]; scale [Hp] */
    const float *b_hn;   /* GRU lbr=1: (Hp) recurrent bias of n, applied inside r*(.) */
    const float *peep;   /* LSTM: (3, Hp) i, f, o, or NULL */
    frnn_act act[3];
    float clip;          /* <= 0: none */
    int input_forget, lbr;
    const float *xp; int64_t xp_stride;  /* input part of gate pre-activations (+ biases) */
    const float *const *xp_rows;         /* NULL, or row b's xp is xp_rows[b * xp_stride] + xp_off */
    int64_t xp_off;
    const float *h; int64_t h_stride;    /* previous h, R (padded to Hp for GRU) per row */
    const float *c;                      /* previous c, stride Hp */
    float *h_out; int64_t h_out_stride;  /* new h (LSTM with projection: o*h(c), pre-projection) */
    float *c_out;                        /* new c, stride Hp */
    float *scratch;                      /* GRU lbr=0: 2*B*Hp floats */
} frnn_rec_args;

/* Denormals: inside engine calls the FPU flushes them to zero (MXCSR FTZ and DAZ): a state
 * decaying into the denormal range (|x| < 1.2e-38) would otherwise make every operation on it
 * take microcode assists, 10-30x slower. frnn_fp_enter sets both and returns the caller's MXCSR,
 * frnn_fp_leave restores it; the pool's workers (our own threads) set them once at start. */
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
static inline unsigned frnn_fp_enter(void) {
    const unsigned c = _mm_getcsr();
    if ((c & 0x8040u) != 0x8040u) _mm_setcsr(c | 0x8040u);   /* FTZ (bit 15) | DAZ (bit 6) */
    return c;
}
static inline void frnn_fp_leave(unsigned c) {
    if ((c & 0x8040u) != 0x8040u) _mm_setcsr(c);
}
#else
static inline unsigned frnn_fp_enter(void) { return 0; }
static inline void frnn_fp_leave(unsigned c) { (void)c; }
#endif

#define X(name, ret, args) typedef ret (*frnn_##name##_fn) args;
#include "kernels.inc"
#undef X

typedef struct {
    const char *isa;
#define X(name, ret, args) frnn_##name##_fn name;
#include "kernels.inc"
#undef X
} frnn_kernels;

extern const frnn_kernels frnn_kernels_scalar, frnn_kernels_avx2, frnn_kernels_avx512,
    frnn_kernels_avx512_vnni;
const frnn_kernels *frnn_kernels_for(int isa);
#endif
