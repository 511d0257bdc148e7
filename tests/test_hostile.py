"""Hostile model files: what a stranger's file must never make convert do.

Each case starts from a real Keras model (Keras 3, torch backend), saved by Keras as .h5 and
.keras, and tampers with it the way an attacker would. The converter must refuse the file with
ModelFormatError naming the cause, before the foreign data reaches any weight.
"""
import io
import os
import shutil
import zipfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.errors import ModelFormatError  # noqa: E402


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A small Embedding -> LSTM -> Dense model saved by Keras as .h5 and .keras."""
    root = tmp_path_factory.mktemp("hostile")
    keras.utils.set_random_seed(3)
    m = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
                          keras.layers.LSTM(3), keras.layers.Dense(2)])
    m.save(root / "m.h5")
    m.save(root / "m.keras")
    # a file of secrets the attacker wants read into the weights: the exact size of the kernel
    secret = root / "secret.bin"
    secret.write_bytes(np.arange(4 * 12, dtype=np.float32).tobytes())
    return root, m


def _kernel_path(f):
    """The HDF5 path of the LSTM's input kernel, (4, 12) float32, in a Keras file."""
    found = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.shape == (4, 12) else None)
    assert len(found) == 1, found
    return found[0]


def _tamper(f, secret, how):
    """Replace the kernel dataset with one whose bytes come from elsewhere; -> its path."""
    name = _kernel_path(f)
    del f[name]
    if how == "external":
        f.create_dataset(name, shape=(4, 12), dtype="f4", external=[(str(secret), 0, 4 * 12 * 4)])
    elif how == "external_relative":
        f.create_dataset(name, shape=(4, 12), dtype="f4", external=[(os.path.basename(secret), 0, 4 * 12 * 4)])
    elif how == "external_link":
        f[name] = h5py.ExternalLink(str(secret.with_suffix(".h5")), "/k")
    elif how == "virtual":
        lay = h5py.VirtualLayout(shape=(4, 12), dtype="f4")
        lay[:] = h5py.VirtualSource(str(secret.with_suffix(".h5")), "/k", shape=(4, 12))
        f.create_virtual_dataset(name, lay)
    else:
        raise AssertionError(how)
    return name


HOWS = ["external", "external_relative", "external_link", "virtual"]


def _secret_h5(root):
    """An HDF5 file of secrets beside the model, for external links and virtual datasets."""
    secret = root / "secret.bin"
    with h5py.File(secret.with_suffix(".h5"), "w") as g:
        g["k"] = np.arange(48, dtype=np.float32).reshape(4, 12)
    return secret


@pytest.mark.parametrize("how", HOWS)
def test_h5_that_reads_other_files_is_refused(keras_files, how, monkeypatch):
    root, _ = keras_files
    secret = _secret_h5(root)
    p = root / f"evil_{how}.h5"
    shutil.copy(root / "m.h5", p)
    with h5py.File(p, "r+") as f:
        name = _tamper(f, secret, how)
    monkeypatch.chdir(root)             # a relative external file resolves from here
    # the tampered file does read the secret through h5py: the attack is real
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(np.asarray(f[name]).ravel(), np.arange(48, dtype=np.float32))
    with pytest.raises(ModelFormatError, match="external|virtual"):
        fastrnn.convert(str(p))


