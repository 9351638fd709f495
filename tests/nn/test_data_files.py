"""Dataset files as users have them: mirror names, raw or gzipped, the folder itself or its parent; ``bnlab data
add`` checks; real MNIST from ../shared/data/mnist when present."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bnlab.cli import main
from bnlab.nn import ModelSpec, NetConfig, load_dataset, train
from bnlab.nn.data import dataset_folder, missing_files, near_miss_files

# CI clones the repository beside a copy of shared/; a git worktree may sit one level deeper.
_ROOT = Path(__file__).resolve().parents[2]
SHARED_MNIST = next(
    (
        p
        for p in (_ROOT / ".." / "shared" / "data" / "mnist", _ROOT / ".." / ".." / "shared" / "data" / "mnist")
        if p.is_dir()
    ),
    _ROOT / ".." / "shared" / "data" / "mnist",
)
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _idx(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_split(folder: Path, name_of, gz: bool, n=(30, 12), seed=0) -> dict:
    """Four IDX files named ``name_of(stem)``, gzipped or raw; returns the arrays written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, count in zip(("train", "t10k"), n, strict=True):
        arrays[f"{prefix}-images"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"{prefix}-labels"] = rng.integers(0, 10, count, dtype=np.uint8)
    for stem in STEMS:
        data = _idx(arrays[stem.rsplit("-idx", 1)[0]])
        path = folder / (name_of(stem) + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
    return arrays


def _dotted(stem: str) -> str:
    return stem.replace("-idx", ".idx")


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name_of", [lambda s: s, _dotted], ids=["official", "dotted"])
@pytest.mark.parametrize("point_at", ["parent", "folder"])
def test_mirror_variants_load_from_the_folder_or_its_parent(tmp_path, gz, name_of, point_at):
    arrays = _write_split(tmp_path / "mnist", name_of, gz)
    data_dir = tmp_path if point_at == "parent" else tmp_path / "mnist"
    ds = load_dataset("mnist", data_dir)
    assert ds.x_train.shape == (30, 1, 28, 28) and len(ds.x_test) == 12
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels"])
    assert missing_files("mnist", data_dir) == []


def test_gzip_data_without_gz_suffix_is_read(tmp_path):
    arrays = _write_split(tmp_path / "mnist", lambda s: s, gz=True)
    for p in (tmp_path / "mnist").iterdir():  # some tools keep gzip data but drop the suffix
        p.rename(p.with_suffix(""))
    np.testing.assert_array_equal(load_dataset("mnist", tmp_path).y_test.numpy(), arrays["t10k-labels"])


def test_fashion_is_not_read_from_a_folder_named_mnist(tmp_path):
    _write_split(tmp_path / "mnist", lambda s: s, gz=True)
    assert dataset_folder("fashion_mnist", tmp_path / "mnist") == tmp_path / "mnist" / "fashion_mnist"
    assert missing_files("fashion_mnist", tmp_path / "mnist")


def test_near_misses_are_named(tmp_path, capsys):
    folder = tmp_path / "mnist"
    _write_split(folder, lambda s: s, gz=True)
    (folder / "train-images-idx3-ubyte.gz").rename(folder / "Train-Images-idx3-ubyte (1).gz")
    near = near_miss_files("mnist", tmp_path)
    assert [p.name for p in near] == ["Train-Images-idx3-ubyte (1).gz"]
    with pytest.raises(Exception, match=r"found Train-Images-idx3-ubyte \(1\)\.gz"):
        load_dataset("mnist", tmp_path)
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Train-Images-idx3-ubyte (1).gz but it is not an accepted name" in out


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("defect", ["truncated", "count"])
def test_data_add_rejects_a_defective_copy_in_one_line(tmp_path, capsys, defect):
    src = tmp_path / "download"
    arrays = _write_split(src, _dotted, gz=False, n=(60000, 10000) if defect == "truncated" else (30, 12))
    if defect == "truncated":
        path = src / _dotted(STEMS[0])
        path.write_bytes(path.read_bytes()[:-100])
    code, _, err = _run(capsys, "data", "add", "mnist", str(src), "--data-dir", str(tmp_path / "data"))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("payload" in err) if defect == "truncated" else ("(60000, 28, 28)" in err)
    assert not (tmp_path / "data").exists()  # nothing copied, no orphan folder
    assert arrays


def test_data_add_rejects_a_wrong_checksum(tmp_path, capsys):
    src = tmp_path / "download"
    _write_split(src, lambda s: s, gz=False, n=(60000, 10000))  # right structure and counts, random pixels
    code, _, err = _run(capsys, "data", "add", "mnist", str(src), "--data-dir", str(tmp_path / "data"))
    assert code == 2 and "MD5" in err and "6bbc9ace898e44ae57da46a324031adb" in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_fashion_raw_files_without_published_md5_are_added_with_a_note(tmp_path, capsys):
    src = tmp_path / "download"
    _write_split(src, lambda s: s, gz=False, n=(60000, 10000))
    code, out, _ = _run(capsys, "data", "add", "fashion-mnist", str(src), "--data-dir", str(tmp_path / "data"))
    assert code == 0 and "no published MD5" in out
    assert load_dataset("fashion_mnist", tmp_path / "data", n_train=5).x_train.shape == (5, 1, 28, 28)


def _cifar_batches(folder: Path, n: int = 10000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
        out[name] = batch
    return out


@pytest.mark.slow
def test_cifar10_batches_are_added_with_a_note(tmp_path, capsys):
    src = tmp_path / "cifar-10-batches-py"
    batches = _cifar_batches(src)
    code, out, _ = _run(capsys, "data", "add", "cifar10", str(src), "--data-dir", str(tmp_path / "data"))
    assert code == 0 and "no published MD5" in out
    ds = load_dataset("cifar10", tmp_path / "data", n_train=200, n_test=50)
    np.testing.assert_array_equal(ds.y_train[:10].numpy(), batches["data_batch_1"][b"labels"][:10])


def test_cifar10_reader_feeds_the_cifar_variant_of_m1(tmp_path):
    batches = _cifar_batches(tmp_path / "cifar10" / "cifar-10-batches-py", n=40)
    ds = load_dataset("cifar10", tmp_path / "cifar10")  # the dataset's own folder works too
    assert ds.input_shape == (3, 32, 32) and len(ds.y_train) == 200 and len(ds.y_test) == 40
    np.testing.assert_array_equal(ds.y_test.numpy(), batches["test_batch"][b"labels"])
    # M1's CIFAR-10 variant: conv5x5(64) twice, fc512, fc128, fc10 (with BN after each).
    res = train(ModelSpec("M1", bn=True), ds, [NetConfig(lr=0.01)], steps=2, batch_size=20, test_size=20)
    shapes = [tuple(p.shape[1:]) for p in res.model.parameters() if p.dim() > 2]
    assert shapes == [(64, 3, 5, 5), (64, 64, 5, 5), (512, 4096), (128, 512), (10, 128)]
    assert np.isfinite(res.networks.final_train_loss).all()


def test_cifar10_add_rejects_a_short_batch(tmp_path, capsys):
    src = tmp_path / "cifar-10-batches-py"
    _cifar_batches(src, n=100)
    code, _, err = _run(capsys, "data", "add", "cifar10", str(src), "--data-dir", str(tmp_path / "data"))
    assert code == 2 and "100 images" in err and not (tmp_path / "data").exists()


needs_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(), reason=f"real MNIST not found at {SHARED_MNIST} (the CI copy of shared/data)"
)


@needs_mnist
def test_real_mnist_adds_with_its_published_checksums(tmp_path, capsys):
    code, out, err = _run(capsys, "data", "add", "mnist", str(SHARED_MNIST), "--data-dir", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(f"{s}.gz" for s in STEMS)


@needs_mnist
def test_real_mnist_smoke_networks_learn_above_chance():
    ds = load_dataset("mnist", SHARED_MNIST)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    configs = [NetConfig(lr=lr, seed=i) for i, lr in enumerate((0.05, 0.5))]
    for spec, steps in ((ModelSpec("M5", bn=True, hidden=100), 40), (ModelSpec("M3", bn=True), 8)):
        res = train(spec, ds, configs, steps=steps, batch_size=32, test_size=300, log_every=steps)
        acc = res.networks.final_test_acc.to_numpy()
        print(spec.kind, acc)
        assert (acc > 0.5).all(), (spec.kind, acc)  # chance is 0.1
    assert torch.get_num_threads() == 1
