"""Put the official dataset files into a data folder: download them (``fetch``) or copy a user's own copies
(``add``), in both cases checked against the published MD5 checksums.

Layout written (and read by ``bnlab.nn.data``): ``DATA_DIR/mnist/*``, ``DATA_DIR/fashion_mnist/*``,
``DATA_DIR/cifar10/cifar-10-batches-py/``. MD5 is what the dataset authors publish; it checks integrity here.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from bnlab.errors import BnlabError
from bnlab.nn.readers import CIFAR_BATCHES, IDX_STEMS, check_labels, find_idx, idx_names, read_cifar_batch, read_idx

_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# name -> (list of base URLs tried in order, {file name: md5})
SOURCES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "mnist": (
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        dict(
            zip(
                _IDX_FILES,
                (
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                    "9fb629c4189551a2d022fa330f9573f3",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
                strict=True,
            )
        ),
    ),
    "fashion_mnist": (
        (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        dict(
            zip(
                _IDX_FILES,
                (
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "bef4ecab320f06d8554ea6380940ec79",
                    "bb300cfdad3c16e7a12a480ee83cd310",
                ),
                strict=True,
            )
        ),
    ),
    "cifar10": (
        ("https://www.cs.toronto.edu/~kriz/",),
        {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    ),
}


def default_data_dir() -> Path:
    """``$BNLAB_DATA_DIR`` if set, else ``~/.cache/bnlab/data``."""
    env = os.environ.get("BNLAB_DATA_DIR")
    return Path(env).expanduser() if env else Path("~/.cache/bnlab/data").expanduser()


def md5sum(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(urls: list[str], target: Path, md5: str, timeout: float) -> None:
    errors = []
    for url in urls:
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, tmp.open("wb") as out:
                while block := resp.read(1 << 20):
                    out.write(block)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            errors.append(f"{url}: {exc}")
            tmp.unlink(missing_ok=True)
            continue
        got = md5sum(tmp)
        if got != md5:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: checksum {got} != expected {md5}")
            continue
        tmp.replace(target)
        return
    raise BnlabError(f"could not download {target.name} (no internet?): {'; '.join(errors)}")


def fetch(name: str, data_dir: str | Path | None = None, timeout: float = 60.0) -> Path:
    """Download dataset ``name`` (mnist, fashion_mnist, cifar10) into ``data_dir``; return its folder.

    Files already present with the right checksum are kept; a wrong checksum or an unreachable server raises a
    ``BnlabError``.
    """
    key = name.lower().replace("-", "_")
    if key not in SOURCES:
        raise BnlabError(f"unknown downloadable dataset {name!r}; choose one of {sorted(SOURCES)}")
    bases, files = SOURCES[key]
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    folder = folder / key
    folder.mkdir(parents=True, exist_ok=True)
    for fname, md5 in files.items():
        target = folder / fname
        if target.exists() and md5sum(target) == md5:
            continue
        _download([base + fname for base in bases], target, md5, timeout)
    if key == "cifar10" and not (folder / "cifar-10-batches-py" / "test_batch").exists():
        with tarfile.open(folder / "cifar-10-python.tar.gz") as tar:
            tar.extractall(folder, filter="data")
    return folder


# MD5 of the *uncompressed* IDX files as the MNIST authors published them (the .gz MD5s above are the mirrors');
# a copy re-compressed with other gzip settings keeps these. Fashion-MNIST publishes only its .gz checksums.
RAW_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
}
# Examples per official file: (images, rows, cols) per IDX split, and 10000 per CIFAR-10 batch.
IDX_SHAPES = {"train": (60000, 28, 28), "t10k": (10000, 28, 28)}
CIFAR_BATCH_SIZE = 10000


def _md5_check(key: str, stem: str, path: Path) -> str:
    """'' if ``path``'s bytes (as stored, or gunzipped) have a published MD5 of ``stem``; a note if nothing is
    published for this form; a ``BnlabError`` if a published value exists and differs."""
    stored = md5sum(path)
    published_gz = SOURCES[key][1].get(f"{stem}.gz")
    published_raw = RAW_MD5.get(key, {}).get(stem)
    with path.open("rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    with gzip.open(path) if gz else path.open("rb") as fh:
        raw = hashlib.md5(fh.read(), usedforsecurity=False).hexdigest()
    if stored == published_gz or raw == published_raw:
        return ""
    if published_raw is None and not gz:
        return f"{path.name}: no published MD5 for the uncompressed file; structure and counts checked only"
    expected = " or ".join(f"{m} ({w})" for m, w in ((published_gz, "gzipped"), (published_raw, "uncompressed")) if m)
    raise BnlabError(f"{path}: MD5 {stored if gz else raw} does not match the published {expected}")


def _check_idx(key: str, stem: str, path: Path) -> None:
    """Structure (IDX header and payload), example count and shape, label range of one official file."""
    arr = read_idx(path)
    prefix = stem.split("-")[0]
    n, rows, cols = IDX_SHAPES[prefix]
    expected = (n,) if "labels" in stem else (n, rows, cols)
    if arr.shape != expected:
        raise BnlabError(f"{path}: shape {arr.shape}, but the official {stem} holds {expected}")
    if "labels" in stem:
        check_labels(arr, 10, path)


def _copy(src: Path, dst: Path) -> None:
    if dst.exists() and dst.samefile(src):
        return
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def add(name: str, source: str | Path, data_dir: str | Path | None = None) -> tuple[Path, list[str]]:
    """Copy a user's copy of dataset ``name`` from ``source`` into the data folder, after checking every file;
    return (the dataset's folder, notes). Nothing is written unless every file passes.

    ``source``: for mnist / fashion_mnist a folder holding the four IDX files (official or dotted names, raw or
    gzipped); for cifar10 the official ``cifar-10-python.tar.gz`` or a folder of its python batches. Checks:
    structure, counts, label range, and the MD5 of the stored or the uncompressed bytes against the published
    values where any are published for that form.
    """
    key = name.lower().replace("-", "_")
    if key not in SOURCES:
        raise BnlabError(f"unknown file-backed dataset {name!r}; choose one of {sorted(SOURCES)}")
    source = Path(source).expanduser()
    if not source.exists():
        raise BnlabError(f"{source} does not exist")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = root / key
    if key == "cifar10":
        return target, _add_cifar(source, target)
    if not source.is_dir():
        raise BnlabError(f"{source}: give the folder holding the four {key} IDX files")
    found = {stem: find_idx(source, stem) for stem in IDX_STEMS}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise BnlabError(f"{source} lacks {missing[0]} (accepted names: {', '.join(idx_names(missing[0]))})")
    notes = []
    for stem, path in found.items():
        _check_idx(key, stem, path)
        if note := _md5_check(key, stem, path):
            notes.append(note)
    target.mkdir(parents=True, exist_ok=True)
    for stem, path in found.items():
        with path.open("rb") as fh:
            name_out = stem + (".gz" if fh.read(2) == b"\x1f\x8b" else "")
        for other in idx_names(stem):  # another variant left there would shadow or duplicate this one
            if other != name_out and (target / other).exists() and not (target / other).samefile(path):
                (target / other).unlink()
        _copy(path, target / name_out)
    return target, notes


def _add_cifar(source: Path, target: Path) -> list[str]:
    if source.is_file():
        _, files = SOURCES["cifar10"]
        expected = files["cifar-10-python.tar.gz"]
        if (got := md5sum(source)) != expected:
            raise BnlabError(f"{source}: MD5 {got} does not match the published {expected} of cifar-10-python.tar.gz")
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(source) as tar:
            tar.extractall(target, filter="data")
        return []
    folder = source / "cifar-10-batches-py" if (source / "cifar-10-batches-py").is_dir() else source
    for batch in CIFAR_BATCHES:
        data, _ = read_cifar_batch(folder / batch)
        if len(data) != CIFAR_BATCH_SIZE:
            raise BnlabError(f"{folder / batch}: {len(data)} images, but an official batch holds {CIFAR_BATCH_SIZE}")
    out = target / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    for batch in CIFAR_BATCHES:
        _copy(folder / batch, out / batch)
    return ["the extracted CIFAR-10 batches have no published MD5; structure and counts checked only"]
