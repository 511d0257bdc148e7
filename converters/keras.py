"""Keras importer: .keras archives, legacy HDF5 .h5 full models (Keras 3 and Keras 2 / tf.keras)
and in-memory keras.Model objects -> fastrnn ir layers + a signature.

Reads files with json + zipfile + h5py only: converting never imports TensorFlow or Keras.

Sources and where their weights live:
  .keras (Keras 3)      zip: config.json (the model config), model.weights.h5; a layer's variables
                        are under layers/<snake_case(class)>[_<n>]/[cell|layer|forward_layer|
                        backward_layer/...]vars/<i>, named by class in model order (Keras's
                        saving_lib names by class, never by layer.name).
  .keras (Keras 2.13+)  the same zip and the same naming (Bidirectional also holds an empty
                        "layer" template group).
  .h5 (Keras 2 and 3)   root attrs model_config (JSON), keras_version; group model_weights/<name>
                        with attr weight_names listing the layer's weights in layer.weights order.
  keras.Model           model.get_config(); layer.get_weights().

Config differences handled (Keras 2 -> 3): Sequential config a list (Keras <= 2.2) or
{"layers": [...]}; InputLayer batch_input_shape -> batch_shape; input_shape/batch_input_shape on
the first layer; functional inbound_nodes as nested lists [[name, node, tensor, kwargs]] (2) or
{"args": [keras tensors with keras_history]} (3); class names CuDNNLSTM/CuDNNGRU are refused.

Framework quirks, each handled where noted below:
- Kernels are stored (in, units*G) and are transposed to torch's (G*H, in).
- LSTM gate order i,f,c,o = torch's i,f,g,o; one bias (b_ih), b_hh = 0.
- GRU gate order z,r,h -> torch r,z,n. reset_after=True keeps an input and a recurrent bias
  (bias shape (2, 3H)) = torch / linear_before_reset; reset_after=False (Keras 1 default) has one
  bias and applies r before the recurrent matmul = linear_before_reset=False.
- hard_sigmoid is clip(0.2x + 0.5) in Keras 2 and clip(x/6 + 0.5) in Keras 3 (relu6(x+3)/6); the
  file's keras_version decides. leaky_relu as an activation name has slope 0.2 in both
  (Keras 2 resolves it to tf.nn.leaky_relu).
- go_backwards: the layer reads the sequence from the end and returns its outputs in that
  (reversed) order; the next layer reads them in that order. fastrnn keeps a "parity": the
  tensor flowing in Keras is the time-flip of the IR's. A recurrent layer runs in IR direction
  reverse iff go_backwards xor parity, and its output's parity is the same bit. Layers that act
  per step ignore parity; a model output with parity 1 is flipped back (signature flip).
- Bidirectional: the backward layer's output is flipped back into time order by Keras; under
  parity 1 Keras's forward layer becomes the IR's reverse direction, so the concat halves are
  swapped -- carried as a pending column permutation folded into the next Dense/recurrent input
  weights, or into the output signature.
- Masks (Embedding mask_zero, Masking): a masked step carries state and the previous output;
  Bidirectional forces zero_output_for_mask=return_sequences on its layers (Keras 2 and 3), and
  Keras 3 stores zero_output_for_mask in the config. A go_backwards layer returns its sequence
  reversed but passes the mask on unreversed; a later masked recurrent layer would read the
  misaligned mask, which fastrnn cannot express: refused.
- return_state=True: outputs [y, h(, c)] per direction (Bidirectional: forward states, then
  backward). For return_sequences=False, state h *is* y: a layer may consume either.
- stateful=True: the model carries state from one predict call to the next; in fastrnn that is a
  Stream (one step at a time), or predict(x, initial_state=s, return_state=True). Recorded in meta.
- time_major=True (Keras 2): input is (time, batch, features); fastrnn's predict stays batch-major
  (DESIGN section 1); recorded in meta so --check feeds Keras the transposed input.
- Identity at inference: Dropout, SpatialDropout1D, GaussianNoise, GaussianDropout, AlphaDropout,
  ActivityRegularization; dropout/recurrent_dropout, unroll, implementation, use_cudnn.
Anything else is refused with UnsupportedError naming the layer, its class and the option.

Trust: before any weight is read, every object of an HDF5 file (the .h5, or a .keras archive's
model.weights.h5) is checked to hold its data itself: external storage, external and
user-defined links and virtual datasets, which would read other local files into the weights,
are refused (check_h5_self_contained). Archive members and datasets are bounded before they are
inflated or read (read_member, check_dataset_size). HDF5 itself is parsed by libhdf5 (through
h5py), which a crafted file can make loop or crash: convert such files with isolate=True
(fastrnn/isolate.py; fastrnn-convert's default). docs/security.md has the trust model.
"""
from __future__ import annotations

import json
import re
import zipfile

import numpy as np

from fastrnn import ir
from fastrnn.errors import ModelFormatError, UnsupportedError

from . import ZIP_ERRORS, require

IDENTITY = {"Dropout", "SpatialDropout1D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
            "ActivityRegularization"}
RECURRENT = {"SimpleRNN": "rnn", "LSTM": "lstm", "GRU": "gru"}
CELL_CLASSES = {"SimpleRNNCell": "rnn", "LSTMCell": "lstm", "GRUCell": "gru"}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}

# config keys that do not change inference (initialisers, regularisers, training-only)
_IGNORED = {"name", "trainable", "dtype", "kernel_initializer", "recurrent_initializer",
            "bias_initializer", "embeddings_initializer", "unit_forget_bias", "kernel_regularizer",
            "recurrent_regularizer", "bias_regularizer", "activity_regularizer",
            "embeddings_regularizer", "kernel_constraint", "recurrent_constraint",
            "bias_constraint", "embeddings_constraint", "dropout", "recurrent_dropout", "seed",
            "unroll", "implementation", "use_cudnn", "batch_input_shape", "input_shape",
            "batch_size", "input_dtype", "input_length", "sparse", "ragged", "build_config",
            "zero_output_for_mask", "return_sequences", "return_state", "go_backwards", "stateful",
            "time_major", "units", "activation", "recurrent_activation", "use_bias", "reset_after",
            "noise_shape", "rate", "stddev", "l1", "l2", "synchronized", "registered_name"}


def _snake(name):
    # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# ---------------------------------------------------------------------------------------------
# reading the source: (config, keras_version, weight reader)

class _H5Weights:
    """Legacy .h5: model_weights/<layer name> with attr weight_names."""

    def __init__(self, f, path):
        self.f, self.path = f, path
        if "model_weights" not in f:
            raise ModelFormatError(f"{path}: an HDF5 file without model_weights: a weights-only file "
                                   f"(save_weights) has no architecture; save the whole model")
        self.g = f["model_weights"]

    def get(self, layer):
        name = layer["name"]
        if name not in self.g:
            return []
        g = self.g[name]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
        out = []
        for n in names:
            if n not in g or not isinstance(g[n], _h5py().Dataset):
                raise ModelFormatError(f"{self.path}: weight {n!r} of layer {name!r} is missing")
            out.append(g[n])              # read by _weights, after its shape is checked
        return out


class _ZipWeights:
    """.keras archive: model.weights.h5, variables under layers/<snake_case class>[_n]."""

    _ORDER = ("cell", "layer", "forward_layer", "backward_layer",          # then MultiHeadAttention's,
              "query_dense", "key_dense", "value_dense", "output_dense")  # in its weights' order

    def __init__(self, h5, path):
        self.h5, self.path = h5, path
        self.used = {}

    def _collect(self, g, out):
        if "vars" in g:
            v = g["vars"]
            for i in range(len(v)):
                if str(i) not in v or not isinstance(v[str(i)], _h5py().Dataset):
                    raise ModelFormatError(f"{self.path}: {v.name} lacks variable {i}")
                out.append(v[str(i)])     # read by _weights, after its shape is checked
        kids = [k for k in g if k != "vars" and hasattr(g[k], "keys")]
        kids.sort(key=lambda k: (self._ORDER.index(k) if k in self._ORDER else len(self._ORDER), k))
        for k in kids:
            self._collect(g[k], out)

    def key(self, layer):
        base = _snake(layer["class_name"])
        n = self.used.get(base)
        self.used[base] = 0 if n is None else n + 1
        return base if n is None else f"{base}_{n + 1}"

    def get(self, layer):
        k = layer["_wkey"]
        root = self.h5["layers"] if "layers" in self.h5 else self.h5
        if k not in root:
            return []
        out = []
        self._collect(root[k], out)
        return out