@pytest.mark.parametrize("how", HOWS)
def test_keras_archive_that_reads_other_files_is_refused(keras_files, how, monkeypatch):
    root, _ = keras_files
    secret = _secret_h5(root)
    with zipfile.ZipFile(root / "m.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "r+") as f:
        _tamper(f, secret, how)
    members["model.weights.h5"] = buf.getvalue()
    p = root / f"evil_{how}.keras"
    with zipfile.ZipFile(p, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    monkeypatch.chdir(root)
    with pytest.raises(ModelFormatError, match="external|virtual"):
        fastrnn.convert(str(p))


def test_untampered_files_still_convert(keras_files):
    """The check refuses only what points outside: the same files, untouched, convert and match."""
    root, km = keras_files
    x = np.array([[1, 2, 3, 4, 5], [7, 0, 9, 19, 2]], np.int32)
    want = keras.ops.convert_to_numpy(km(x, training=False))
    for ext in ("h5", "keras"):
        got = fastrnn.convert(str(root / f"m.{ext}")).predict(x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_soft_links_inside_the_file_are_fine(keras_files):
    root, km = keras_files
    p = root / "soft.h5"
    shutil.copy(root / "m.h5", p)
    with h5py.File(p, "r+") as f:
        f["alias"] = h5py.SoftLink("/" + _kernel_path(f))
        f["dangling"] = h5py.SoftLink("/nowhere")
    x = np.array([[1, 2, 3, 4, 5]], np.int32)
    np.testing.assert_allclose(fastrnn.convert(str(p)).predict(x), keras.ops.convert_to_numpy(km(x)),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# decompression bombs: small files that declare gigabytes

def _rewrite_keras(src, dst, replace, compress=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.update(replace)
    with zipfile.ZipFile(dst, "w", compress) as z:
        for n, b in members.items():
            z.writestr(n, b)


def _config_bomb(root):
    with zipfile.ZipFile(root / "m.keras") as z:
        cfg = z.read("config.json")
    return {"config.json": b" " * (80 << 20) + cfg}   # valid JSON, 80 MiB, deflates to ~80 KB


@pytest.mark.parametrize("member", ["config", "weights"])
def test_keras_archive_bomb_is_refused(keras_files, member):
    root, _ = keras_files
    p = root / f"{member}_bomb.keras"
    bomb = _config_bomb(root) if member == "config" else {"model.weights.h5": bytes(200 << 20)}
    _rewrite_keras(root / "m.keras", p, bomb)
    assert p.stat().st_size < 1 << 20
    with pytest.raises(ModelFormatError, match="decompression bomb"):
        fastrnn.convert(str(p))


def test_stored_members_of_any_size_are_read(keras_files):
    """The expansion rule counts inflation, not size: an uncompressed archive converts."""
    root, km = keras_files
    p = root / "stored.keras"
    _rewrite_keras(root / "m.keras", p, {}, compress=zipfile.ZIP_STORED)
    x = np.array([[1, 2, 3, 4, 5]], np.int32)
    np.testing.assert_allclose(fastrnn.convert(str(p)).predict(x), keras.ops.convert_to_numpy(km(x)),
                               rtol=1e-4, atol=1e-5)


def _huge_kernel(f, config_too):
    """Replace the LSTM's kernel by an unwritten, chunked (2^20, 2^16) float32 dataset: 256 GiB
    declared, a few KB stored. config_too: make the model config declare the matching size, so
    only the stored-size rule can catch it."""
    import json
    name = _kernel_path(f)
    del f[name]
    f.create_dataset(name, shape=(1 << 20, 1 << 16), dtype="f4", chunks=(64, 64), compression="gzip")
    if config_too:
        cfg = json.loads(f.attrs["model_config"])
        for l in cfg["config"]["layers"]:
            if l["class_name"] == "Embedding":
                l["config"]["output_dim"] = 1 << 20
        f.attrs["model_config"] = json.dumps(cfg)


@pytest.mark.parametrize("config_too", [False, True], ids=["shape_mismatch", "config_agrees"])
def test_h5_declaring_a_huge_weight_is_refused_before_reading(keras_files, config_too):
    root, _ = keras_files
    p = root / f"huge_{config_too}.h5"
    shutil.copy(root / "m.h5", p)
    with h5py.File(p, "r+") as f:
        _huge_kernel(f, config_too)
        if config_too:    # the embedding then has 2^20 columns too: declared, unwritten
            emb = [n for n in f["model_weights"] if "embedding" in n][0]
            found = []
            f["model_weights"][emb].visititems(lambda n, o: found.append(o.name) if isinstance(o, h5py.Dataset) else None)
            del f[found[0]]
            f.create_dataset(found[0], shape=(20, 1 << 20), dtype="f4", chunks=(4, 1024), compression="gzip")
    assert p.stat().st_size < 1 << 20
    with pytest.raises(ModelFormatError, match="decompression bomb" if config_too else "shape"):
        fastrnn.convert(str(p))


def test_torch_expanded_tensor_is_refused(tmp_path):
    """2.5 KB on disk, 128 GiB once copied: a stride-0 view saved by torch.save."""
    import torch
    H = 16
    sd = {"weight_ih_l0": torch.zeros(1).expand(1 << 31, 16), "weight_hh_l0": torch.zeros(4 * H, H),
          "bias_ih_l0": torch.zeros(4 * H), "bias_hh_l0": torch.zeros(4 * H)}
    p = tmp_path / "expand.pt"
    torch.save(sd, p)
    assert p.stat().st_size < 1 << 16
    with pytest.raises(ModelFormatError, match="rows"):     # refused by its shape alone
        fastrnn.convert(str(p))
    # the same bomb with shapes that agree with an LSTM of that hidden size
    sd["weight_ih_l0"] = torch.zeros(1).expand(4 * H, 1 << 28)
    torch.save(sd, p)
    with pytest.raises(ModelFormatError, match="storage"):
        fastrnn.convert(str(p))
