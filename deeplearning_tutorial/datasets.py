"""MNIST as the tutorials know it: ``mnist.pkl.gz``, built, downloaded and verified.

The original tutorials read a gzip'd Python-2 pickle of three ``(x, y)``
pairs (train, valid, test).  This module

* builds that exact file from the four official IDX files (no network needed),
* downloads it from the canonical URL when a network is there,
* verifies any file before it is trusted, failing with a message that says
  what is wrong and which command fixes it,
* writes every file atomically (temporary file + rename), so an interrupted
  build or download never leaves a half-written dataset behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

MNIST_URL = "http://www.iro.umontreal.ca/~lisa/deep/data/mnist/mnist.pkl.gz"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
N_TRAIN, N_VALID, N_TEST = 50_000, 10_000, 10_000
N_PIXELS = 28 * 28

Split = tuple[np.ndarray, np.ndarray]
Dataset = tuple[Split, Split, Split]


class DatasetError(RuntimeError):
    """The dataset is missing, corrupt or not what the tutorials expect."""


def fix_hint(path: Path | str) -> str:
    """The commands that (re)create ``path``, for error messages."""
    return (
        f"Fix it by rebuilding the file from the official MNIST IDX files:\n"
        f"    python scripts/prepare_data.py --from-idx DIR --output {path}\n"
        f"(DIR holds train-images-idx3-ubyte.gz and the three others), or, with "
        f"internet, by downloading it again:\n"
        f"    python scripts/prepare_data.py --download --output {path}"
    )


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_write(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; rename it over ``path`` only on success.

    An exception (or Ctrl-C) inside the block removes the temporary file and
    leaves any previous ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have given
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def read_idx_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file (``.gz`` or plain)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"{path} is not a readable gzip file ({exc}); it is probably truncated "
            f"or corrupt. Download the official MNIST IDX file again."
        ) from exc


def parse_idx(content: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX images (magic 2051) or labels (magic 2049) file into uint8 arrays."""
    if len(content) < 8:
        raise DatasetError(f"{source}: {len(content)} bytes is too short for an IDX header.")
    magic, count = struct.unpack(">II", content[:8])
    if magic == IDX_IMAGES_MAGIC:
        if len(content) < 16:
            raise DatasetError(f"{source}: truncated IDX images header.")
        rows, cols = struct.unpack(">II", content[8:16])
        shape, offset = (count, rows, cols), 16
    elif magic == IDX_LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DatasetError(
            f"{source}: magic number {magic} is neither {IDX_IMAGES_MAGIC} (images) "
            f"nor {IDX_LABELS_MAGIC} (labels); this is not an MNIST IDX file."
        )
    expected = offset + int(np.prod(shape))
    if len(content) != expected:
        raise DatasetError(
            f"{source}: header announces {expected} bytes for shape {shape}, "
            f"the file has {len(content)}; it is truncated or corrupt."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(shape)


def read_checksums(idx_dir: Path) -> dict[str, str]:
    """Parse ``SHA256SUMS.idx``: ``<sha256>  <decompressed file name>  (comment)``."""
    sums_file = idx_dir / "SHA256SUMS.idx"
    if not sums_file.exists():
        return {}
    sums = {}
    for line in sums_file.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            sums[fields[1]] = fields[0].lower()
    return sums


def find_idx_file(idx_dir: Path, name: str) -> Path:
    for candidate in (idx_dir / f"{name}.gz", idx_dir / name):
        if candidate.exists():
            return candidate
    raise DatasetError(
        f"{idx_dir} has no {name}.gz (nor {name}). The folder given to --from-idx "
        f"must hold the four official MNIST files: "
        + ", ".join(f"{n}.gz" for n in IDX_FILES.values())
    )


def load_idx_dir(idx_dir: Path | str) -> dict[str, np.ndarray]:
    """Read and verify the four official IDX files of ``idx_dir``.

    When ``SHA256SUMS.idx`` is present, each decompressed file must match its sum.
    """
    idx_dir = Path(idx_dir)
    if not idx_dir.is_dir():
        raise DatasetError(f"{idx_dir} is not a folder; --from-idx needs the folder of the MNIST IDX files.")
    sums = read_checksums(idx_dir)
    arrays = {}
    for key, name in IDX_FILES.items():
        path = find_idx_file(idx_dir, name)
        content = read_idx_bytes(path)
        if name in sums:
            digest = hashlib.sha256(content).hexdigest()
            if digest != sums[name]:
                raise DatasetError(
                    f"{path}: SHA-256 of the decompressed content is {digest}, "
                    f"SHA256SUMS.idx says {sums[name]}. The file is corrupt or not the "
                    f"official one; download the official MNIST IDX file again."
                )
        arrays[key] = parse_idx(content, str(path))
    return arrays


def build_from_idx(idx_dir: Path | str) -> Dataset:
    """The tutorial's three splits from the official IDX files.

    train = first 50,000 training images, valid = last 10,000, test = the test
    file; pixels are ``uint8 / 256`` as float32 (as in the original
    ``mnist.pkl.gz``), labels int64.
    """
    arrays = load_idx_dir(idx_dir)
    train_images, train_labels = arrays["train_images"], arrays["train_labels"]
    test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    if len(train_images) != N_TRAIN + N_VALID or len(train_labels) != N_TRAIN + N_VALID:
        raise DatasetError(f"expected {N_TRAIN + N_VALID} training images and labels, got "
                           f"{len(train_images)} and {len(train_labels)}.")
    if len(test_images) != N_TEST or len(test_labels) != N_TEST:
        raise DatasetError(f"expected {N_TEST} test images and labels, got "
                           f"{len(test_images)} and {len(test_labels)}.")

    def to_split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = (images.reshape(len(images), N_PIXELS).astype(np.float32) / np.float32(256))
        return np.ascontiguousarray(x), labels.astype(np.int64)

    return (
        to_split(train_images[:N_TRAIN], train_labels[:N_TRAIN]),
        to_split(train_images[N_TRAIN:], train_labels[N_TRAIN:]),
        to_split(test_images, test_labels),
    )


# --------------------------------------------------------------------------
# mnist.pkl.gz: writing (NumPy-1 compatible) and reading (restricted, verified)
# --------------------------------------------------------------------------


class _LegacyNumpyPickler(pickle._Pickler):  # type: ignore[misc,name-defined]
    """A protocol-2 pickler whose arrays reduce through ``numpy.core.multiarray``.

    NumPy 2 names its module ``numpy._core``, which NumPy 1.x (and so the
    original Theano code) cannot import; the original file names
    ``numpy.core.multiarray``, and so does ours.
    """

    def save_global(self, obj, name=None):
        if obj is np.ndarray.__reduce__(np.zeros(0))[0]:  # numpy's _reconstruct
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dumps_dataset(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    _LegacyNumpyPickler(buffer, protocol=2).dump(dataset)
    return buffer.getvalue()


def write_dataset(dataset: Dataset, path: Path | str) -> Path:
    """Write ``dataset`` as a gzip'd protocol-2 pickle, atomically and reproducibly.

    The gzip header carries no time stamp or name, so the same arrays always
    give the same bytes.
    """
    path = Path(path)
    payload = dumps_dataset(dataset)
    with atomic_write(path) as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as handle:
            handle.write(payload)
    return path


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _DatasetUnpickler(pickle.Unpickler):
    """Loads only NumPy arrays: a dataset file cannot run arbitrary code."""

    def find_class(self, module: str, name: str):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a dataset file")
        return super().find_class(*target)


def verify_dataset(dataset: object, source: str = "dataset",
                   sizes: tuple[int, int, int] | None = (N_TRAIN, N_VALID, N_TEST)) -> Dataset:
    """Check the structure, shapes, dtypes and value ranges of a loaded dataset.

    ``sizes`` are the expected numbers of train/valid/test examples (MNIST's
    by default); ``None`` accepts any sizes, for datasets of one's own.
    """
    hint = fix_hint(source)
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 3):
        raise DatasetError(f"{source}: expected a 3-tuple (train, valid, test).\n{hint}")
    for name, split, count in zip(("train", "valid", "test"), dataset, sizes or (None, None, None)):
        if not (isinstance(split, (tuple, list)) and len(split) == 2):
            raise DatasetError(f"{source}: the {name} set is not an (x, y) pair.\n{hint}")
        x, y = split
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise DatasetError(f"{source}: the {name} set does not hold NumPy arrays.\n{hint}")
        count = len(x) if count is None else count
        if x.shape != (count, N_PIXELS) or y.shape != (count,) or count == 0:
            raise DatasetError(
                f"{source}: the {name} set has shapes x{x.shape}, y{y.shape}; expected "
                f"x({count}, {N_PIXELS}), y({count},).\n{hint}"
            )
        if x.dtype.kind != "f" or y.dtype.kind not in "iu":
            raise DatasetError(
                f"{source}: the {name} set has dtypes {x.dtype}/{y.dtype}; expected "
                f"float pixels and integer labels.\n{hint}"
            )
        if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() < 1.0):
            raise DatasetError(f"{source}: {name} pixels are not all in [0, 1).\n{hint}")
        if y.min() < 0 or y.max() > 9:
            raise DatasetError(f"{source}: {name} labels are not all in 0..9.\n{hint}")
    return tuple(tuple(split) for split in dataset)  # type: ignore[return-value]