class _LiveWeights:
    def __init__(self, model):
        self.model = model

    def get(self, layer):
        return [np.asarray(w) for w in self.model.get_layer(layer["name"]).get_weights()]


def _h5py():
    return require("h5py", "reading Keras files")


MAX_JSON_BYTES = 64 << 20     # config.json / metadata.json of a .keras (real ones: kilobytes)
MIN_BOMB_BYTES = 64 << 20     # below this, a member or dataset may expand by any ratio
MAX_EXPANSION = 20            # above it, at most this many bytes per byte stored (float weights
                              # compress by less than 1.3x; a decompression bomb by 1000x)


def read_member(z, name, path, limit=None):
    """The bytes of archive member `name`, refusing a decompression bomb before it is inflated:
    at most `limit` bytes if given, else max(MIN_BOMB_BYTES, MAX_EXPANSION x its compressed
    size). The limit is enforced while reading, so a header that lies about the size does not
    get past it."""
    info = z.getinfo(name)
    if limit is None:
        limit = max(MIN_BOMB_BYTES, MAX_EXPANSION * info.compress_size)
    if info.file_size > limit:
        raise ModelFormatError(f"{path}: archive member {name!r} inflates to {info.file_size} bytes from "
                               f"{info.compress_size} (more than the {limit} allowed): a decompression bomb")
    out, n = [], 0
    with z.open(info) as f:
        while True:
            chunk = f.read(min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            out.append(chunk)
            n += len(chunk)
            if n > limit:
                raise ModelFormatError(f"{path}: archive member {name!r} inflates to more than {limit} "
                                       f"bytes (its header says {info.file_size}): a decompression bomb")
    return b"".join(out)


def check_dataset_size(d, where):
    """Refuse an HDF5 dataset that declares far more data than the file stores for it (a chunked,
    compressed or never-written dataset read back as gigabytes of fill), before reading it: the
    same rule as read_member's."""
    declared = int(d.size) * int(d.dtype.itemsize)
    stored = int(d.id.get_storage_size())
    if declared > max(MIN_BOMB_BYTES, MAX_EXPANSION * stored):
        raise ModelFormatError(f"{where}: weight {d.name!r} declares shape {d.shape} ({declared} bytes) but "
                               f"the file stores {stored} bytes of it: a decompression bomb")


MAX_H5_OBJECTS = 100_000      # groups + datasets a Keras weights file may hold (real ones: hundreds)


def check_h5_self_contained(f, path):
    """Refuse an HDF5 file whose data can come from outside it, before a byte of data is read.

    HDF5 lets a file point elsewhere: a dataset with external storage reads its bytes from any
    named file (absolute, or relative to the working directory, also for a file opened from
    memory); an external link opens a group or dataset of another file; a virtual dataset maps
    regions of other datasets, possibly in other files; a user-defined link is resolved by a
    plugin. Converting such a file would copy another local file's bytes into the weights, and
    from there into predictions and any saved .frnn. Keras never writes any of these, so every
    one is refused (ModelFormatError naming the object). Soft links stay inside the file and
    are not followed (the objects they name are checked where they are hard-linked). The walk
    is bounded (MAX_H5_OBJECTS objects, hard-link cycles visited once)."""
    h5py = _h5py()
    seen, todo, count = set(), [f], 0

    def bad(name, why):
        raise ModelFormatError(f"{path}: HDF5 object {name!r} {why}; fastrnn reads weights only from "
                               f"inside the file (Keras never writes this), so the file is refused")

    while todo:
        g = todo.pop()
        for k in g:
            name = f"{g.name.rstrip('/')}/{k}"
            link = g.get(k, getlink=True)
            if isinstance(link, h5py.SoftLink):
                continue
            if isinstance(link, h5py.ExternalLink):
                bad(name, f"is an external link to {link.filename!r}:{link.path!r}")
            if not isinstance(link, h5py.HardLink):
                bad(name, f"is a {type(link).__name__} (a user-defined link)")
            obj = g[k]
            key = (obj.id.fileno, h5py.h5o.get_info(obj.id).addr)
            if key in seen:
                continue
            seen.add(key)
            count += 1
            if count > MAX_H5_OBJECTS:
                raise ModelFormatError(f"{path}: more than {MAX_H5_OBJECTS} HDF5 objects: not a Keras file")
            if isinstance(obj, h5py.Group):
                todo.append(obj)
            elif isinstance(obj, h5py.Dataset):
                plist = obj.id.get_create_plist()
                if plist.get_layout() == h5py.h5d.VIRTUAL:
                    bad(name, "is a virtual dataset (its data is mapped from other datasets or files)")
                if plist.get_external_count():
                    files = sorted({e[0].decode(errors="replace") if isinstance(e[0], bytes) else str(e[0])
                                    for e in (plist.get_external(i) for i in range(plist.get_external_count()))})
                    bad(name, f"stores its data in external file(s) {', '.join(map(repr, files))}")


def load_source(src):
    """-> (model config dict {class_name, config}, keras major version, weight reader, closer)."""
    if not isinstance(src, (str, bytes)) and not hasattr(src, "__fspath__"):
        return _live(src)
    import os
    path = os.fspath(src)
    h5py = _h5py()
    if zipfile.is_zipfile(path):
        import io
        try:
            with zipfile.ZipFile(path) as z:     # read what is needed, then close the archive
                names = set(z.namelist())
                cfg = json.loads(read_member(z, "config.json", path, MAX_JSON_BYTES))
                meta = (json.loads(read_member(z, "metadata.json", path, MAX_JSON_BYTES))
                        if "metadata.json" in names else {})
                weights = read_member(z, "model.weights.h5", path) if "model.weights.h5" in names else None
        except (ModelFormatError, UnsupportedError):
            raise
        except (KeyError,) + ZIP_ERRORS as e:
            raise ModelFormatError(f"{path}: not a readable .keras archive ({type(e).__name__}: {e})") from None
        version = str(meta.get("keras_version", "3"))
        if weights is None:
            raise UnsupportedError(f"{path}: weights stored as {sorted(n for n in names if 'weights' in n)}; "
                                   f"only model.weights.h5 archives are read")
        try:
            h5 = h5py.File(io.BytesIO(weights), "r")
        except OSError as e:
            raise ModelFormatError(f"{path}: model.weights.h5 is not HDF5 ({e})") from None
        try:
            check_h5_self_contained(h5, f"{path}: model.weights.h5")
        except BaseException:
            h5.close()
            raise
        return cfg, _major(version), _ZipWeights(h5, path), h5.close
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ModelFormatError(f"{path}: not a readable HDF5 file ({e})") from None
    try:
        check_h5_self_contained(f, path)
        raw = f.attrs.get("model_config")
        if raw is None:
            raise ModelFormatError(f"{path}: an HDF5 file without model_config: not a Keras full-model "
                                   f"file (a weights-only file has no architecture; save the whole model)")
        cfg = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        v = f.attrs.get("keras_version", b"2")
        version = v.decode() if isinstance(v, bytes) else str(v)
        return cfg, _major(version), _H5Weights(f, path), f.close
    except (ValueError, UnicodeDecodeError) as e:
        f.close()
        raise ModelFormatError(f"{path}: model_config is not JSON ({e})") from None
    except Exception:
        f.close()
        raise


def _major(version):
    m = re.match(r"\s*(\d+)", version)
    return int(m.group(1)) if m else 3


def _plain(v):
    """A live get_config() as its JSON form (tuples become lists, as in a file)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _live(model):
    mod = type(model).__module__.split(".")[0]
    if mod in ("tf_keras", "tensorflow"):
        version = 2
    else:
        import keras
        version = _major(keras.__version__)
    if not hasattr(model, "get_config") or not hasattr(model, "get_layer"):
        raise UnsupportedError(f"convert: a {type(model).__name__} is not a keras.Model")
    cfg = {"class_name": type(model).__name__, "config": _plain(model.get_config())}
    if cfg["class_name"] not in ("Sequential", "Functional", "Model"):
        cfg["class_name"] = "Functional" if "input_layers" in cfg["config"] else cfg["class_name"]
    return cfg, version, _LiveWeights(model), lambda: None


# ---------------------------------------------------------------------------------------------
# the model config -> a chain of layers and the model outputs

def _history(obj):
    """Every keras tensor reference (layer_name, node_index, tensor_index) in a Keras 3 inbound
    node structure, in order."""
    out = []
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj.get("config", {}).get("keras_history")
            if isinstance(h, list) and len(h) == 3:
                out.append((h[0], h[1], h[2]))
            return out
        for v in obj.values():
            out += _history(v)
    elif isinstance(obj, list):
        for v in obj:
            out += _history(v)
    return out


def _inbound(layer):
    """-> list (one per call of the layer) of lists of (name, node, tensor) it reads."""
    nodes = layer.get("inbound_nodes") or []
    calls = []
    for node in nodes:
        if isinstance(node, dict):                        # Keras 3
            calls.append(_history(node.get("args", [])) + _history(node.get("kwargs", {})))
        elif isinstance(node, list):                      # Keras 2: [[name, node, tensor, kwargs], ...]
            refs = []
            for ref in node:
                if isinstance(ref, list) and len(ref) >= 3 and isinstance(ref[0], str):
                    refs.append((ref[0], ref[1], ref[2]))
                    if len(ref) > 3 and isinstance(ref[3], dict):
                        refs += _k2_kwarg_refs(ref[3])
            calls.append(refs)
    return calls


def _k2_kwarg_refs(kw):
    out = []
    for v in kw.values():
        if isinstance(v, list) and len(v) >= 3 and isinstance(v[0], str) and isinstance(v[1], int):
            out.append((v[0], v[1], v[2]))
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, list):
                    out += _k2_kwarg_refs({"_": x})
    return out


_MASK_PASSES = {"SimpleRNN", "LSTM", "GRU", "RNN", "Bidirectional"}   # with return_sequences=True


def _layer_name(lc):
    """a functional config's layer entry (a dict with a config dict) -> its name"""
    return lc.get("name") or lc["config"].get("name")


def _drop_implicit_masks(layers, outputs):
    """Keras 3 writes the mask of an Embedding(mask_zero=True) into the config as a layer of its
    own when a recurrent layer after it returns its state: NotEqual(ids, 0) -> the `mask` keyword
    of every recurrent layer fed from that Embedding. That mask is the one the Embedding implies
    (fastrnn applies it from mask_zero along the chain), so such a NotEqual and its `mask`
    references are dropped, leaving the chain: only when the NotEqual compares the very tensor the
    Embedding reads with 0, and the masked layer reads that Embedding's output directly or
    through recurrent layers that return sequences and identity layers (which pass the mask on
    unchanged). outputs: names of the model's output layers (a NotEqual among them stays).
    -> the layers without them (configs copied where changed)."""
    by_name = {_layer_name(l): l for l in layers if isinstance(l, dict) and isinstance(l.get("config"), dict)}

    def one_node(l):
        nodes = l.get("inbound_nodes")
        return nodes[0] if isinstance(nodes, list) and len(nodes) == 1 and isinstance(nodes[0], dict) else None

    def source_embedding(node):
        """(the Embedding the layer of this node reads, through mask-passing layers, its node)
        or (None, None)"""
        for _ in range(len(layers)):
            reads = _history(node.get("args", []))
            up = by_name.get(reads[0][0]) if len(reads) == 1 else None
            node = one_node(up) if up else None
            if node is None:
                return None, None
            cls = up.get("class_name")
            if cls == "Embedding":
                return up, node
            cfg = up["config"]
            if cls == "Bidirectional":
                cfg = cfg.get("layer", {}).get("config") if isinstance(cfg.get("layer"), dict) else None
            if not (cls in IDENTITY or (cls in _MASK_PASSES and isinstance(cfg, dict)
                                        and cfg.get("return_sequences") is True)):
                return None, None
        return None, None

    drop, out = set(), []
    for l in layers:
        node = one_node(l) if isinstance(l, dict) else None
        kw = node.get("kwargs") if node else None
        mask = kw.get("mask") if isinstance(kw, dict) else None
        if not isinstance(mask, dict):
            out.append(l)
            continue
        src = _history(mask)
        ne = by_name.get(src[0][0]) if len(src) == 1 else None
        ne_node = one_node(ne) if ne else None
        ne_args = ne_node.get("args") if ne_node else None
        emb, emb_node = source_embedding(node)
        ids = (_history(ne_args[0]) if isinstance(ne_args, list) and len(ne_args) == 2
               and isinstance(ne_args[0], dict) and ne_args[0].get("class_name") == "__keras_tensor__"
               else [])
        ok = (len(ids) == 1 and ne.get("class_name") == "NotEqual" and not ne_node.get("kwargs")
              and type(ne_args[1]) in (int, float) and ne_args[1] == 0
              and emb is not None and emb["config"].get("mask_zero") is True
              and ids == _history(emb_node.get("args", [])))
        if not ok:
            out.append(l)
            continue
        drop.add(src[0][0])
        kw = {k: v for k, v in kw.items() if k != "mask"}
        out.append({**l, "inbound_nodes": [{**node, "kwargs": kw}]})
    # a NotEqual some other layer still reads, or that is a model output, stays (and fails the
    # chain check, as it should)
    still = {r[0] for l in out if isinstance(l, dict) for call in _inbound(l) for r in call} | set(outputs)
    return [l for l in out if not (isinstance(l, dict) and isinstance(l.get("config"), dict)
                                   and _layer_name(l) in drop - still)]


def _refs(v):
    """output_layers / input_layers: [[name, node, tensor], ...] or a single [name, node, tensor]."""
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        return [tuple(v)]
    if not isinstance(v, list):
        raise ModelFormatError(f"bad input/output layer list {v!r}")
    return [tuple(x) for x in v]


def _chain(cfg):
    """-> (layers in order (dicts with class_name, config, name), outputs [(chain index, tensor)],
    input layer config or None)."""
    cls = cfg.get("class_name")
    c = cfg.get("config")
    if cls == "Sequential":
        layers = c if isinstance(c, list) else c.get("layers") if isinstance(c, dict) else None
        if not isinstance(layers, list):
            raise ModelFormatError("Sequential config without a list of layers")
        out = []
        for lc in layers:
            if not isinstance(lc, dict) or "class_name" not in lc or not isinstance(lc.get("config"), dict):
                raise ModelFormatError(f"bad layer entry in the model config: {str(lc)[:120]}")
            out.append({"class_name": lc["class_name"], "config": lc["config"],
                        "name": lc["config"].get("name", lc["class_name"])})
        if not out:
            raise ModelFormatError("the model has no layers")
        inp = out[0]["config"] if out[0]["class_name"] == "InputLayer" else None
        body = [l for l in out if l["class_name"] != "InputLayer"]
        if not body:
            raise UnsupportedError("the model has no layers after its input")
        return out, body, [(len(body) - 1, 0)], inp
    if cls not in ("Functional", "Model") or not isinstance(c, dict) or "layers" not in c:
        raise UnsupportedError(f"model class {cls!r}: only Sequential and functional models convert")
    layers = c["layers"]
    if not isinstance(layers, list):
        raise ModelFormatError("functional config: layers is not a list")
    layers = _drop_implicit_masks(layers, [r[0] for r in _refs(c.get("output_layers", []))])
    by_name = {}
    for lc in layers:
        if not isinstance(lc, dict) or not isinstance(lc.get("config"), dict):
            raise ModelFormatError(f"bad layer entry in the model config: {str(lc)[:120]}")
        name = _layer_name(lc)
        by_name[name] = {"class_name": lc["class_name"], "config": lc["config"], "name": name,
                         "calls": _inbound(lc)}
    ins = _refs(c.get("input_layers", []))
    outs = _refs(c.get("output_layers", []))
    if len(ins) != 1:
        raise UnsupportedError(f"the model has {len(ins)} inputs ({', '.join(i[0] for i in ins)}); "
                               f"fastrnn models take one input")
    # walk from the input: each next layer reads exactly one tensor of the previous one, except a
    # Concatenate of global poolings of one sequence (the Kaggle idiom), which is one Pool layer
    consumers, joins = {}, {}
    for l in by_name.values():
        if len(l["calls"]) > 1:
            raise UnsupportedError(f"layer {l['name']!r} ({l['class_name']}) is called {len(l['calls'])} "
                                   f"times (a shared layer): not a chain")
        for call in l["calls"]:
            srcs = {r[0] for r in call}
            if len(srcs) > 1 or len(call) > 1:
                if l["class_name"] != "Concatenate":
                    raise UnsupportedError(
                        f"layer {l['name']!r} ({l['class_name']}) takes several inputs "
                        f"({', '.join(r[0] for r in call)}; e.g. initial_state): not a chain")
                joins[l["name"]] = call
            for r in call:
                consumers.setdefault(r[0], []).append((l["name"], r[2]))
    order, reads = [], []
    cur = ins[0][0]
    if cur not in by_name:
        raise ModelFormatError(f"input layer {cur!r} is not in the config")
    seen = {cur}
    while True:
        nxt = consumers.get(cur, [])
        if not nxt:
            break
        if len(nxt) > 1:
            pooled = _pool_join(by_name, consumers, joins, cur, nxt)
            if pooled is None:
                raise UnsupportedError(f"the output of layer {cur!r} feeds {len(nxt)} layers "
                                       f"({', '.join(n for n, _ in nxt)}): not a chain")
            entry, names = pooled
            seen.update(names)
            order.append(entry)
            reads.append(0)
            cur = entry["name"]
            seen.add(cur)
            joins.pop(cur)
            continue
        cur, t = nxt[0]
        if cur in seen:
            raise ModelFormatError(f"the model config has a cycle at {cur!r}")
        seen.add(cur)
        order.append(by_name[cur])
        reads.append(t)
    if joins:                        # a Concatenate the walk did not read as a pooled join
        name, call = next(iter(joins.items()))
        raise UnsupportedError(f"layer {name!r} (Concatenate) takes several inputs "
                               f"({', '.join(r[0] for r in call)}): not a chain (a Concatenate of global "
                               f"poolings of one sequence is the only join fastrnn reads)")
    for name, l in by_name.items():
        if name not in seen:
            raise UnsupportedError(f"layer {name!r} ({l['class_name']}) is not on the chain from the "
                                   f"input to the outputs")
    first = by_name[ins[0][0]]
    inp = first["config"] if first["class_name"] == "InputLayer" else None
    body = ([] if inp is not None else [first]) + order
    idx = {l["name"]: i for i, l in enumerate(body)}
    for l, t in zip(order, reads):
        l["reads"] = t
    out = []
    for name, _, t in outs:
        if name not in idx:
            raise UnsupportedError(f"model output {name!r} is the input itself")
        out.append((idx[name], t))
    if not body:
        raise UnsupportedError("the model has no layers after its input")
    return list(by_name.values()), body, out, inp


GLOBAL_POOLS = {"GlobalAveragePooling1D": "mean", "GlobalAvgPool1D": "mean", "GlobalMaxPooling1D": "max",
                "GlobalMaxPool1D": "max"}


def _pool_join(by_name, consumers, joins, cur, nxt):
    """concatenate([GlobalAveragePooling1D()(x), GlobalMaxPooling1D()(x)]) where x is cur's
    output: -> (one chain entry "_PoolConcat" named as the Concatenate, with the pools' kinds in
    its input order, and the names it stands for), or None when cur's readers are not that."""
    names = [n for n, _ in nxt]
    if not all(by_name[n]["class_name"] in GLOBAL_POOLS for n in names) or len(set(names)) != len(names):
        return None
    after = [consumers.get(n, []) for n in names]
    if not all(len(a) == 1 for a in after) or len({a[0][0] for a in after}) != 1:
        return None
    cat = by_name[after[0][0][0]]
    call = joins.get(cat["name"])
    if call is None or sorted(r[0] for r in call) != sorted(names) or \
            cat["config"].get("axis", -1) not in (-1, 1):
        return None
    pools = [by_name[r[0]] for r in call]
    entry = {"class_name": "_PoolConcat", "config": {}, "name": cat["name"], "pools": pools}
    return entry, names + [cat["name"]]


# ---------------------------------------------------------------------------------------------
# layers

def _act(name, version, where, allow_rowwise=False):
    """A Keras activation (name or serialised dict) -> ir.Act."""
    if isinstance(name, dict):
        inner = name.get("config")
        if name.get("class_name") in ("function", "Function") and isinstance(inner, str):
            name = inner
        elif isinstance(inner, dict) and isinstance(inner.get("name"), str) \
                and name.get("class_name") in ("function",):
            name = inner["name"]
        else:
            raise UnsupportedError(f"{where}: activation {name.get('class_name')!r} (a custom or "
                                   f"layer activation) is not supported")
    if name is None:
        name = "linear"
    if not isinstance(name, str):
        raise ModelFormatError(f"{where}: bad activation {name!r}")
    n = name.lower()
    if n == "hard_sigmoid":
        # Keras 3: relu6(x + 3) / 6; Keras 2 (tf.keras backend): clip(0.2 x + 0.5, 0, 1)
        return ir.Act("hard_sigmoid", 1.0 / 6.0 if version >= 3 else 0.2, 0.5)
    if n == "leaky_relu":
        return ir.Act("leaky_relu", 0.2)
    if n == "elu":
        return ir.Act("elu", 1.0)
    simple = {"linear", "sigmoid", "tanh", "relu", "softsign", "softplus", "selu", "exponential",
              "relu6", "swish", "silu", "gelu", "mish", "hard_silu", "hard_swish", "hard_tanh"}
    if n in simple:
        return ir.Act(n)            # hard_silu / hard_swish: ir's hardswish; hard_tanh: clip(-1, 1) (ir.ALIASES)
    if n in ("softmax", "log_softmax"):
        if not allow_rowwise:
            raise UnsupportedError(f"{where}: activation {name!r} inside a recurrent cell is not supported")
        return ir.Act(n)
    raise UnsupportedError(f"{where}: activation {name!r} is not supported "
                           f"(supported: {', '.join(sorted(simple | {'hard_sigmoid', 'leaky_relu', 'elu', 'softmax', 'log_softmax'}))})")


def _where(l):
    return f"layer {l['name']!r} ({l['class_name']})"


def _check_dtype(l):
    dt = l["config"].get("dtype")
    name = dt.get("config", {}).get("name") if isinstance(dt, dict) else dt
    if isinstance(name, str) and not (name in ("float32", "float16", "bfloat16", "float64")
                                      or name.startswith("mixed_")):
        raise UnsupportedError(f"{_where(l)}: option dtype={name!r} (a quantized layer) is not supported")


def _refuse_extras(l, cfg, allowed):
    for k, v in cfg.items():
        if k in allowed or k in _IGNORED:
            continue
        if k in ("lora_rank", "quantization_config") and not v:
            continue
        raise UnsupportedError(f"{_where(l)}: option {k}={v!r} is not supported")


def _weights(l, arrs, shapes):
    """Check a layer's weight list against expected shapes (None = any), then read it: arrays,
    or HDF5 datasets, which are read only after their shape, dtype and stored size pass."""
    if len(arrs) != len(shapes):
        raise ModelFormatError(f"{_where(l)}: expected {len(shapes)} weight arrays, the file has {len(arrs)}"
                               + ("" if arrs else " (weights missing from the file)"))
    for i, (a, s) in enumerate(zip(arrs, shapes)):
        if a.dtype.kind not in "fiu":
            raise ModelFormatError(f"{_where(l)}: weight {i} has dtype {a.dtype}")
        if s is not None and tuple(a.shape) != tuple(s):
            raise ModelFormatError(f"{_where(l)}: weight {i} has shape {a.shape}, expected {tuple(s)}")
        if not isinstance(a, np.ndarray) and hasattr(a, "id"):
            check_dataset_size(a, _where(l))
    return [np.asarray(a[()] if not isinstance(a, np.ndarray) else a, np.float32) for a in arrs]


def _gru_reorder(a, H):
    # Keras stores GRU gates z, r, h along the last axis; torch (canonical) wants r, z, n
    return np.concatenate([a[..., H:2 * H], a[..., :H], a[..., 2 * H:]], axis=-1)


def _cell_weights(l, cell, c, arrs, I, version):
    """One direction's Keras weights [kernel, recurrent_kernel, (bias)] -> canonical dict."""
    H = int(c["units"])
    G = GATES[cell]
    use_bias = bool(c.get("use_bias", True))
    reset_after = cell == "gru" and bool(c.get("reset_after", version >= 2))
    shapes = [(I, G * H), (H, G * H)]
    if use_bias:
        shapes.append((2, G * H) if reset_after else (G * H,))
    k, rk, *b = _weights(l, arrs, shapes)
    if cell == "gru":
        k, rk = _gru_reorder(k, H), _gru_reorder(rk, H)
        if b:
            b = [_gru_reorder(b[0], H)]
    w = {"W_ih": np.ascontiguousarray(k.T), "W_hh": np.ascontiguousarray(rk.T)}
    if use_bias:
        if reset_after:
            # Keras reset_after: bias[0] is the input bias, bias[1] the recurrent one (as torch)
            w["b_ih"], w["b_hh"] = b[0][0].copy(), b[0][1].copy()
        else:
            # one Keras bias, added with the input projection; torch's b_hh is then zero
            w["b_ih"], w["b_hh"] = b[0].copy(), np.zeros(G * H, np.float32)
    return w, H, reset_after


def _rnn_conf(l):
    """-> (cell kind, merged config) for SimpleRNN/LSTM/GRU or RNN(cell=...)."""
    cls, c = l["class_name"], l["config"]
    if cls in RECURRENT:
        return RECURRENT[cls], c
    if cls == "RNN":
        cell = c.get("cell")
        if not isinstance(cell, dict) or cell.get("class_name") not in CELL_CLASSES:
            what = cell.get("class_name") if isinstance(cell, dict) else type(cell).__name__
            raise UnsupportedError(f"{_where(l)}: option cell={what!r} (only SimpleRNNCell, LSTMCell, "
                                   f"GRUCell) is not supported")
        merged = dict(cell.get("config", {}))
        for k in ("return_sequences", "return_state", "go_backwards", "stateful", "unroll",
                  "time_major", "zero_output_for_mask"):
            if k in c:
                merged[k] = c[k]
        for k, v in c.items():
            if k not in merged and k not in ("cell", "name"):
                merged[k] = v
        return CELL_CLASSES[cell["class_name"]], merged
    return None, None


class _Builder:
    def __init__(self, version, reader):
        self.version = version
        self.reader = reader
        self.layers = []
        self.width = None          # features of the current tensor (None: not known yet)
        self.steps = None          # steps of the Input, when it fixes them (Flatten needs them)
        self.seq = True
        self.parity = False        # Keras tensor = time-flip of the IR tensor
        self.cols = None           # Keras feature order as IR column ranges (None = identity)
        self.masked = False
        self.mask_parity = False   # the parity when the mask was made: Keras passes a mask on
                                   # unreversed, so it lines up only while the parity is the same
        self.nstates = 0           # native states so far
        self.rec = {}              # chain index -> info of a recurrent layer
        self.state_layout = []     # Keras order of all recurrent states: [native k, dir]
        self.time_major = None
        self.stateful = False

    # -- helpers ----------------------------------------------------------------------------
    def _need_width(self, l, n):
        if self.width is None:
            self.width = n
        if self.width != n:
            raise ModelFormatError(f"{_where(l)}: its weights take {n} features, the previous layer "
                                   f"gives {self.width}")

    def _in_features(self, arrs):
        """Input features of a layer: rows of its first (kernel) weight, else the current width."""
        return arrs[0].shape[0] if arrs and arrs[0].ndim == 2 else self.width

    def _permute_in(self, *Ws):
        """Fold a pending column permutation into the input weights (out, in) of the layer that
        reads it (both directions of a Bidirectional); the permutation is then used up."""
        if self.cols is None:
            return Ws
        idx = np.concatenate([np.arange(a, b) for a, b in self.cols])
        self.cols = None
        out = []
        for W in Ws:
            W2 = np.empty_like(W)
            W2[:, idx] = W     # Keras column j is IR column idx[j]
            out.append(W2)
        return out

    # -- layers -----------------------------------------------------------------------------
    def add(self, i, l):
        cls, c = l["class_name"], l["config"]
        _check_dtype(l)
        if cls in IDENTITY:
            return
        if cls == "Embedding":
            return self._embedding(l, c)
        if cls == "Masking":
            _refuse_extras(l, c, {"mask_value"})
            if self.width is None:
                raise UnsupportedError(f"{_where(l)}: the input feature size is unknown")
            mv = c.get("mask_value", 0.0)
            self.layers.append(ir.Masking(self.width, float(mv)))
            self.masked, self.mask_parity = True, self.parity
            return
        if cls == "Activation":
            _refuse_extras(l, c, set())
            a = _act(c.get("activation"), self.version, _where(l), allow_rowwise=True)
            if self.width is None:
                raise UnsupportedError(f"{_where(l)}: the input feature size is unknown")
            if a.kind != "linear":
                self.layers.append(ir.Activation(self.width, a))
            return
        if cls in ("ReLU", "LeakyReLU", "ELU", "Softmax"):
            return self._activation_layer(l, c, cls)
        if cls == "Flatten" and not self.seq:
            return
        if cls == "Flatten":
            return self._flatten(l, c)
        if cls == "TimeDistributed":
            inner = c.get("layer")
            if not isinstance(inner, dict) or inner.get("class_name") not in ("Dense", "Activation") \
                    and inner.get("class_name") not in IDENTITY:
                what = inner.get("class_name") if isinstance(inner, dict) else inner
                raise UnsupportedError(f"{_where(l)}: option layer={what!r} (only Dense, Activation and "
                                       f"dropout-like layers) is not supported")
            sub = {"class_name": inner["class_name"], "config": inner.get("config", {}), "name": l["name"],
                   "_wkey": l.get("_wkey")}
            return self.add(i, sub)
        if cls == "Dense":
            return self._dense(l, c)
        if cls == "BatchNormalization":
            return self._batchnorm(l, c)
        if cls == "LayerNormalization":
            return self._layernorm(l, c)
        if cls == "UnitNormalization":
            return self._unitnorm(l, c)
        if cls in GLOBAL_POOLS:
            return self._global_pool(l, c, GLOBAL_POOLS[cls])
        if cls == "_PoolConcat":
            return self._global_pool(l, c, tuple(GLOBAL_POOLS[p["class_name"]] for p in l["pools"]),
                                     [p["config"] for p in l["pools"]])
        if cls in ("Conv1D", "Convolution1D"):
            return self._conv1d(l, c)
        if cls in ("MaxPooling1D", "AveragePooling1D", "MaxPool1D", "AvgPool1D"):
            return self._pool1d(l, c, "max" if "Max" in cls else "avg")
        if cls == "RepeatVector":
            return self._repeat(l, c)
        if cls == "Bidirectional":
            return self._bidirectional(i, l, c)
        cell, rc = _rnn_conf(l)
        if cell is not None:
            return self._recurrent(i, l, cell, rc)
        if cls in ("CuDNNLSTM", "CuDNNGRU"):
            raise UnsupportedError(f"{_where(l)}: class {cls} (a Keras 1/2 GPU-only layer) is not supported; "
                                   f"rebuild it as {cls[5:]} and load its weights")
        raise UnsupportedError(f"{_where(l)}: class {cls} is not supported (fastrnn converts Embedding, "
                               f"Masking, SimpleRNN/LSTM/GRU, Bidirectional, Dense, TimeDistributed(Dense), "
                               f"Activation, LeakyReLU, ReLU, ELU, Softmax, BatchNormalization, LayerNormalization, "
                               f"UnitNormalization, Conv1D, 1-D pooling, global pooling, RepeatVector and dropout-like "
                               f"layers)")

    def _embedding(self, l, c):
        if self.layers or self.width is not None:
            raise UnsupportedError(f"{_where(l)}: an Embedding must be the model's first layer")
        _refuse_extras(l, c, {"input_dim", "output_dim", "mask_zero"})
        V, D = int(c["input_dim"]), int(c["output_dim"])
        (E,) = _weights(l, self.reader.get(l), [(V, D)])
        self.layers.append(ir.Embedding(E, mask_zero=bool(c.get("mask_zero", False))))
        self.width = D
        self.masked = bool(c.get("mask_zero", False))

    def _dense(self, l, c):
        _refuse_extras(l, c, {"units"})
        U = int(c["units"])
        use_bias = bool(c.get("use_bias", True))
        arrs = self.reader.get(l)
        I = self._in_features(arrs)
        shapes = [(I, U)] + ([(U,)] if use_bias else [])
        k, *b = _weights(l, arrs, shapes)
        self._need_width(l, I)
        (W,) = self._permute_in(np.ascontiguousarray(k.T))    # Keras kernel (in, out); ir (out, in)
        a = _act(c.get("activation"), self.version, _where(l), allow_rowwise=True)
        self.layers.append(ir.Dense(W, b[0] if b else None, a))
        self.width = U

    def _batchnorm(self, l, c):
        """BatchNormalization at inference: gamma (x - mean) / sqrt(var + eps) + beta over the
        feature axis, a per-feature scale and shift: a diagonal Dense, which passes.fold merges
        into the Dense before or after it. Keras stores [gamma (scale=True), beta (center=True),
        moving_mean, moving_variance]."""
        _refuse_extras(l, c, {"axis", "epsilon", "center", "scale", "momentum", "beta_initializer",
                              "gamma_initializer", "moving_mean_initializer", "moving_variance_initializer",
                              "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint",
                              "renorm", "renorm_clipping", "renorm_momentum", "fused", "virtual_batch_size",
                              "adjustment"})
        if c.get("renorm") or c.get("virtual_batch_size") is not None or c.get("adjustment") is not None:
            raise UnsupportedError(f"{_where(l)}: batch renormalisation options are not supported")
        gamma, beta, (mean, var) = self._norm_weights(l, c, 2)
        s = (gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + float(c.get("epsilon", 1e-3))))
        t = beta.astype(np.float64) - mean.astype(np.float64) * s
        self._diagonal(s, t)

    def _layernorm(self, l, c):
        """LayerNormalization over the features: the row-wise layer_norm activation (epsilon as
        Keras's, 1e-3 by default), then gamma and beta as a diagonal Dense (folded into the Dense
        after it). Keras stores [gamma (scale=True), beta (center=True)]."""
        _refuse_extras(l, c, {"axis", "epsilon", "center", "scale", "rms_scaling", "beta_initializer",
                              "gamma_initializer", "beta_regularizer", "gamma_regularizer", "beta_constraint",
                              "gamma_constraint"})
        if c.get("rms_scaling"):
            raise UnsupportedError(f"{_where(l)}: option rms_scaling=True is not supported")
        gamma, beta, _ = self._norm_weights(l, c, 0)
        self.layers.append(ir.Activation(self.width, ir.Act("layer_norm", float(c.get("epsilon", 1e-3)))))
        if c.get("center", True) or c.get("scale", True):
            self._diagonal(gamma, beta)

    def _activation_layer(self, l, c, cls):
        """The activation layers: ReLU(max_value, negative_slope, threshold 0) -> relu / relu6 /
        leaky_relu, LeakyReLU(negative_slope; Keras 2's alpha), ELU(alpha), Softmax(axis=-1)."""
        if self.width is None:
            raise UnsupportedError(f"{_where(l)}: the input feature size is unknown")
        if cls == "ReLU":
            _refuse_extras(l, c, {"max_value", "negative_slope", "threshold"})
            mx, slope, th = c.get("max_value"), float(c.get("negative_slope") or 0.0), float(c.get("threshold") or 0.0)
            if th != 0 or (mx is not None and (float(mx) != 6.0 or slope != 0)):
                raise UnsupportedError(f"{_where(l)}: ReLU(max_value={mx}, negative_slope={slope}, threshold={th}) "
                                       f"(only relu, relu6 and a leaky slope)")
            a = ir.Act("relu6") if mx is not None else ir.Act("leaky_relu", slope) if slope else ir.Act("relu")
        elif cls == "LeakyReLU":
            _refuse_extras(l, c, {"negative_slope", "alpha"})
            a = ir.Act("leaky_relu", float(c.get("negative_slope", c.get("alpha", 0.3))))
        elif cls == "ELU":
            _refuse_extras(l, c, {"alpha"})
            a = ir.Act("elu", float(c.get("alpha", 1.0)))
        else:
            _refuse_extras(l, c, {"axis"})
            self._feature_axis(l, c)
            a = ir.Act("softmax")
        self.layers.append(ir.Activation(self.width, a))

    def _unitnorm(self, l, c):
        """UnitNormalization over the features: x * min(rsqrt(sum x^2), 1 / 1e-12) in Keras 3, the
        row-wise l2_normalize activation x / max(||x||, 1e-12)."""
        _refuse_extras(l, c, {"axis"})
        self._feature_axis(l, c)
        self.layers.append(ir.Activation(self.width, ir.Act("l2_normalize", 1e-12, 0)))

    def _feature_axis(self, l, c):
        """A layer's `axis` option must be the feature axis (-1, or its index), its width known."""
        axis = c.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        if self.width is None:
            raise UnsupportedError(f"{_where(l)}: the input feature size is unknown")
        if axis not in (-1, 2 if self.seq else 1):
            raise UnsupportedError(f"{_where(l)}: option axis={axis!r} (only the feature axis, -1) is not supported")

    def _norm_weights(self, l, c, extra):
        """A normalisation over the feature axis: (gamma, beta, the `extra` vectors after them);
        gamma and beta ones and zeros where scale / center are off."""
        self._feature_axis(l, c)
        n = self.width
        center, scale = bool(c.get("center", True)), bool(c.get("scale", True))
        ws = _weights(l, self.reader.get(l), [(n,)] * (extra + center + scale))
        gamma = ws.pop(0) if scale else np.ones(n, np.float32)
        beta = ws.pop(0) if center else np.zeros(n, np.float32)
        return gamma, beta, ws

    def _diagonal(self, s, t):
        """x * s + t per feature (Keras's order): a diagonal Dense in the IR's column order."""
        if self.cols is not None:               # Keras feature j is IR column idx[j]
            idx = np.concatenate([np.arange(a, b) for a, b in self.cols])
            s2, t2 = np.empty_like(s), np.empty_like(t)
            s2[idx], t2[idx] = s, t
            s, t = s2, t2
        self.layers.append(ir.Dense(np.diag(s).astype(np.float32), t.astype(np.float32)))

    def _global_pool(self, l, c, kind, configs=None):
        """GlobalAveragePooling1D / GlobalMaxPooling1D: an ir.Pool over time. Keras averages over
        the unmasked steps under a mask (sum / count, NaN for a fully masked row) and over every
        step without one; GlobalMaxPooling1D ignores masks (every step). Both are order-free, so a
        go_backwards parity ends here; a pending column order passes through (per feature).
        Several kinds (a Concatenate of poolings of one sequence, configs theirs): one Pool, the
        kinds side by side in the Concatenate's order."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        for cc in configs or [c]:
            _refuse_extras(l, cc, {"data_format", "keepdims"})
            if cc.get("data_format", "channels_last") not in ("channels_last", None):
                raise UnsupportedError(f"{_where(l)}: option data_format={cc.get('data_format')!r} is not supported")
            if cc.get("keepdims"):
                raise UnsupportedError(f"{_where(l)}: option keepdims=True is not supported")
        if not self.seq or self.width is None:
            raise UnsupportedError(f"{_where(l)}: pooling over time needs a sequence before it")
        if self.masked and "mean" in kinds and "max" in kinds:
            raise UnsupportedError(f"{_where(l)}: a mean over the unmasked steps next to a max over every "
                                   f"step (Keras's masked poolings) in one Concatenate")
        over = "valid" if "mean" in kinds and self.masked else "steps"
        self.layers.append(ir.Pool(self.width, kinds, over))
        if self.cols is not None and len(kinds) > 1:   # the pending order, in each kind's block
            self.cols = [(a + k * self.width, b + k * self.width) for k in range(len(kinds)) for a, b in self.cols]
        self.width *= len(kinds)
        self.seq, self.parity, self.masked = False, False, False

    def _windows_ok(self, l, c):
        if c.get("data_format", "channels_last") not in ("channels_last", None):
            raise UnsupportedError(f"{_where(l)}: option data_format={c.get('data_format')!r} is not supported")
        if not self.seq or self.width is None:
            raise UnsupportedError(f"{_where(l)}: a window over time needs a sequence before it")
        self.masked = False                   # Keras drops a mask here ("will destroy the mask information")
        if self.parity:
            raise UnsupportedError(f"{_where(l)}: a sequence in reversed time order (go_backwards) before it")

    @staticmethod
    def _one(v, name, l):
        v = v[0] if isinstance(v, list) and len(v) == 1 else v
        if not isinstance(v, int) or isinstance(v, bool):
            raise ModelFormatError(f"{_where(l)}: bad {name} {v!r}")
        return v

    def _conv1d(self, l, c):
        """Conv1D: Keras kernel (kernel, in, filters) -> ir.Conv1D weight (filters, in, kernel);
        padding valid / same / causal as Keras computes them."""
        _refuse_extras(l, c, {"filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
                              "groups", "use_bias"})
        self._windows_ok(l, c)
        if self._one(c.get("groups", 1), "groups", l) != 1:
            raise UnsupportedError(f"{_where(l)}: option groups={c.get('groups')} is not supported")
        k, U = self._one(c["kernel_size"], "kernel_size", l), int(c["filters"])
        padding = c.get("padding", "valid")
        if padding not in ("valid", "same", "causal"):
            raise UnsupportedError(f"{_where(l)}: option padding={padding!r} is not supported")
        use_bias = bool(c.get("use_bias", True))
        arrs = self.reader.get(l)
        I = arrs[0].shape[1] if arrs and len(arrs[0].shape) == 3 else self.width
        kernel, *b = _weights(l, arrs, [(k, I, U)] + ([(U,)] if use_bias else []))
        self._need_width(l, I)
        W = np.ascontiguousarray(np.transpose(kernel, (2, 1, 0)))      # Keras (k, in, out) -> (out, in, k)
        if self.cols is not None:                                      # pending column order: into W's inputs
            idx = np.concatenate([np.arange(a, b_) for a, b_ in self.cols])
            W2 = np.empty_like(W)
            W2[:, idx, :] = W
            W, self.cols = W2, None
        self.layers.append(ir.Conv1D(W, b[0] if b else None, self._one(c.get("strides", 1), "strides", l),
                                     self._one(c.get("dilation_rate", 1), "dilation_rate", l), padding,
                                     _act(c.get("activation"), self.version, _where(l), allow_rowwise=True)))
        self.width = U

    def _pool1d(self, l, c, kind):
        """MaxPooling1D / AveragePooling1D: windows of pool_size every strides (default: the
        window); an average over a window that reaches into "same" padding divides by the steps
        inside (TensorFlow's count)."""
        _refuse_extras(l, c, {"pool_size", "strides", "padding", "data_format"})
        self._windows_ok(l, c)
        size = self._one(c.get("pool_size", 2), "pool_size", l)
        stride = c.get("strides")
        stride = size if stride is None else self._one(stride, "strides", l)
        padding = c.get("padding", "valid")
        if padding not in ("valid", "same"):
            raise UnsupportedError(f"{_where(l)}: option padding={padding!r} is not supported")
        self.layers.append(ir.Pool1D(self.width, kind, size, stride, padding, False))

    def _flatten(self, l, c):
        """Flatten of a sequence (after a layer returning sequences): its steps side by side, which
        the Input's fixed length (through the windows before it) says how many are."""
        _refuse_extras(l, c, {"data_format"})
        T = self.steps
        for p in self.layers:
            if T is not None and isinstance(p, ir.TIME_CHANGING):
                T = p.steps(T)
        if not T or self.width is None:
            raise UnsupportedError(f"{_where(l)}: Flatten of a sequence of unknown length (give the Input its "
                                   f"number of steps: Input(shape=(T, features)))")
        self.layers.append(ir.Flatten(self.width, int(T)))
        self.width *= int(T)
        self.seq = False

    def _repeat(self, l, c):
        _refuse_extras(l, c, {"n"})
        if self.seq or self.width is None:
            raise UnsupportedError(f"{_where(l)}: RepeatVector repeats one step (a layer that returns its last "
                                   f"step before it)")
        self.layers.append(ir.RepeatVector(self.width, int(c["n"])))
        self.seq = True

    def _rec_common(self, l, c):
        tm = bool(c.get("time_major", False))
        if self.time_major is None:
            self.time_major = tm
        elif self.time_major != tm:
            raise UnsupportedError(f"{_where(l)}: option time_major={tm} differs from an earlier "
                                   f"recurrent layer")
        self.stateful |= bool(c.get("stateful", False))
        if not self.seq:
            raise UnsupportedError(f"{_where(l)}: a recurrent layer after one with "
                                   f"return_sequences=False (needs RepeatVector) is not supported")
        if self.masked and self.mask_parity != self.parity:
            raise UnsupportedError(
                f"{_where(l)}: option go_backwards on an earlier masked layer: Keras returns that layer's "
                f"sequence reversed but passes the mask on unreversed, which fastrnn cannot express")

    def _acts(self, l, cell, c):
        w = _where(l)
        if cell == "rnn":
            return [_act(c.get("activation", "tanh"), self.version, w)]
        f = _act(c.get("recurrent_activation", "sigmoid"), self.version, w)
        g = _act(c.get("activation", "tanh"), self.version, w)
        return [f, g, g] if cell == "lstm" else [f, g]

    def _check_rec_options(self, l, c):
        _refuse_extras(l, c, {"cell"})

    def _recurrent(self, i, l, cell, c):
        self._check_rec_options(l, c)
        self._rec_common(l, c)
        arrs = self.reader.get(l)
        I = self._in_features(arrs)
        w, H, reset_after = _cell_weights(l, cell, c, arrs, I, self.version)
        self._need_width(l, I)
        (w["W_ih"],) = self._permute_in(w["W_ih"])
        rev = bool(c.get("go_backwards", False)) ^ self.parity
        rs = bool(c.get("return_sequences", False))
        zero = bool(c.get("zero_output_for_mask", False))
        self.layers.append(ir.Recurrent(
            cell, [w], direction="reverse" if rev else "forward", activations=self._acts(l, cell, c),
            linear_before_reset=reset_after, return_sequences=rs,
            masked_output="zero" if zero else "carry"))
        ks = [self.nstates] + ([self.nstates + 1] if cell == "lstm" else [])
        self.rec[i] = {"states": [[k, 0] for k in ks], "rs": rs, "bidi": False}
        self.state_layout += [[k, 0] for k in ks]
        self.nstates += len(ks)
        self._after_rec(rs, rev, H)

    def _after_rec(self, rs, rev, width):
        self.width = width
        self.seq = rs
        self.parity = rev if rs else False
        if not rs:
            self.masked = False

    def _bidirectional(self, i, l, c):
        _refuse_extras(l, c, {"layer", "backward_layer", "merge_mode"})
        fl = c.get("layer")
        bl = c.get("backward_layer")
        if not isinstance(fl, dict):
            raise ModelFormatError(f"{_where(l)}: no wrapped layer in the config")
        fcell, fc = _rnn_conf({"class_name": fl.get("class_name"), "config": fl.get("config", {}),
                               "name": l["name"]})
        if fcell is None:
            raise UnsupportedError(f"{_where(l)}: option layer={fl.get('class_name')!r} (only SimpleRNN, "
                                   f"LSTM, GRU, RNN) is not supported")
        if isinstance(bl, dict):
            bcell, bc = _rnn_conf({"class_name": bl.get("class_name"), "config": bl.get("config", {}),
                                   "name": l["name"]})
            if bcell != fcell:
                raise UnsupportedError(f"{_where(l)}: option backward_layer={bl.get('class_name')!r} differs "
                                       f"from the forward layer's class")
        else:
            # Keras builds the backward layer from the forward one's config, go_backwards flipped
            bc = dict(fc)
            bc["go_backwards"] = not bool(fc.get("go_backwards", False))
        for cc in (fc, bc):
            self._check_rec_options(l, cc)
        self._rec_common(l, fc)
        mm = c.get("merge_mode", "concat")
        rs = bool(fc.get("return_sequences", False))
        if bool(bc.get("return_sequences", False)) != rs:
            raise UnsupportedError(f"{_where(l)}: option return_sequences differs between the two layers")
        for k in ("units", "use_bias", "reset_after"):
            if k in fc and fc.get(k) != bc.get(k, fc.get(k)):
                raise UnsupportedError(f"{_where(l)}: option {k} differs between the forward "
                                       f"({fc.get(k)!r}) and backward ({bc.get(k)!r}) layers")
        arrs = self.reader.get(l)
        n = len(arrs) // 2
        I = self._in_features(arrs)
        wf, H, ra = _cell_weights(l, fcell, fc, arrs[:n], I, self.version)
        wb, _, _ = _cell_weights(l, fcell, bc, arrs[n:], I, self.version)
        self._need_width(l, I)
        wf["W_ih"], wb["W_ih"] = self._permute_in(wf["W_ih"], wb["W_ih"])
        rev_f = bool(fc.get("go_backwards", False)) ^ self.parity
        rev_b = bool(bc.get("go_backwards", True)) ^ self.parity
        if rev_f == rev_b:
            raise UnsupportedError(f"{_where(l)}: option go_backwards is the same on both layers "
                                   f"(both read the sequence the same way)")
        # IR direction 0 runs forward in time, 1 in reverse: the Keras forward layer is 1 when it
        # reads the IR tensor backwards (go_backwards xor parity)
        dirs = [wb, wf] if rev_f else [wf, wb]
        acts_f, acts_b = self._acts(l, fcell, fc), self._acts(l, fcell, bc)
        acts = [acts_b, acts_f] if rev_f else [acts_f, acts_b]
        # Keras forces zero_output_for_mask = return_sequences on both wrapped layers
        zero = rs
        merge = "concat" if mm is None else mm
        if merge not in ir.MERGE_MODES:
            raise UnsupportedError(f"{_where(l)}: option merge_mode={mm!r} is not supported")
        self.layers.append(ir.Recurrent(
            fcell, dirs, direction="bidirectional", merge_mode=merge, activations=acts,
            linear_before_reset=ra, return_sequences=rs, masked_output="zero" if zero else "carry"))
        fdir, bdir = (1, 0) if rev_f else (0, 1)
        ks = [self.nstates] + ([self.nstates + 1] if fcell == "lstm" else [])
        st = [[k, fdir] for k in ks] + [[k, bdir] for k in ks]
        self.rec[i] = {"states": st, "rs": rs, "bidi": True, "merge_none": mm is None,
                       "H": H, "fdir": fdir}
        self.state_layout += st
        self.nstates += len(ks)
        out_w = 2 * H if merge == "concat" else H
        self._after_rec(rs, rev_f, out_w)
        if merge == "concat" and rev_f:
            self.cols = [[H, 2 * H], [0, H]]     # Keras [forward, backward] = IR [dir 1, dir 0]


def _signature(b, body, outputs):
    """The output list of a Keras model as a fastrnn signature."""
    last = len(body) - 1
    sig_out = []
    for idx, t in outputs:
        l = body[idx]
        info = b.rec.get(idx)
        if idx == last and info is not None and info.get("merge_none") and t in (0, 1):
            H, fdir = info["H"], info["fdir"]
            rng = [fdir * H, (fdir + 1) * H] if t == 0 else [(1 - fdir) * H, (2 - fdir) * H]
            sig_out.append({"kind": "y", "flip": bool(b.parity), "cols": [rng]})
            continue
        if idx == last and t == 0:
            sig_out.append({"kind": "y", "flip": bool(b.parity), "cols": b.cols})
            continue
        if info is not None and t >= 1:
            states = info["states"]
            k = t - (2 if info.get("merge_none") else 1)
            if 0 <= k < len(states):
                sig_out.append({"kind": "state", "state": states[k][0], "dir": states[k][1]})
                continue
        raise UnsupportedError(f"model output {t} of {_where(l)} is an intermediate tensor of the chain; "
                               f"fastrnn returns the last layer's output and recurrent states")
    return sig_out


def _reads_ok(body, b):
    """Each functional layer must read output 0 of the previous one (or its state h when that
    equals the output: a unidirectional layer with return_sequences=False)."""
    for i, l in enumerate(body[1:], 1):
        t = l.get("reads", 0)
        if t == 0:
            continue
        info = b.rec.get(i - 1)
        if t == 1 and info is not None and not info["rs"] and not info["bidi"]:
            continue
        raise UnsupportedError(f"{_where(l)} reads output {t} of {_where(body[i - 1])} (a state): "
                               f"not a chain")


def convert(src, **opts):
    """Keras model (path to .keras/.h5 or keras.Model) -> fastrnn.Model."""
    opts.pop("allow_pickle", None)       # nothing in a Keras file is unpickled
    if opts:
        raise UnsupportedError(f"convert: options {', '.join(sorted(opts))} do not apply to Keras models")
    close = None
    try:
        cfg, version, reader, close = load_source(src)
        return _convert(cfg, version, reader)
    except (ModelFormatError, UnsupportedError):
        raise
    except (KeyError, TypeError, AttributeError, IndexError, RuntimeError, OverflowError) + ZIP_ERRORS as e:
        # a malformed config or weights file: wrong types, missing keys, a damaged archive, or
        # HDF5 that h5py cannot read (it raises OSError, RuntimeError, KeyError or ValueError)
        where = f"{src}: " if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__") else ""
        raise ModelFormatError(f"{where}malformed Keras model ({type(e).__name__}: {e})") from None
    finally:
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - closing a corrupt HDF5 file may fail too
                pass


def _convert(cfg, version, reader):
    from fastrnn import Model
    if not isinstance(cfg, dict):
        raise ModelFormatError("the model config is not an object")
    try:
        all_layers, body, outputs, inp = _chain(cfg)
    except UnsupportedError as e:
        if cfg.get("class_name") not in ("Functional", "Model"):
            raise
        # not a chain: a functional graph of branches, on the importers' shared lowering
        from .frontends import keras as frontend
        try:
            return frontend.convert(cfg, version, reader, cfg.get("config", {}).get("name") or "model")
        except UnsupportedError as e2:
            raise UnsupportedError(f"{e}\n(the graph frontend also refuses it: {e2})") from None
    if isinstance(reader, _ZipWeights):
        for l in all_layers:
            l["_wkey"] = reader.key(l)
    b = _Builder(version, reader)
    in_dtype = None
    if inp is not None:
        shape = inp.get("batch_shape") or inp.get("batch_input_shape")
        in_dtype = inp.get("dtype")
        if isinstance(shape, list) and shape and isinstance(shape[-1], int) and len(shape) == 3:
            b.width = shape[-1]
    else:
        c0 = body[0]["config"]
        shape = c0.get("batch_input_shape") or c0.get("batch_shape")
        if isinstance(shape, list) and len(shape) == 3 and isinstance(shape[-1], int):
            b.width = shape[-1]
    dims = [d if isinstance(d, int) else None for d in shape] if isinstance(shape, list) else []
    dims += [None] * (2 - len(dims))
    batch, steps = dims[0], dims[1]
    b.steps = steps if isinstance(steps, int) else None
    for i, l in enumerate(body):
        try:
            b.add(i, l)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, (ModelFormatError, UnsupportedError)):
                raise
            raise ModelFormatError(f"{_where(l)}: bad config ({type(e).__name__}: {e})") from None
    if not b.layers:
        raise UnsupportedError("the model has no layer fastrnn can run (only identity layers)")
    _reads_ok(body, b)
    if b.time_major:
        batch, steps = steps, batch        # a time-major Input's first axis is time
    sig_out = _signature(b, body, outputs)
    simple = len(sig_out) == 1 and sig_out[0] == {"kind": "y", "flip": False, "cols": None}
    meta = {"source": "keras", "keras_version": version, "class_name": cfg.get("class_name"),
            "input_dtype": in_dtype if isinstance(in_dtype, str) else None,
            "time_major": bool(b.time_major), "stateful": b.stateful, "batch_size": batch,
            "time_steps": steps}
    signature = {"outputs": None if simple else sig_out,
                 "states": [{"parts": [p], "stack": False} for p in b.state_layout]}
    from .passes import fold
    return Model(fold(b.layers), meta=meta, signature=signature)


def run_source(src, x, **opts):
    """Run the Keras model itself (Keras must be installed) on batch-major x; returns the list of
    its outputs, batch-major. For `fastrnn-convert --check` and tests."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise UnsupportedError("Keras is not installed (pip install keras; KERAS_BACKEND=torch "
                               "runs it without TensorFlow)") from None
    if not isinstance(src, (str, os.PathLike)):
        model = src
    else:
        try:
            model = keras.saving.load_model(src, compile=False)
        except Exception as e:  # noqa: BLE001 - whatever Keras raises, say it in one line
            raise UnsupportedError(f"Keras {keras.__version__} cannot load {os.fspath(src)} "
                                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    tm = any(bool(getattr(l, "time_major", False)) for l in model.layers)
    xin = np.swapaxes(x, 0, 1) if tm else x
    ys = model(xin, training=False)
    ys = ys if isinstance(ys, (list, tuple)) else [ys]
    out = []
    for y in ys:
        a = keras.ops.convert_to_numpy(y)
        out.append(np.swapaxes(a, 0, 1) if tm and a.ndim == 3 else a)
    return out
