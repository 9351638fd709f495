"""Dataset readers on small files written here in the official formats, including corrupt ones."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from bnlab.errors import BnlabError
from bnlab.nn import load_dataset
from bnlab.nn.fetch import fetch
from bnlab.nn.readers import read_cifar_batch, read_idx


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write(path, data: bytes, gz: bool):
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


def _mnist_folder(root, gz: bool, n_train=30, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labs = rng.integers(0, 10, n, dtype=np.uint8)
        _write(folder / f"{prefix}-images-idx3-ubyte", _idx_bytes(imgs), gz)
        _write(folder / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labs), gz)
        arrays[prefix] = (imgs, labs)
    return folder, arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_roundtrip(tmp_path, gz):
    _, arrays = _mnist_folder(tmp_path, gz)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k"][1])
    # Standardised with the training split's statistics: pixel/255, then (x - mu) / sigma.
    raw = arrays["train"][0] / 255.0
    expected = (raw - raw.mean()) / (raw.std() + 1e-8)
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert abs(ds.x_train.mean().item()) < 1e-5


def test_env_variable_gives_default_data_dir(tmp_path, monkeypatch):
    _mnist_folder(tmp_path, gz=True)
    monkeypatch.setenv("BNLAB_DATA_DIR", str(tmp_path))
    assert len(load_dataset("mnist", n_train=7).x_train) == 7


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("magic", "bad magic"),
        ("truncate", "payload"),
        ("label_range", "out of range"),
        ("count", "labels for"),
        ("gzip", "cannot read"),
    ],
)
def test_corrupt_idx_files_name_the_file(tmp_path, corrupt, message):
    folder, arrays = _mnist_folder(tmp_path, gz=False)
    imgs, labs = arrays["train"]
    img_path, lab_path = folder / "train-images-idx3-ubyte", folder / "train-labels-idx1-ubyte"
    if corrupt == "magic":
        img_path.write_bytes(b"\x00\x00\x0d\x03" + img_path.read_bytes()[4:])
        bad = img_path
    elif corrupt == "truncate":
        img_path.write_bytes(img_path.read_bytes()[:-5])
        bad = img_path
    elif corrupt == "label_range":
        lab_path.write_bytes(_idx_bytes(np.full(len(labs), 11)))
        bad = lab_path
    elif corrupt == "count":
        lab_path.write_bytes(_idx_bytes(labs[:-1]))
        bad = lab_path
    else:
        img_path.unlink()
        bad = folder / "train-images-idx3-ubyte.gz"
        bad.write_bytes(b"not gzip at all")
    with pytest.raises(BnlabError, match=message) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_read_idx_shapes(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = _write(tmp_path / "x-idx3-ubyte", _idx_bytes(arr), gz=True)
    np.testing.assert_array_equal(read_idx(path), arr)


def _cifar_folder(root, n=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"batch_label": name.encode(),
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(batch, fh)
        batches[name] = batch
    return folder, batches


def test_cifar_pickle_roundtrip(tmp_path):
    _, batches = _cifar_folder(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == (3, 32, 32) and len(ds.x_train) == 30 and len(ds.x_test) == 6
    np.testing.assert_array_equal(ds.y_train[:6].numpy(), batches["data_batch_1"][b"labels"])
    # Channel-major layout and per-channel standardisation from the training split.
    x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32) / 255.0
    mu, sd = x.mean(axis=(0, 2, 3), keepdims=True), x.std(axis=(0, 2, 3), keepdims=True) + 1e-8
    np.testing.assert_allclose(ds.x_train.numpy(), (x - mu) / sd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        ("unpicklable", "not a readable CIFAR"),
        ("label_range", "out of range"),
        ("count", "labels for"),
        ("shape", "3072"),
        ("missing", "missing"),
    ],
)
def test_corrupt_cifar_batches_name_the_file(tmp_path, corrupt, message):
    folder, batches = _cifar_folder(tmp_path)
    path = folder / "data_batch_3"
    batch = dict(batches["data_batch_3"])
    if corrupt == "unpicklable":
        path.write_bytes(pickle.dumps(batch)[:40])
    elif corrupt == "missing":
        path.unlink()
    else:
        if corrupt == "label_range":
            batch[b"labels"] = [10] * 6
        elif corrupt == "count":
            batch[b"labels"] = batch[b"labels"][:5]
        else:
            batch[b"data"] = batch[b"data"][:, :100]
        path.write_bytes(pickle.dumps(batch))
    with pytest.raises(BnlabError, match=message) as info:
        read_cifar_batch(path) if corrupt != "missing" else load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_embedded_datasets():
    d1 = load_dataset("mnist1d")
    assert d1.input_shape == (40,) and (len(d1.x_train), len(d1.x_test)) == (4000, 1000)
    dg = load_dataset("digits")
    assert dg.input_shape == (1, 8, 8) and len(dg.x_train) + len(dg.x_test) == 1797
    assert torch.equal(dg.y_test, load_dataset("digits").y_test)  # deterministic split
    t = load_dataset("teacher", dim=12, num_classes=3, seed=5, n_train=50, n_test=20)
    assert t.input_shape == (12,) and t.y_train.max() < 3 and len(t.x_test) == 20
    assert torch.equal(t.y_train, load_dataset("teacher", dim=12, num_classes=3, seed=5, n_train=50).y_train)
    with pytest.raises(BnlabError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(BnlabError, match="option"):
        load_dataset("mnist1d", bogus=1)


def test_fetch_without_internet_is_a_clear_error(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BnlabError, match="could not download"):
        fetch("mnist", tmp_path)
    with pytest.raises(BnlabError, match="unknown downloadable"):
        fetch("svhn", tmp_path)
