# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin Cython layer over the C engine (src_c/fastrnn.h).

Checks first, then `with nogil:` around every C call that has work enough to pay for handing the
GIL over (the GIL rule, before CModel). On the streaming hot path (Stream.step_into)
NumPy buffers are read directly (PyArray_DATA / DIMS / STRIDES / TYPE, all macros), never through
typed memoryviews, which cost ~0.2 us each. The C engine copies and packs every weight when a
layer is added, so nothing here keeps weight arrays alive.

Thread safety: a CModel is immutable after build and shared freely. A Stream must be used by one
thread at a time; a second thread entering a stream that is busy gets a FastRNNError (the busy
flag is tested and set while holding the GIL, so the test itself cannot race).
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

from .errors import ArgumentTypeError, FastRNNError, ShapeError, UnsupportedError

cnp.import_array()

cdef extern from "fastrnn.h" nogil:
    ctypedef int frnn_status
    ctypedef struct frnn_act:
        int kind
        float alpha, beta
    ctypedef struct frnn_rec_weights:
        const float *W_ih
        const float *W_hh
        const float *b_ih
        const float *b_hh
        const float *P
        const float *W_hr
        const float *h0
        const float *c0
    ctypedef struct frnn_rec_desc:
        int cell, direction, merge
        int input_size, hidden_size, proj_size
        float clip
        int input_forget, linear_before_reset, return_sequences, masked_output_zero
        frnn_act acts[2][3]
        frnn_rec_weights w[2]
    ctypedef struct frnn_model:
        pass
    ctypedef struct frnn_stream:
        pass
    ctypedef struct frnn_streampool:
        pass
    int FRNN_OK, FRNN_ENOMEM, FRNN_EINVAL, FRNN_EIDRANGE, FRNN_ESTATE, FRNN_EUNSUPPORTED, FRNN_EISA, FRNN_ESTEPS
    int FRNN_DT_F32, FRNN_DT_F64, FRNN_DT_I8, FRNN_DT_I16, FRNN_DT_I32, FRNN_DT_I64
    int FRNN_DT_U8, FRNN_DT_U16, FRNN_DT_U32, FRNN_DT_U64
    int FRNN_ISA_COUNT
    int frnn_isa_best()
    int frnn_isa_current()
    frnn_status frnn_isa_set(int isa)
    const char *frnn_isa_name(int isa)
    int frnn_kernel_count()
    const char *frnn_kernel_name(int i)
    void frnn_set_num_threads(int n)
    int frnn_get_num_threads()
    void frnn_testing_set_xp_chunk(int steps)
    frnn_status frnn_model_new(frnn_model **out)
    frnn_status frnn_model_set_precision(frnn_model *m, int wt)
    void frnn_model_free(frnn_model *m)
    frnn_status frnn_model_add_embedding(frnn_model *m, int vocab, int dim, const float *table, int mask_zero)
    frnn_status frnn_model_set_embedding_pool_mask(frnn_model *m, int64_t id)
    frnn_status frnn_model_add_masking(frnn_model *m, int size, float mask_value)
    frnn_status frnn_model_add_dense(frnn_model *m, int inp, int out, const float *W, const float *b, frnn_act act)
    frnn_status frnn_model_add_activation(frnn_model *m, int size, frnn_act act)
    frnn_status frnn_model_add_carry(frnn_model *m, int start, int stop)
    frnn_status frnn_model_set_pool_term_attention(frnn_model *m, int term, frnn_act act, float eps, int nbias,
                                                   const float *bias)
    frnn_status frnn_model_add_recurrent(frnn_model *m, const frnn_rec_desc *d)
    frnn_status frnn_model_add_pool_terms(frnn_model *m, int in_, int nterms, const int *kinds, const int *starts,
                                          const int *widths, const int *scores, int over)
    frnn_status frnn_model_add_conv1d(frnn_model *m, int in_, int out, int kernel, int stride, int dilation,
                                      int pad_mode, int pad_before, int pad_after, const float *W,
                                      const float *b, frnn_act act)
    frnn_status frnn_model_add_pool1d(frnn_model *m, int size, int kind, int window, int stride, int pad_mode,
                                      int pad_before, int pad_after, int count_pad)
    frnn_status frnn_model_add_repeat(frnn_model *m, int size, int n)
    frnn_status frnn_model_add_flatten(frnn_model *m, int size, int steps)
    frnn_status frnn_model_add_attention(frnn_model *m, int size, int heads, int causal, float scale, int input_size)
    int frnn_model_output_steps(const frnn_model *m, int T)
    int frnn_model_changes_time(const frnn_model *m)
    int frnn_model_keeps_steps(const frnn_model *m)
    frnn_status frnn_model_finalize(frnn_model *m, int input_size)
    int frnn_model_num_states(const frnn_model *m)
    void frnn_model_state_dims(const frnn_model *m, int i, int *dirs, int *width)
    int frnn_model_output_size(const frnn_model *m)
    int frnn_model_output_is_sequence(const frnn_model *m)
    int frnn_model_can_stream(const frnn_model *m)
    const char *frnn_model_isa(const frnn_model *m)
    double frnn_model_row_step_flops(const frnn_model *m)
    frnn_status frnn_forward(const frnn_model *m, int B, int T, const void *x, const int64_t *lengths,
                             const float *const *init, float *y, float *const *final)
    frnn_status frnn_stream_new(const frnn_model *m, int B, frnn_stream **out)
    void frnn_stream_free(frnn_stream *s)
    void frnn_stream_reset(frnn_stream *s)
    frnn_status frnn_stream_step(frnn_stream *s, const void *x, int dtype, int64_t sb, int64_t sf, float *y)
    void frnn_stream_get_state(const frnn_stream *s, int i, float *dst)
    void frnn_stream_set_state(frnn_stream *s, int i, const float *src)
    frnn_status frnn_streampool_new(const frnn_model *m, int capacity, frnn_streampool **out)
    void frnn_streampool_free(frnn_streampool *p)
    int frnn_streampool_capacity(const frnn_streampool *p)
    int frnn_streampool_num_open(const frnn_streampool *p)
    int frnn_streampool_is_open(const frnn_streampool *p, int64_t slot)
    int frnn_streampool_open(frnn_streampool *p)
    frnn_status frnn_streampool_close(frnn_streampool *p, int64_t slot)
    frnn_status frnn_streampool_reset(frnn_streampool *p, int64_t slot)
    frnn_status frnn_streampool_step(frnn_streampool *p, int n, const void *slots, int sdtype, int64_t ss,
                                     const void *x, int dtype, int64_t sb, int64_t sf, float *y)
    frnn_status frnn_streampool_get_state(const frnn_streampool *p, int64_t slot, int i, float *dst)
    frnn_status frnn_streampool_set_state(frnn_streampool *p, int64_t slot, int i, const float *src)


