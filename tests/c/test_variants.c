/* tests/c/test_variants.c - every kernel variant in one process: each ISA this CPU runs x each
 * weight precision (fp32, bf16, int8) x sizes at the edges of the tiles (one under, at and over
 * a vector, two and four vectors, a row of k left over in each block of K), through the public
 * C API (fastrnn.h): a Dense layer (the GEMM kernels) and RNN / LSTM / GRU layers (the
 * recurrent step kernels, batched and one row), against a float64 reference written here, with
 * the weights rounded as the engine rounds them (engine.c put_w, fastrnn/precision.py). Also
 * batch invariance: each row run alone gives the batched run's bits. int8 runs on the integer
 * kernels (src_c/simd/q8.h): their Dense products are checked bit for bit against their exact
 * arithmetic (q8_ref), and the recurrent reference takes its products from it.
 *
 * FASTRNN_PACK_WIDE_BYTES=0 (set below, read when a model is made) packs every reduced matrix
 * reduced, so the bf16 / int8 loads run even on the small matrices here.
 * Built and run by tests/test_c_variants.py; prints one line per failure and a summary, exits 1
 * on any failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fastrnn.h"

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static float urand(void) {                 /* uniform in [-0.5, 0.5) */
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) - 0.5f;
}
static float *fill(size_t n, float scale) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = urand() * scale;
    return p;
}

/* the engine's rounding of W (rows x cols) at precision wt, as float64 */
static double *rounded(int wt, const float *W, int rows, int cols) {
    double *d = malloc((size_t)rows * cols * sizeof *d);
    for (int r = 0; r < rows; r++) {
        const float *w = W + (size_t)r * cols;
        float mx = 0.0f;
        for (int k = 0; k < cols; k++) mx = fmaxf(mx, fabsf(w[k]));
        const float s = mx / 127.0f;
        for (int k = 0; k < cols; k++) {
            double v = w[k];
            if (wt == 1) {
                uint32_t u;
                float f = w[k];
                memcpy(&u, &f, 4);
                u = ((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16;
                memcpy(&f, &u, 4);
                v = f;
            } else if (wt == 2) {
                double q = s > 0.0f ? rint((double)w[k] / s) : 0.0;
                q = q > 127 ? 127 : q < -127 ? -127 : q;
                v = q * (double)s;
            }
            d[(size_t)r * cols + k] = v;
        }
    }
    return d;
}

/* int8 weights run on the integer kernels (FRNN_W_Q8, src_c/simd/q8.h): the engine's product of a
 * row x (K) with W (N x K, rounded per row as above) in its own float32 operations: u8 codes of x
 * (dynamic, asymmetric), exact integer sums, out[n] = (float)(sum u q - zp csum) * (s * sw[n]) */
static void q8_ref(const float *x, int K, const float *W, int N, float *out) {
    float lo = 0.0f, hi = 0.0f;
    int bad = 0;
    for (int k = 0; k < K; k++) {
        if (!isfinite(x[k])) bad = 1;
        lo = x[k] < lo ? x[k] : lo;
        hi = x[k] > hi ? x[k] : hi;
    }
    const volatile float range = hi - lo;
    int32_t *u = calloc((size_t)K + 1, sizeof *u), zp = 0;
    float s = 0.0f;
    if (bad) s = NAN;
    else if (range > 0.0f) {
        const volatile float inv = 255.0f / range;
        s = range / 255.0f;
        zp = (int32_t)nearbyintf(-lo * inv);
        for (int k = 0; k < K; k++) {
            const volatile float p = x[k] * inv;
            float v = nearbyintf(p) + (float)zp;
            u[k] = (int32_t)(v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v);
        }
    }
    for (int n = 0; n < N; n++) {
        const float *w = W + (size_t)n * K;
        float mx = 0.0f;
        for (int k = 0; k < K; k++) mx = fmaxf(mx, fabsf(w[k]));
        const float sw = mx / 127.0f;
        int64_t acc = 0, cs = 0;
        for (int k = 0; k < K; k++) {
            double q = sw > 0.0f ? rint((double)w[k] / sw) : 0.0;
            q = q > 127 ? 127 : q < -127 ? -127 : q;
            acc += (int64_t)u[k] * (int64_t)q;
            cs += (int64_t)q;
        }
        const volatile float ss = s * sw;
        out[n] = (float)(acc - zp * cs) * ss;
    }
    free(u);
}

static int failures, checks;
static void check(const char *what, int isa, int wt, const float *got, const double *want, const double *mag,
                  size_t n) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double tol = 2e-6 * mag[i] + 2e-6, e = fabs(got[i] - want[i]);
        if (!(e <= tol) && (e / tol > worst || worst == 0)) { worst = e / tol; at = i; }
    }
    checks++;
    if (worst > 0) {
        failures++;
        printf("FAIL %s isa=%s wt=%d: element %zu got %.9g want %.9g (%.1fx the bound)\n", what,
               frnn_isa_name(isa), wt, at, (double)got[at], want[at], worst);
    }
}