def read_dataset(path: Path | str) -> Dataset:
    """Load and verify ``mnist.pkl.gz``; any problem is a :class:`DatasetError`."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist.\n{fix_hint(path)}")
    try:
        with gzip.open(path, "rb") as handle:
            dataset = _DatasetUnpickler(handle, encoding="latin1").load()
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(
            f"{path} is not a complete gzip file ({exc}); it is truncated or corrupt.\n{fix_hint(path)}"
        ) from exc
    except (pickle.UnpicklingError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise DatasetError(f"{path} holds no readable dataset pickle ({exc}).\n{fix_hint(path)}") from exc
    sizes = (N_TRAIN, N_VALID, N_TEST) if path.name == "mnist.pkl.gz" else None
    return verify_dataset(dataset, str(path), sizes)


# --------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------


def _progress(done: int, total: int | None) -> None:
    if total:
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                         f"{done / 2**20:5.1f}/{total / 2**20:.1f} MiB")
    else:
        sys.stderr.write(f"\r{done / 2**20:5.1f} MiB")
    sys.stderr.flush()


def download_dataset(path: Path | str, url: str = MNIST_URL) -> Path:
    """Download ``mnist.pkl.gz`` to ``path`` (atomically) and verify it."""
    path = Path(path)
    print(f"Downloading data from {url}")
    show_progress = sys.stderr.isatty()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic_write(path) as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if show_progress:
                    _progress(done, total)
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(
            f"{path} is missing and downloading it from {url} failed ({exc}).\n"
            f"Without internet, build it from the four official MNIST IDX files:\n"
            f"    python scripts/prepare_data.py --from-idx DIR --output {path}"
        ) from exc
    finally:
        if show_progress:
            sys.stderr.write("\n")
    try:
        read_dataset(path)
    except DatasetError:
        path.unlink(missing_ok=True)
        raise
    return path


def resolve_dataset_path(dataset: str | os.PathLike) -> Path:
    """The tutorials' rule: a bare name that is not an existing file lives in ``data/``."""
    path = Path(dataset)
    if path.parent == Path(".") and not path.is_file():
        candidate = DATA_DIR / path
        if candidate.is_file() or path.name == "mnist.pkl.gz":
            return candidate
    return path


def ensure_dataset(dataset: str | os.PathLike) -> Dataset:
    """Resolve, fetch if it is the missing ``mnist.pkl.gz``, then load and verify."""
    path = resolve_dataset_path(dataset)
    if not path.is_file() and path.name == "mnist.pkl.gz":
        download_dataset(path)
    return read_dataset(path)