cdef object _raise(frnn_status st, str what):
    if st == FRNN_ENOMEM:
        raise MemoryError(f"fastrnn: out of memory ({what})")
    if st == FRNN_EIDRANGE:
        raise ShapeError(f"{what}: a token id is outside [0, vocab_size)")
    if st == FRNN_EUNSUPPORTED:
        raise UnsupportedError(what)
    if st == FRNN_ESTEPS:
        raise ShapeError(f"{what}: a step past the last position the attention pool has a bias for "
                         f"(its source was written for sequences of at most that many steps), or a "
                         f"state whose position is not one of them")
    raise FastRNNError(f"{what}: engine status {st}")


# ---- ISA, threads -------------------------------------------------------------------------
ISA_NAMES = tuple(frnn_isa_name(i).decode() for i in range(FRNN_ISA_COUNT))


def isa_available():
    """Names of the ISAs this CPU runs, slowest first."""
    return ISA_NAMES[:frnn_isa_best() + 1]


def isa_current():
    return frnn_isa_name(frnn_isa_current()).decode()


def set_isa(name):
    """Use `name`'s kernels for models built from now on (models keep the ISA they were built with)."""
    if name not in ISA_NAMES:
        raise FastRNNError(f"unknown ISA {name!r}; known: {', '.join(ISA_NAMES)}")
    if frnn_isa_set(ISA_NAMES.index(name)) != FRNN_OK:
        raise FastRNNError(f"this CPU cannot run {name} kernels (available: {', '.join(isa_available())})")


def kernel_names():
    return tuple(frnn_kernel_name(i).decode() for i in range(frnn_kernel_count()))