static void same_bits(const char *what, int isa, int wt, const float *a, const float *b, size_t n) {
    checks++;
    if (memcmp(a, b, n * sizeof *a)) {
        failures++;
        printf("FAIL %s isa=%s wt=%d: a row alone differs from the batch\n", what, frnn_isa_name(isa), wt);
    }
}

static const frnn_act LINEAR = {0, 0, 0}, TANH = {2, 0, 0}, SIGMOID = {1, 0, 0};

/* ---- Dense: the GEMM kernels ---------------------------------------------------------------- */
static void dense_case(int isa, int wt, int M, int N, int K) {
    float *W = fill((size_t)N * K, 1.0f), *b = fill(N, 1.0f), *x = fill((size_t)M * K, 2.0f);
    frnn_model *m;
    frnn_model_new(&m);
    frnn_model_set_precision(m, wt);
    frnn_model_add_dense(m, K, N, W, b, LINEAR);
    if (frnn_model_finalize(m, K)) { printf("FAIL dense %dx%dx%d: finalize\n", M, N, K); failures++; return; }
    float *y = malloc((size_t)M * N * sizeof *y), *y1 = malloc((size_t)N * sizeof *y1);
    double *Wd = rounded(wt, W, N, K), *want = malloc((size_t)M * N * sizeof *want),
           *mag = malloc((size_t)M * N * sizeof *mag);
    frnn_forward(m, M, 1, x, NULL, NULL, y, NULL);
    char what[64];
    snprintf(what, sizeof what, "dense M=%d N=%d K=%d", M, N, K);
    if (wt == 2) {   /* the integer kernels: their exact arithmetic, bit for bit */
        float *yq = malloc((size_t)M * N * sizeof *yq);
        for (int r = 0; r < M; r++) {
            q8_ref(x + (size_t)r * K, K, W, N, yq + (size_t)r * N);
            for (int n = 0; n < N; n++) yq[(size_t)r * N + n] += b[n];
        }
        same_bits(what, isa, wt, y, yq, (size_t)M * N);
        free(yq);
    }
    for (int r = 0; r < M; r++)
        for (int n = 0; n < N; n++) {
            double s = b[n], a = fabs(b[n]);
            for (int k = 0; k < K; k++) {
                s += Wd[(size_t)n * K + k] * x[(size_t)r * K + k];
                a += fabs(Wd[(size_t)n * K + k] * x[(size_t)r * K + k]);
            }
            want[(size_t)r * N + n] = s;
            mag[(size_t)r * N + n] = a;
        }
    if (wt != 2) check(what, isa, wt, y, want, mag, (size_t)M * N);
    for (int r = 0; r < M; r++) {
        frnn_forward(m, 1, 1, x + (size_t)r * K, NULL, NULL, y1, NULL);
        same_bits(what, isa, wt, y + (size_t)r * N, y1, N);
    }
    frnn_model_free(m);
    free(W); free(b); free(x); free(y); free(y1); free(Wd); free(want); free(mag);
}

