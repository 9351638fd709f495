"""Download the official dataset files into a data folder, verifying their published MD5 checksums.

Layout written (and read by ``bnlab.nn.data``): ``DATA_DIR/mnist/*.gz``, ``DATA_DIR/fashion_mnist/*.gz``,
``DATA_DIR/cifar10/cifar-10-batches-py/``. MD5 is what the dataset authors publish; it checks integrity here.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from bnlab.errors import BnlabError

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