def set_num_threads(n):
    """Threads predict may use on large batches (default 1; at most 64 are used)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ArgumentTypeError(f"set_num_threads: n must be an integer in [1, 4096], got {n!r}")
    if not 1 <= n <= 4096:
        raise ShapeError(f"set_num_threads: n must be an integer in [1, 4096], got {n!r}")
    frnn_set_num_threads(int(n))


def _testing_set_xp_chunk(steps):
    """Tests only: recurrent input projections in chunks of `steps` steps (0: automatic)."""
    frnn_testing_set_xp_chunk(int(steps))


def get_num_threads():
    return frnn_get_num_threads()


# ---- models -------------------------------------------------------------------------------
# The GIL rule: an engine call releases the GIL when its work is at least this many flops (about
# 2 µs); a smaller one keeps it, as NumPy keeps it for small arrays. Handing the GIL to a waiting
# thread and taking it back costs µs of futex wake-ups. bench/serving.py, two Python threads each
# stepping its own batch-1 stream, steps/s against one thread (2 runs each, --gil-flops 0 / 1e9):
#   LSTM(32), 16 kflop, ~1.5 µs a step: released 0.40-0.74x, kept 1.03-1.09x
#   LSTM(64), 65 kflop, ~3 µs:          released 1.14-1.16x, kept 0.86-0.97x
#   LSTM(128), 262 kflop, ~10 µs:       released 1.28-1.34x, kept 0.89-0.96x
# and one thread alone saves ~0.1 µs a step when it keeps the GIL. A Stream decides once, from
# its batch size; predict and StreamPool.step per call.
cdef double gil_release_flops = 3e4


def _set_gil_release_flops(double f):
    """Development hook (bench/serving.py --gil-flops): the GIL rule's threshold; returns the old one.
    Streams made before keep their decision."""
    global gil_release_flops
    old = gil_release_flops
    gil_release_flops = f
    return old

cdef const float *_fptr(object a) except? NULL:
    """Data pointer of a float32 C-contiguous array (ir.py guarantees the layout), NULL for None."""
    if a is None:
        return NULL
    cdef cnp.ndarray arr = a
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        raise FastRNNError("internal: weights must be float32 C-contiguous")
    return <const float *>cnp.PyArray_DATA(arr)


cdef frnn_act _act(object a):
    cdef frnn_act r
    r.kind = a.code
    r.alpha = a.alpha
    r.beta = a.beta
    return r


_CELLS = {"rnn": 0, "lstm": 1, "gru": 2}
_POOLS = {"mean": 0, "max": 1, "sum": 2, "attn": 3, "last": 4, "first": 5, "query": 6}
_POOL_OVER = {"valid": 0, "steps": 1, "longest": 2}
_PADS = {"valid": 0, "same": 1, "causal": 2}


def _pad(p):
    """ir padding -> (mode, before, after) for the C API."""
    return (_PADS[p], 0, 0) if isinstance(p, str) else (3, p[0], p[1])
_DIRS = {"forward": 0, "reverse": 1, "bidirectional": 2}
_MERGES = {"concat": 0, "sum": 1, "mul": 2, "ave": 3}


cdef class CModel:
    """The packed, immutable engine model built from a list of ir layers."""
    cdef frnn_model *m
    cdef readonly int num_states, output_size, output_is_sequence, can_stream, query_pool, attention
    cdef readonly int input_ids, input_size, changes_time, keeps_steps
    cdef readonly str isa
    cdef readonly double row_step_flops   # flops of one step of one row (the GIL rule below)

    def __cinit__(self):
        self.m = NULL

    def __dealloc__(self):
        frnn_model_free(self.m)

    def __init__(self, layers, int input_size, int precision=0):
        """precision: 0 fp32, 1 bf16, 2 int8 (fastrnn/precision.py; frnn_model_set_precision)."""
        from . import ir
        if self.m != NULL:
            raise FastRNNError("a CModel is built once")
        cdef frnn_status st = frnn_model_new(&self.m)
        if st:
            _raise(st, "model")
        st = frnn_model_set_precision(self.m, precision)
        if st:
            _raise(st, "model precision")
        cdef frnn_rec_desc d
        cdef int i, j
        cdef int kinds[16]
        cdef int starts[16]
        cdef int widths[16]
        cdef int scores[16]
        for L in layers:
            t = type(L)
            if t is ir.Embedding:
                st = frnn_model_add_embedding(self.m, L.weight.shape[0], L.weight.shape[1],
                                              _fptr(L.weight), L.mask_zero)
                if st == 0 and L.pool_mask is not None:
                    st = frnn_model_set_embedding_pool_mask(self.m, L.pool_mask)
            elif t is ir.Masking:
                st = frnn_model_add_masking(self.m, L.size, L.mask_value)
            elif t is ir.Dense:
                st = frnn_model_add_dense(self.m, L.input_size, L.own_size, _fptr(L.weight),
                                          _fptr(L.bias), _act(L.activation))
            elif t is ir.Activation:
                st = frnn_model_add_activation(self.m, L.size, _act(L.activation))
            elif t is ir.Pool:
                terms = L.term_list()
                for i, pt in enumerate(terms):
                    kinds[i], starts[i], widths[i] = _POOLS[pt.kind], pt.start, pt.width
                    scores[i] = pt.split if pt.kind == "query" else -1 if pt.score is None else pt.score
                st = frnn_model_add_pool_terms(self.m, L.input_size, len(terms), kinds, starts, widths, scores,
                                               _POOL_OVER[L.over])
                for i, pt in enumerate(terms):
                    if st == FRNN_OK and pt.kind in ("attn", "query"):
                        st = frnn_model_set_pool_term_attention(self.m, i, _act(pt.score_activation), pt.eps,
                                                                0 if pt.score_bias is None else len(pt.score_bias),
                                                                _fptr(pt.score_bias))
            elif t is ir.Conv1D:
                pm, pb, pa = _pad(L.padding)
                st = frnn_model_add_conv1d(self.m, L.input_size, L.output_size, L.kernel, L.stride, L.dilation,
                                           pm, pb, pa, _fptr(L.weight), _fptr(L.bias), _act(L.activation))
            elif t is ir.Pool1D:
                pm, pb, pa = _pad(L.padding)
                st = frnn_model_add_pool1d(self.m, L.size, 0 if L.kind == "max" else 1, L.window, L.stride,
                                           pm, pb, pa, L.count_pad)
            elif t is ir.RepeatVector:
                st = frnn_model_add_repeat(self.m, L.size, L.n)
            elif t is ir.Flatten:
                st = frnn_model_add_flatten(self.m, L.size, L.n)
            elif t is ir.Attention:
                st = frnn_model_add_attention(self.m, L.size, L.heads, L.causal, L.scale, 3 * L.size + L.extra)
            else:
                memset(&d, 0, sizeof(d))
                d.cell = _CELLS[L.cell]
                d.direction = _DIRS[L.direction]
                d.merge = _MERGES[L.merge_mode]
                d.input_size = L.input_size
                d.hidden_size = L.hidden_size
                d.proj_size = L.proj_size
                d.clip = L.clip if L.clip is not None else 0.0
                d.input_forget = L.input_forget
                d.linear_before_reset = L.linear_before_reset
                d.return_sequences = L.return_sequences
                d.masked_output_zero = L.masked_output == "zero"
                for i in range(L.num_directions):
                    for j, a in enumerate(L.activations[i]):
                        d.acts[i][j] = _act(a)
                    w = L.weights[i]
                    d.w[i].W_ih = _fptr(w["W_ih"])
                    d.w[i].W_hh = _fptr(w["W_hh"])
                    d.w[i].b_ih = _fptr(w.get("b_ih"))
                    d.w[i].b_hh = _fptr(w.get("b_hh"))
                    d.w[i].P = _fptr(w.get("P"))
                    d.w[i].W_hr = _fptr(w.get("W_hr"))
                    d.w[i].h0 = _fptr(w.get("h0"))
                    d.w[i].c0 = _fptr(w.get("c0"))
                st = frnn_model_add_recurrent(self.m, &d)
            for i, j in getattr(L, "carry", ()):
                if st == FRNN_OK:
                    st = frnn_model_add_carry(self.m, i, j)
            if st:
                _raise(st, f"adding {type(L).__name__}")
        st = frnn_model_finalize(self.m, input_size)
        if st:
            _raise(st, "finalizing the model")
        self.num_states = frnn_model_num_states(self.m)
        self.output_size = frnn_model_output_size(self.m)
        self.output_is_sequence = frnn_model_output_is_sequence(self.m)
        self.changes_time = frnn_model_changes_time(self.m)
        self.keeps_steps = frnn_model_keeps_steps(self.m)
        self.can_stream = frnn_model_can_stream(self.m)
        self.query_pool = any(isinstance(L, ir.Pool) and "query" in L.kinds for L in layers)
        self.attention = any(isinstance(L, ir.Attention) for L in layers)
        self.input_ids = isinstance(layers[0], ir.Embedding)
        self.input_size = input_size
        self.isa = frnn_model_isa(self.m).decode()
        self.row_step_flops = frnn_model_row_step_flops(self.m)

    def state_dims(self, int i):
        """(directions, width) of state tensor i."""
        cdef int dirs = 0, width = 0
        if self.m == NULL:
            raise FastRNNError("CModel not built")
        frnn_model_state_dims(self.m, i, &dirs, &width)
        return dirs, width

    def output_steps(self, int T):
        """Time steps of the output for T input steps (0: too few for a window)."""
        return frnn_model_output_steps(self.m, T)

    def forward(self, cnp.ndarray x, object lengths, object init, bint want_final):
        """x: C-contiguous float32 (B, T, F) or int64 (B, T); lengths: int64 (B,) or None;
        init: None or a list of num_states float32 C-contiguous (dirs, B, width) arrays or None.
        Returns (y, final_states or None). The caller (model.py) has validated everything."""
        if self.m == NULL:
            raise FastRNNError("CModel not built")
        cdef int B = x.shape[0], T = x.shape[1], i
        cdef int ns = self.num_states
        if self.output_is_sequence:
            shape = (B, frnn_model_output_steps(self.m, T), self.output_size)
        else:
            shape = (B, self.output_size)
        cdef cnp.ndarray y = np.empty(shape, np.float32)
        cdef const int64_t *lp = NULL
        cdef cnp.ndarray larr
        if lengths is not None:
            larr = lengths
            lp = <const int64_t *>cnp.PyArray_DATA(larr)
        finals = []
        cdef const float **ip = NULL
        cdef float **fp = NULL
        cdef frnn_status st
        try:
            if init is not None and ns:
                ip = <const float **>malloc(ns * sizeof(float *))
                if ip == NULL:
                    raise MemoryError()
                for i in range(ns):
                    ip[i] = _fptr(init[i])
            if want_final and ns:
                fp = <float **>malloc(ns * sizeof(float *))
                if fp == NULL:
                    raise MemoryError()
                finals = []
                for i in range(ns):
                    dirs, width = self.state_dims(i)
                    f = np.empty((dirs, B, width), np.float32)
                    finals.append(f)
                    fp[i] = <float *>cnp.PyArray_DATA(<cnp.ndarray>f)
            if self.row_step_flops * B * T >= gil_release_flops:
                with nogil:
                    st = frnn_forward(self.m, B, T, cnp.PyArray_DATA(x), lp, ip, <float *>cnp.PyArray_DATA(y), fp)
            else:
                st = frnn_forward(self.m, B, T, cnp.PyArray_DATA(x), lp, ip, <float *>cnp.PyArray_DATA(y), fp)
            if st:
                _raise(st, "predict")
        finally:
            free(ip)
            free(fp)
        return y, (finals if want_final else None)


# ---- streams ------------------------------------------------------------------------------
cdef inline int _dtype_code(int typenum) noexcept:
    if typenum == cnp.NPY_FLOAT32: return FRNN_DT_F32
    if typenum == cnp.NPY_FLOAT64: return FRNN_DT_F64
    if typenum == cnp.NPY_INT8: return FRNN_DT_I8
    if typenum == cnp.NPY_INT16: return FRNN_DT_I16
    if typenum == cnp.NPY_INT32: return FRNN_DT_I32
    if typenum == cnp.NPY_INT64: return FRNN_DT_I64
    if typenum == cnp.NPY_UINT8: return FRNN_DT_U8
    if typenum == cnp.NPY_UINT16: return FRNN_DT_U16
    if typenum == cnp.NPY_UINT32: return FRNN_DT_U32
    if typenum == cnp.NPY_UINT64: return FRNN_DT_U64
    if typenum == cnp.NPY_LONGLONG: return FRNN_DT_I64
    if typenum == cnp.NPY_ULONGLONG: return FRNN_DT_U64
    return -1


cdef int _check_in(cnp.ndarray x, int code, int ids, Py_ssize_t B, int in_size, str what) except -1:
    if ids:
        if cnp.PyArray_NDIM(x) != 1 or cnp.PyArray_DIMS(x)[0] != B:
            raise ShapeError(f"{what}: expected token ids of shape ({B},), got {(<object>x).shape}")
        if code < FRNN_DT_I8:
            raise ShapeError(f"{what}: token ids must be integers, got dtype {x.dtype}")
    else:
        if (cnp.PyArray_NDIM(x) != 2 or cnp.PyArray_DIMS(x)[0] != B
                or cnp.PyArray_DIMS(x)[1] != in_size):
            raise ShapeError(f"{what}: expected x of shape ({B}, {in_size}), got {(<object>x).shape}")
        if code > FRNN_DT_F64 or code < 0:
            raise ShapeError(f"{what}: expected float input, got dtype {x.dtype}")
    return code


cdef object _coerce(object x, int ids, str what):
    """Slow path: anything that is not an ndarray of a dtype the C step reads directly."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise ShapeError(f"{what}: x is not an array: {e}") from None
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))   # byte-swapped input: read as numbers
    if ids:
        if a.dtype.kind not in "iu":
            raise ShapeError(f"{what}: token ids must be integers, got dtype {a.dtype}")
        return a
    if a.dtype.kind != "f":
        raise ShapeError(f"{what}: expected float input, got dtype {a.dtype}")
    if _dtype_code(cnp.PyArray_TYPE(a)) not in (FRNN_DT_F32, FRNN_DT_F64):
        a = a.astype(np.float32)   # float16, longdouble: converted (documented)
    return a