/* ---- recurrent layers: the step kernels ------------------------------------------------------ */
static double sg(double v) { return 1 / (1 + exp(-v)); }

/* float64 reference of one layer over T steps of B rows, zero initial state: y (B, T, H) */
static void rec_ref(int cell, int B, int T, int I, int H, const double *Wi, const double *Wh, const float *bi,
                    const float *bh, const float *x, double *y, double *mag, const float *Wq_i, const float *Wq_h) {
    const int G = cell == FRNN_CELL_LSTM ? 4 : cell == FRNN_CELL_GRU ? 3 : 1;
    double *h = calloc(H, sizeof *h), *c = calloc(H, sizeof *c), *gx = malloc(G * H * sizeof *gx),
           *gh = malloc(G * H * sizeof *gh), *ax = malloc(G * H * sizeof *ax);
    for (int b = 0; b < B; b++) {
        memset(h, 0, H * sizeof *h); memset(c, 0, H * sizeof *c);
        for (int t = 0; t < T; t++) {
            const float *xt = x + ((size_t)b * T + t) * I;
            for (int g = 0; g < G * H; g++) {
                double s = bi[g], a = fabs(bi[g]) + fabs(bh[g]), sh = bh[g];
                for (int k = 0; k < I; k++) { s += Wi[(size_t)g * I + k] * xt[k]; a += fabs(Wi[(size_t)g * I + k] * xt[k]); }
                for (int k = 0; k < H; k++) { sh += Wh[(size_t)g * H + k] * h[k]; a += fabs(Wh[(size_t)g * H + k] * h[k]); }
                gx[g] = s; gh[g] = sh; ax[g] = a;
            }
            if (Wq_i) {   /* int8 on the integer kernels: their products (of h as float) */
                float *hf = malloc((size_t)H * sizeof *hf), *p = malloc((size_t)G * H * sizeof *p);
                q8_ref(xt, I, Wq_i, G * H, p);
                for (int g = 0; g < G * H; g++) gx[g] = bi[g] + (double)p[g];
                for (int k = 0; k < H; k++) hf[k] = (float)h[k];
                q8_ref(hf, H, Wq_h, G * H, p);
                for (int g = 0; g < G * H; g++) gh[g] = bh[g] + (double)p[g];
                free(hf); free(p);
            }
            double *o = y + ((size_t)b * T + t) * H, *om = mag + ((size_t)b * T + t) * H;
            for (int u = 0; u < H; u++) {
                if (cell == FRNN_CELL_LSTM) {
                    const double i = sg(gx[u] + gh[u]), f = sg(gx[H + u] + gh[H + u]),
                                 gg = tanh(gx[2 * H + u] + gh[2 * H + u]), oo = sg(gx[3 * H + u] + gh[3 * H + u]);
                    c[u] = f * c[u] + i * gg;
                    o[u] = oo * tanh(c[u]);
                } else if (cell == FRNN_CELL_GRU) {
                    const double r = sg(gx[u] + gh[u]), z = sg(gx[H + u] + gh[H + u]),
                                 n = tanh(gx[2 * H + u] + r * gh[2 * H + u]);
                    o[u] = (1 - z) * n + z * h[u];
                } else {
                    o[u] = tanh(gx[u] + gh[u]);
                }
                double a = 0;
                for (int g = 0; g < G; g++) a += ax[g * H + u];
                om[u] = (t + 1) * a;     /* errors of every earlier step feed this one */
            }
            memcpy(h, o, H * sizeof *h);
        }
    }
    free(h); free(c); free(gx); free(gh); free(ax);
}