cdef cnp.ndarray _step_input(object x, int *code, int ids, Py_ssize_t B, int in_size, str what):
    """x as an array the C step reads directly (native byte order, a dtype it knows), checked;
    ndarrays that already qualify pass through uncopied (the hot path)."""
    cdef cnp.ndarray xa
    code[0] = -1
    if cnp.PyArray_Check(x) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x):
        code[0] = _dtype_code(cnp.PyArray_TYPE(<cnp.ndarray>x))
    if code[0] >= 0:
        xa = <cnp.ndarray>x
    else:
        xa = _coerce(x, ids, what)
        code[0] = _dtype_code(cnp.PyArray_TYPE(xa))
    if not ids and in_size == 1 and cnp.PyArray_NDIM(xa) == 1:
        xa = xa.reshape(-1, 1)        # one feature per step: (batch,) is (batch, 1)
    _check_in(xa, code[0], ids, B, in_size, what)
    return xa


cdef int _check_can_stream(CModel cm) except -1:
    if not cm.can_stream:
        if cm.query_pool:
            raise UnsupportedError(
                "this model cannot stream: an attention pool's query is the sequence's final value (torch's "
                "torch.bmm(out, h_n[-1].unsqueeze(2)) scores), known only after the last step; use predict() "
                "on whole sequences")
        if frnn_model_changes_time(cm.m):
            raise UnsupportedError(
                "this model cannot stream: a Conv1D, Pool1D, RepeatVector or Flatten layer changes the number of "
                "time steps (a window over steps, or steps made from one), so its output at step t is not "
                "a function of the first t+1 inputs; use predict() on whole sequences")
        if cm.attention:
            raise UnsupportedError(
                "this model cannot stream: a self-attention layer's output at step t reads every step of "
                "the sequence (or, causal, every step so far, which a stream does not keep); use predict() "
                "on whole sequences")
        raise UnsupportedError(
            "this model cannot stream: it has a reverse or bidirectional recurrent layer, whose "
            "output at step t depends on steps after t; use predict() on whole sequences")
    return 0