static void rec_case(int isa, int wt, int cell, int B, int T, int I, int H) {
    const int G = cell == FRNN_CELL_LSTM ? 4 : cell == FRNN_CELL_GRU ? 3 : 1;
    float *Wi = fill((size_t)G * H * I, 1.0f), *Wh = fill((size_t)G * H * H, 1.0f), *bi = fill(G * H, 1.0f),
          *bh = fill(G * H, 1.0f), *x = fill((size_t)B * T * I, 2.0f);
    frnn_rec_desc d;
    memset(&d, 0, sizeof d);
    d.cell = cell; d.direction = FRNN_DIR_FORWARD; d.input_size = I; d.hidden_size = H;
    d.linear_before_reset = 1; d.return_sequences = 1;
    d.acts[0][0] = cell == FRNN_CELL_RNN ? TANH : SIGMOID; d.acts[0][1] = TANH; d.acts[0][2] = TANH;
    d.w[0].W_ih = Wi; d.w[0].W_hh = Wh; d.w[0].b_ih = bi; d.w[0].b_hh = bh;
    frnn_model *m;
    frnn_model_new(&m);
    frnn_model_set_precision(m, wt);
    frnn_model_add_recurrent(m, &d);
    if (frnn_model_finalize(m, I)) { printf("FAIL rec: finalize\n"); failures++; return; }
    const size_t n = (size_t)B * T * H;
    float *y = malloc(n * sizeof *y), *y1 = malloc((size_t)T * H * sizeof *y1);
    double *want = calloc(n, sizeof *want), *mag = calloc(n, sizeof *mag);
    double *Wid = rounded(wt, Wi, G * H, I), *Whd = rounded(wt, Wh, G * H, H);
    frnn_forward(m, B, T, x, NULL, NULL, y, NULL);
    rec_ref(cell, B, T, I, H, Wid, Whd, bi, bh, x, want, mag, wt == 2 ? Wi : NULL, wt == 2 ? Wh : NULL);
    char what[80];
    snprintf(what, sizeof what, "%s B=%d T=%d I=%d H=%d", cell == FRNN_CELL_LSTM ? "lstm" : cell == FRNN_CELL_GRU ? "gru" : "rnn",
             B, T, I, H);
    check(what, isa, wt, y, want, mag, n);
    for (int b = 0; b < B; b++) {
        frnn_forward(m, 1, T, x + (size_t)b * T * I, NULL, NULL, y1, NULL);
        same_bits(what, isa, wt, y + (size_t)b * T * H, y1, (size_t)T * H);
    }
    frnn_model_free(m);
    free(Wi); free(Wh); free(bi); free(bh); free(x); free(y); free(y1); free(want); free(mag); free(Wid); free(Whd);
}

int main(void) {
    setenv("FASTRNN_PACK_WIDE_BYTES", "0", 1);
    static const int Ns[] = {1, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65};
    static const int Ks[] = {1, 3, 4, 5, 17, 64, 131};
    static const int Ms[] = {1, 2, 5, 7, 13};
    static const int Hs[] = {1, 7, 8, 9, 16, 17, 33};
    static const int Bs[] = {1, 2, 5};
    for (int isa = 0; isa <= frnn_isa_best(); isa++) {
        if (frnn_isa_set(isa)) continue;
        for (int wt = 0; wt < 3; wt++) {
            for (size_t a = 0; a < sizeof Ms / sizeof *Ms; a++)
                for (size_t b = 0; b < sizeof Ns / sizeof *Ns; b++)
                    for (size_t c = 0; c < sizeof Ks / sizeof *Ks; c++) dense_case(isa, wt, Ms[a], Ns[b], Ks[c]);
            for (int cell = 0; cell < 3; cell++)
                for (size_t a = 0; a < sizeof Bs / sizeof *Bs; a++)
                    for (size_t h = 0; h < sizeof Hs / sizeof *Hs; h++)
                        for (size_t i = 0; i < sizeof Ks / sizeof *Ks; i += 2)
                            rec_case(isa, wt, cell, Bs[a], 4, Ks[i], Hs[h]);
        }
        printf("isa %s: done\n", frnn_isa_name(isa));
    }
    printf("%d checks, %d failures (ISAs up to %s)\n", checks, failures, frnn_isa_name(frnn_isa_best()));
    return failures != 0;
}