cdef int _check_out(object out, Py_ssize_t B, int out_size) except -1:
    if not cnp.PyArray_Check(out):
        raise ArgumentTypeError(f"step_into: out must be a writeable C-contiguous float32 array of shape "
                                f"({B}, {out_size}), got {type(out).__name__}")
    if (cnp.PyArray_TYPE(out) != cnp.NPY_FLOAT32 or cnp.PyArray_NDIM(out) != 2
            or cnp.PyArray_DIMS(out)[0] != B or cnp.PyArray_DIMS(out)[1] != out_size
            or not cnp.PyArray_ISCARRAY(out)):
        raise ShapeError(f"step_into: out must be a writeable C-contiguous float32 array of shape "
                         f"({B}, {out_size}), got {out.dtype} {out.shape}")
    return 0


cdef class Stream:
    """A stream over a model: owns its state; step() feeds one time step of `batch_size` rows.

    step(x_t) / step_into(x_t, out): x_t is (batch, features) floats or (batch,) integer ids, any
    view (non-contiguous is fine); returns / writes this step's output (batch, output_size).
    `state` is a snapshot (a list of copies, native layout: per recurrent layer h (1, batch, width)
    then c for an LSTM); assigning it restores one. reset() zeros the state.
    """
    cdef frnn_stream *s
    cdef CModel cm
    cdef readonly object model
    cdef readonly int batch_size
    cdef int out_size, ids, in_size, busy, release_gil

    def __cinit__(self):
        self.s = NULL

    def __reduce__(self):
        raise TypeError("a Stream cannot be pickled: it holds a live state in this process. Pickle its model "
                        "(a Model pickles as its .frnn bytes) and its state (stream.state), then set "
                        "model.stream().state = state where you unpickle them")

    def __dealloc__(self):
        frnn_stream_free(self.s)

    def __init__(self, model, CModel cm not None, int batch_size):
        if self.s != NULL:
            raise FastRNNError("a Stream is initialised once")
        if cm.m == NULL:
            raise FastRNNError("CModel not built")
        if batch_size < 1:
            raise ShapeError(f"stream: batch_size must be >= 1, got {batch_size}")
        _check_can_stream(cm)
        cdef frnn_status st = frnn_stream_new(cm.m, batch_size, &self.s)
        if st:
            _raise(st, "stream")
        self.cm = cm
        self.model = model
        self.batch_size = batch_size
        self.release_gil = cm.row_step_flops * batch_size >= gil_release_flops
        self.out_size = cm.output_size
        self.ids = cm.input_ids
        self.in_size = cm.input_size

    cdef inline int _acquire(self) except -1:
        """Test-and-set the busy flag (under the GIL, with no Python code in between)."""
        if self.s == NULL:
            raise FastRNNError("this Stream was not made by Model.stream()")
        if self.busy:
            raise FastRNNError("this Stream is being stepped by another thread; use one Stream per thread")
        self.busy = 1
        return 0

    cdef int _step(self, object x, cnp.ndarray out) except -1:
        cdef int code
        if self.s == NULL:
            raise FastRNNError("this Stream was not made by Model.stream()")
        cdef cnp.ndarray xa = _step_input(x, &code, self.ids, self.batch_size, self.in_size, "step")
        cdef const void *xp = cnp.PyArray_DATA(xa)
        cdef int64_t sb = cnp.PyArray_STRIDES(xa)[0]
        cdef int64_t sf = cnp.PyArray_STRIDES(xa)[1] if not self.ids else 0
        cdef float *yp = <float *>cnp.PyArray_DATA(out)
        cdef frnn_status st
        self._acquire()
        if self.release_gil:
            with nogil:
                st = frnn_stream_step(self.s, xp, code, sb, sf, yp)
        else:
            st = frnn_stream_step(self.s, xp, code, sb, sf, yp)
        self.busy = 0
        if st:
            _raise(st, "step")
        return 0

    def step_into(self, x, out):
        """One step; writes the output into `out` (float32 C-contiguous (batch, output_size))."""
        _check_out(out, self.batch_size, self.out_size)
        self._step(x, out)

    def _c_loop(self, x, cnp.ndarray out not None, long n):
        """Bench hook: n steps in one C loop (no Python per step), to measure the C floor that
        step_into adds its overhead to. Same checks as step_into; returns seconds."""
        import time
        self.step_into(x, out)             # checks out, and x, as step_into does
        cdef int code
        cdef cnp.ndarray xa = _step_input(x, &code, self.ids, self.batch_size, self.in_size, "step")
        cdef const void *xp = cnp.PyArray_DATA(xa)
        cdef int64_t sb = cnp.PyArray_STRIDES(xa)[0]
        cdef int64_t sf = cnp.PyArray_STRIDES(xa)[1] if not self.ids else 0
        cdef float *yp = <float *>cnp.PyArray_DATA(out)
        cdef long i
        self._acquire()
        t0 = time.perf_counter()
        with nogil:
            for i in range(n):
                frnn_stream_step(self.s, xp, code, sb, sf, yp)
        self.busy = 0
        return time.perf_counter() - t0

    def step(self, x):
        """One step; returns a new (batch, output_size) float32 array."""
        cdef cnp.ndarray out = np.empty((self.batch_size, self.out_size), np.float32)
        self._step(x, out)
        return out

    def reset(self):
        """Zero every state (as a new stream)."""
        self._acquire()
        frnn_stream_reset(self.s)
        self.busy = 0

    @property
    def state(self):
        """A snapshot of the state: list of float32 arrays, per recurrent layer h (1, B, width),
        then c (1, B, hidden) for an LSTM. Copies, never views of live buffers."""
        out = []
        cdef cnp.ndarray a
        self._acquire()   # held while Python code (allocations) runs between the copies
        try:
            for i in range(self.cm.num_states):
                dirs, width = self.cm.state_dims(i)
                a = np.empty((dirs, self.batch_size, width), np.float32)
                frnn_stream_get_state(self.s, i, <float *>cnp.PyArray_DATA(a))
                out.append(a)
        finally:
            self.busy = 0
        return out

    @state.setter
    def state(self, value):
        if self.s == NULL:
            raise FastRNNError("this Stream was not made by Model.stream()")
        arrs = self.model._check_states(value, self.batch_size, "state")   # Python code first,
        cdef cnp.ndarray a
        cdef int i
        self._acquire()                                                    # then test-and-set
        for i in range(self.cm.num_states):
            a = arrs[i]
            frnn_stream_set_state(self.s, i, <const float *>cnp.PyArray_DATA(a))
        self.busy = 0


# ---- stream pools -------------------------------------------------------------------------
cdef class StreamPool:
    """Many conversations over one model, any subset of them stepped as ONE batch.

        pool = fastrnn.StreamPool(model, capacity)
        slot = pool.open()                    # the lowest free slot, with a zero state
        y = pool.step(slots, x)               # slots: 1-D integers (distinct, open); x: (n, features)
                                              # floats or (n,) ids, row i feeding slots[i]
        pool.step_into(slots, x, out)         # out: float32 C-contiguous (n, output_size)
        pool.reset(slot); pool.close(slot)
        st = pool.state(slot); pool.set_state(slot, st)

    Each slot behaves exactly as its own batch-1 Stream (bit for bit): the stepped slots' states
    are gathered into one batch in C, run by one call into the engine (the GIL released unless
    the call is tiny, see Threads in the README), and scattered back. Closing a slot zeroes its state; a reopened slot starts from zeros. A pool is
    used by one thread at a time (a second thread entering a busy pool gets a FastRNNError).
    For a multi-output source model (e.g. Keras return_state) step returns the main output only;
    for a model whose head reads final states (signature head) it returns the head's output, run
    on the stepped slots' states after the step (as its Stream does).
    Slot arguments that are not open, out of range, repeated in one step or not integers raise
    ShapeError; open() on a full pool raises FastRNNError.
    """
    cdef frnn_streampool *p
    cdef CModel cm
    cdef readonly object model
    cdef int out_size, ids, in_size, busy
    cdef object head, head_parts
    cdef int head_width

    def __cinit__(self):
        self.p = NULL

    def __reduce__(self):
        raise TypeError("a StreamPool cannot be pickled: it holds live conversations in this process. "
                        "Pickle its model (a Model pickles as its .frnn bytes) and each slot's pool.state(slot), "
                        "then set_state them into a new pool")

    def __dealloc__(self):
        frnn_streampool_free(self.p)

    def __init__(self, model, capacity):
        if self.p != NULL:
            raise FastRNNError("a StreamPool is initialised once")
        cm = getattr(model, "_cm", None)
        if not isinstance(cm, CModel) or (<CModel>cm).m == NULL:
            raise ArgumentTypeError(f"StreamPool: expected a fastrnn.Model, got {type(model).__name__}")
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
            raise ArgumentTypeError(f"StreamPool: capacity must be an integer in [1, 2**31 - 1], got {capacity!r}")
        if not 1 <= capacity <= 2**31 - 1:
            raise ShapeError(f"StreamPool: capacity must be an integer in [1, 2**31 - 1], got {capacity!r}")
        _check_can_stream(<CModel>cm)
        cdef frnn_status st = frnn_streampool_new((<CModel>cm).m, int(capacity), &self.p)
        if st:
            _raise(st, "StreamPool")
        self.cm = cm
        self.model = model
        self.out_size = self.cm.output_size
        self.head = getattr(model, "_head", None)
        if self.head is not None:    # signature head: run on the stepped slots' states (Model._head_forward)
            self.head_parts = [(k, d) + tuple(self.cm.state_dims(k)) for k, d in model._head_parts]
            self.head_width = sum(w for _, _, _, w in self.head_parts)
            self.out_size = self.head.output_size
        self.ids = self.cm.input_ids
        self.in_size = self.cm.input_size

    @property
    def capacity(self):
        return frnn_streampool_capacity(self.p) if self.p != NULL else 0

    @property
    def num_open(self):
        """How many slots are open."""
        return frnn_streampool_num_open(self.p) if self.p != NULL else 0

    def __len__(self):
        return self.num_open

    def __bool__(self):   # a pool is a resource, not a container: an empty one is not false
        return True

    def __repr__(self):
        return f"<fastrnn.StreamPool {self.num_open}/{self.capacity} slots open over {self.model!r}>"

    cdef inline int _acquire(self) except -1:
        if self.p == NULL:
            raise FastRNNError("this StreamPool is not initialised")
        if self.busy:
            raise FastRNNError("this StreamPool is being used by another thread; use one pool per thread")
        self.busy = 1
        return 0

    cdef int64_t _slot(self, object slot, str what) except -1:
        if self.p == NULL:
            raise FastRNNError("this StreamPool is not initialised")
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)):
            raise ArgumentTypeError(f"{what}: a slot is an integer, got {slot!r}")
        if not 0 <= slot < frnn_streampool_capacity(self.p):
            raise ShapeError(f"{what}: slot {slot} is outside [0, {frnn_streampool_capacity(self.p)})")
        if not frnn_streampool_is_open(self.p, slot):
            raise ShapeError(f"{what}: slot {slot} is not open")
        return slot

    def is_open(self, slot):
        """True when `slot` is an open slot of this pool."""
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)):
            return False
        return self.p != NULL and 0 <= slot < frnn_streampool_capacity(self.p) \
            and bool(frnn_streampool_is_open(self.p, slot))

    def open_slots(self):
        """The open slots, ascending (int64 array)."""
        cap = self.capacity
        return np.fromiter((i for i in range(cap) if frnn_streampool_is_open(self.p, i)), np.int64)

    def open(self):
        """Open the lowest free slot (its state zero) and return it."""
        self._acquire()
        cdef int slot = frnn_streampool_open(self.p)
        self.busy = 0
        if slot < 0:
            raise FastRNNError(f"StreamPool is full: all {self.capacity} slots are open; close one first")
        return slot

    def close(self, slot):
        """Close `slot` (its state is zeroed; open() may hand it out again)."""
        cdef int64_t s = self._slot(slot, "close")
        self._acquire()
        frnn_streampool_close(self.p, s)
        self.busy = 0

    def reset(self, slot):
        """Zero the state of `slot` (as a new conversation)."""
        cdef int64_t s = self._slot(slot, "reset")
        self._acquire()
        frnn_streampool_reset(self.p, s)
        self.busy = 0

    cdef int _step(self, object slots, object x, cnp.ndarray out, Py_ssize_t n) except -1:
        cdef int code, scode
        cdef cnp.ndarray sa = <cnp.ndarray>slots
        cdef cnp.ndarray xa = _step_input(x, &code, self.ids, n, self.in_size, "step")
        scode = _dtype_code(cnp.PyArray_TYPE(sa))
        cdef const void *sp = cnp.PyArray_DATA(sa)
        cdef int64_t ss = cnp.PyArray_STRIDES(sa)[0]
        cdef const void *xp = cnp.PyArray_DATA(xa)
        cdef int64_t sb = cnp.PyArray_STRIDES(xa)[0]
        cdef int64_t sf = cnp.PyArray_STRIDES(xa)[1] if not self.ids else 0
        cdef cnp.ndarray body = out if self.head is None else np.empty((n, self.cm.output_size), np.float32)
        cdef float *yp = <float *>cnp.PyArray_DATA(body)
        cdef frnn_status st
        self._acquire()
        try:
            if self.cm.row_step_flops * n >= gil_release_flops:
                with nogil:
                    st = frnn_streampool_step(self.p, <int>n, sp, scode, ss, xp, code, sb, sf, yp)
            else:
                st = frnn_streampool_step(self.p, <int>n, sp, scode, ss, xp, code, sb, sf, yp)
            if st == FRNN_OK and self.head is not None:
                self._head_step(sa, n, out)
        finally:
            self.busy = 0
        if st == FRNN_EINVAL:
            self._diagnose(sa)
        if st:
            _raise(st, "step")
        return 0

    cdef int _head_step(self, cnp.ndarray slots, Py_ssize_t n, cnp.ndarray out) except -1:
        """A signature head (Model._head_forward) over the stepped slots' states, into out."""
        cdef cnp.ndarray feats = np.empty((n, 1, self.head_width), np.float32)
        cdef cnp.ndarray one
        cdef Py_ssize_t r
        cdef int64_t s
        cdef int col = 0
        sl = slots.astype(np.int64, copy=False)
        for k, d, dirs, w in self.head_parts:
            one = np.empty((dirs, 1, w), np.float32)
            for r in range(n):
                s = sl[r]
                frnn_streampool_get_state(self.p, s, k, <float *>cnp.PyArray_DATA(one))
                feats[r, 0, col:col + w] = one[d, 0]
            col += w
        y, _ = self.head.forward(feats, None, None, False)
        out[...] = y[:, 0]
        return 0

    cdef object _slots(self, object slots):
        """slots as a 1-D native integer ndarray (ndarrays that qualify pass uncopied)."""
        if self.p == NULL:
            raise FastRNNError("this StreamPool is not initialised")
        if not (cnp.PyArray_Check(slots) and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>slots)
                and _dtype_code(cnp.PyArray_TYPE(<cnp.ndarray>slots)) >= FRNN_DT_I8):
            given = slots
            try:
                slots = np.asarray(slots)
            except (ValueError, TypeError) as e:
                raise ShapeError(f"step: slots is not an array: {e}") from None
            if slots.dtype.kind not in "iu":
                if slots.size:
                    raise ArgumentTypeError(f"step: slots must be integers, got dtype {slots.dtype}")
                slots = slots.astype(np.int64)   # [] is float64 to NumPy
            elif isinstance(given, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in given):
                # NumPy reads [0, True] as [0, 1]: a bool is never a slot id
                raise ArgumentTypeError(f"step: slots must be integers, got a bool in {given!r}")
            if not slots.dtype.isnative:
                slots = slots.astype(slots.dtype.newbyteorder("="))
        if cnp.PyArray_NDIM(<cnp.ndarray>slots) != 1:
            raise ShapeError(f"step: slots must be 1-D, got shape {slots.shape}")
        if cnp.PyArray_DIMS(<cnp.ndarray>slots)[0] > frnn_streampool_capacity(self.p):
            raise ShapeError(f"step: {len(slots)} slots given, the pool has {self.capacity}")
        return slots

    cdef int _diagnose(self, cnp.ndarray slots) except -1:
        """Raise the ShapeError that names the first bad slot (the C step only says EINVAL)."""
        seen = set()
        for v in slots.tolist():
            self._slot(v, "step")
            if v in seen:
                raise ShapeError(f"step: slot {v} is given twice")
            seen.add(v)
        return 0

    def step(self, slots, x):
        """Step `slots` (1-D integers, distinct, open) with x (row i feeds slots[i]); returns a new
        (len(slots), output_size) float32 array."""
        slots = self._slots(slots)
        cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>slots)[0]
        cdef cnp.ndarray out = np.empty((n, self.out_size), np.float32)
        self._step(slots, x, out, n)
        return out

    def step_into(self, slots, x, out):
        """step, writing into `out` (float32 C-contiguous (len(slots), output_size))."""
        slots = self._slots(slots)
        cdef Py_ssize_t n = cnp.PyArray_DIMS(<cnp.ndarray>slots)[0]
        _check_out(out, n, self.out_size)
        self._step(slots, x, out, n)

    def state(self, slot):
        """A snapshot of the slot's state: as a batch-1 Stream's `state` (copies)."""
        cdef int64_t s = self._slot(slot, "state")
        out = []
        cdef cnp.ndarray a
        self._acquire()
        try:
            for i in range(self.cm.num_states):
                dirs, width = self.cm.state_dims(i)
                a = np.empty((dirs, 1, width), np.float32)
                frnn_streampool_get_state(self.p, s, i, <float *>cnp.PyArray_DATA(a))
                out.append(a)
        finally:
            self.busy = 0
        return out

    def set_state(self, slot, state):
        """Restore a slot's state from a snapshot (state(slot), or a batch-1 Stream's state)."""
        if self.p == NULL:
            raise FastRNNError("this StreamPool is not initialised")
        # the states first: no Python code runs between the slot check and taking the pool
        arrs = self.model._check_states(state, 1, "set_state")
        cdef int64_t s = self._slot(slot, "set_state")
        cdef cnp.ndarray a
        cdef int i
        cdef frnn_status st = FRNN_OK
        self._acquire()
        try:
            for i in range(self.cm.num_states):
                a = arrs[i]
                st = frnn_streampool_set_state(self.p, s, i, <const float *>cnp.PyArray_DATA(a))
                if st:
                    break
        finally:
            self.busy = 0
        if st:
            _raise(st, "set_state")
