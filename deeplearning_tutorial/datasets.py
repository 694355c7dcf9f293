"""MNIST as the tutorials know it: ``mnist.pkl.gz``, built, verified and loaded.

The original tutorials read a gzip'd Python-2 pickle of three ``(x, y)``
pairs (train, valid, test).  This module

* builds that exact file from the four official IDX files (no network needed),
  after checking each against its official SHA-256 (shipped below),
* verifies any file before it is trusted: the gzip stream is read to its end
  (so its CRC and length are checked), only NumPy arrays are unpickled, and
  shapes, dtypes and value ranges are checked; MNIST itself can further be
  checked against the checksums of its arrays,
* fails with a message that says what is wrong and which command fixes it,
* writes every file atomically (temporary file + rename), so an interrupted
  build never leaves a half-written dataset behind.

Downloading lives in :mod:`deeplearning_tutorial.download`; which file a tutorial reads, and
when it is downloaded, in :mod:`deeplearning_tutorial.mnist`.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import math
import pickle
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from deeplearning_tutorial.files import atomic_write

MNIST_NAME = "mnist.pkl.gz"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: SHA-256 of each official MNIST IDX file, decompressed (the same whatever
#: gzip settings a mirror used), as published with the files.
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
#: SHA-256 of the six arrays of ``mnist.pkl.gz`` (pixels as little-endian
#: float32, labels as little-endian int64), in the order train x, train y,
#: valid x, valid y, test x, test y.  They follow from the IDX files by the
#: tutorial's rule (see :func:`split_idx_arrays`), so any correct copy of the
#: dataset, built or downloaded, has exactly these.
MNIST_ARRAY_SHA256 = {
    "train x": "776032e7e6a9793aa363ced48409f59393deff07333dbd953f3749bf80667d30",
    "train y": "3fc61c21900fc0b58d42fdaf93c02687003667ff54f671496c1d367a95cae2ba",
    "valid x": "04197cf3c7f94ed5f6b5f472b6be8368610bdccf10bfd78aa83bce8ca1f7c6a4",
    "valid y": "bfddcd2fec1923668512623a71a47033ec687581bc04ac5708c8857aa0193630",
    "test x": "0194b01ac10d2940c3823564d797c586e7bfd25ffac681a9577bfbbb62d0a81a",
    "test y": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
}
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049
N_TRAIN, N_VALID, N_TEST = 50_000, 10_000, 10_000
IMAGE_SHAPE = (28, 28)
N_PIXELS = 28 * 28
#: The size of each IDX file of MNIST's layout, decompressed (a 16-byte header
#: and 28x28 one-byte pixels, or an 8-byte header and one-byte labels): no file
#: the tutorials can use is larger, so none is decompressed past it.
IDX_SIZES = {
    "train-images-idx3-ubyte": 16 + (N_TRAIN + N_VALID) * N_PIXELS,
    "train-labels-idx1-ubyte": 8 + N_TRAIN + N_VALID,
    "t10k-images-idx3-ubyte": 16 + N_TEST * N_PIXELS,
    "t10k-labels-idx1-ubyte": 8 + N_TEST,
}
SPLIT_NAMES = ("train", "valid", "test")

Split = tuple[np.ndarray, np.ndarray]
Dataset = tuple[Split, Split, Split]


class DatasetError(RuntimeError):
    """The dataset is missing, corrupt or not what the tutorials expect."""


def offline_hint(path: Path | str) -> str:
    """The command that builds ``path`` without internet, for error messages."""
    return (
        f"Without internet, build it from the four official MNIST IDX files:\n"
        f"    python scripts/prepare_data.py --from-idx DIR --output {path}\n"
        f"(DIR holds train-images-idx3-ubyte.gz and the three others)."
    )


def fix_hint(path: Path | str, damaged: bool = True) -> str:
    """How to replace a missing, damaged (``damaged``) or wrong dataset at ``path``.

    A file called ``mnist.pkl.gz`` that is damaged can simply be fetched again
    (``prepare_data.py`` replaces it only with a verified copy). One that is
    readable but not MNIST, or any file of another name, is a dataset of the
    user's own: no suggested command may overwrite it with MNIST.
    """
    path = Path(path)
    if path.name == MNIST_NAME and damaged:
        return (
            f"Fix it by downloading MNIST again (the file is replaced only once the new "
            f"copy is verified):\n"
            f"    python scripts/prepare_data.py --download --output {path}\n"
            + offline_hint(path)
        )
    if path.name == MNIST_NAME:
        return (
            f"If it is a dataset of your own, give it another name (datasets of your own "
            f"may have any sizes); to get MNIST there, move it away, then run\n"
            f"    python scripts/prepare_data.py --download --output {path}"
        )
    return (
        f"{path.name} is not {MNIST_NAME}, so it is a dataset of your own: recreate it "
        f"the way you made it (a gzip'd pickle of (train, valid, test) pairs of NumPy "
        f"arrays). To use MNIST instead, pass dataset='{MNIST_NAME}'; "
        f"`python scripts/prepare_data.py --download` writes {DATA_DIR / MNIST_NAME} "
        f"and leaves your file alone."
    )


def _as_suffix(hint: str) -> str:
    """``hint`` on a line of its own after a message; nothing for an empty hint."""
    return "\n" + hint if hint else ""


def describe_os_error(path: Path, exc: OSError) -> str:
    """A sentence for an ``OSError`` met opening ``path``: what happened and what to do.

    Permission and folder errors are the user's to fix on the spot; calling
    them "truncated or corrupt" (and suggesting a download) would mislead.
    """
    if isinstance(exc, PermissionError):
        return (f"{path} cannot be read: permission denied. Make it readable "
                f"(chmod u+r {path}) or run as a user who may read it.")
    if isinstance(exc, IsADirectoryError):
        inside = path / MNIST_NAME
        example = f" (such as {inside})" if inside.is_file() else ""
        return f"{path} is a folder, not a dataset file; pass the path of the file itself{example}."
    if exc.errno == errno.ELOOP:
        return (f"{path} is a symbolic link that loops (to itself, or through other links back to "
                f"itself), so it leads to no file; see `ls -l {path}` and point it at the real file.")
    return f"{path} cannot be read: {exc.strerror or exc}."


# --------------------------------------------------------------------------
# Gzip, read to the end
# --------------------------------------------------------------------------

GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
"""What a damaged gzip stream raises: cut short, bad header/CRC/length, bad deflate data."""


def check_gzip_magic(data: bytes, source: str) -> None:
    """Refuse ``data`` unless it starts like a gzip file (an HTML error page does not)."""
    if data[:2] != b"\x1f\x8b":
        head = data[:1024].lower()
        kind = " but an HTML page" if b"<html" in head or b"<!doctype html" in head else ""
        raise DatasetError(f"{source} is not a gzip file{kind}: it starts with {data[:32]!r}.")


def gunzip(data: bytes, source: str, max_size: int | None = None) -> bytes:
    """Decompress a whole gzip file held in memory, checking its CRC and length.

    ``max_size`` bounds the decompressed size: a small file that would
    decompress to gigabytes is refused once it passes the bound.

    Raises
    ------
    DatasetError
        ``data`` is not gzip (an HTML error page, say), is truncated or
        damaged, or decompresses to more than ``max_size`` bytes.
    """
    check_gzip_magic(data, source)
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as handle:
            content = handle.read(-1 if max_size is None else max_size + 1)
    except GZIP_ERRORS as exc:
        raise DatasetError(f"{source} is truncated or corrupt ({exc or type(exc).__name__}).") from exc
    if max_size is not None and len(content) > max_size:
        raise DatasetError(f"{source} decompresses to more than the {max_size} bytes a file of "
                           f"MNIST's layout has; it is not one.")
    return content


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------


def read_idx_bytes(path: Path, max_size: int) -> bytes:
    """The decompressed content of an IDX file (``.gz`` or plain), read to its end.

    A file (or its decompressed content) of more than ``max_size`` bytes is
    refused before it is read whole (see :data:`IDX_SIZES`).
    """
    try:
        if path.stat().st_size > max_size + 1024:  # gzip adds a few bytes at worst
            raise DatasetError(f"{path} has {path.stat().st_size} bytes, more than the {max_size} bytes "
                               f"a file of MNIST's layout has; it is not one.")
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(describe_os_error(path, exc)) from exc
    if path.suffix != ".gz":
        return data
    try:
        return gunzip(data, str(path), max_size)
    except DatasetError as exc:
        raise DatasetError(f"{exc} Download the official MNIST IDX file again.") from exc


def parse_idx(content: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse an IDX images (magic 2051) or labels (magic 2049) file into uint8 arrays."""
    if len(content) < 8:
        raise DatasetError(f"{source}: {len(content)} bytes is too short for an IDX header.")
    magic, count = struct.unpack(">II", content[:8])
    if magic == IDX_IMAGES_MAGIC:
        if len(content) < 16:
            raise DatasetError(f"{source}: truncated IDX images header.")
        rows, cols = struct.unpack(">II", content[8:16])
        shape: tuple[int, ...] = (count, rows, cols)
        offset = 16
    elif magic == IDX_LABELS_MAGIC:
        shape, offset = (count,), 8
    else:
        raise DatasetError(
            f"{source}: magic number {magic} is neither {IDX_IMAGES_MAGIC} (images) "
            f"nor {IDX_LABELS_MAGIC} (labels); this is not an MNIST IDX file."
        )
    expected = offset + math.prod(shape)  # Python integers: a hostile header cannot wrap around
    if len(content) != expected:
        raise DatasetError(
            f"{source}: header announces {expected} bytes for shape {shape}, "
            f"the file has {len(content)}; it is truncated or corrupt."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=offset).reshape(shape)


def check_idx_sha256(content: bytes, name: str, expected: str, source: str) -> None:
    """Refuse ``content`` (the decompressed IDX file ``name``) unless its SHA-256 is ``expected``."""
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected:
        raise DatasetError(
            f"{source}: the SHA-256 of its decompressed content ({name}) is {digest}, "
            f"expected {expected}: it is damaged or not the official MNIST file."
        )


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
    """The IDX file ``name`` in ``idx_dir``, gzipped (as distributed) or not; DatasetError naming
    the four files the folder must hold when it is missing."""
    for candidate in (idx_dir / f"{name}.gz", idx_dir / name):
        if candidate.exists():
            return candidate
    raise DatasetError(
        f"{idx_dir} has no {name}.gz (nor {name}). The folder given to --from-idx "
        f"must hold the four official MNIST files: "
        + ", ".join(f"{n}.gz" for n in IDX_FILES.values())
    )


def load_idx_dir(idx_dir: Path | str, official: bool = True) -> dict[str, np.ndarray]:
    """Read and verify the four IDX files of ``idx_dir``.

    Parameters
    ----------
    idx_dir
        Folder holding ``train-images-idx3-ubyte.gz`` and the three others
        (gzip'd or plain).
    official
        Check each decompressed file against the official MNIST SHA-256
        (:data:`IDX_SHA256`). ``False`` accepts other IDX data of the same
        layout (Fashion-MNIST, say).  Either way, a ``SHA256SUMS.idx`` in the
        folder is checked too.

    Returns
    -------
    dict
        ``train_images``, ``train_labels``, ``test_images``, ``test_labels``: uint8 arrays.

    Raises
    ------
    DatasetError
        A file is missing, unreadable, damaged or fails a checksum.
    """
    idx_dir = Path(idx_dir)
    try:
        idx_dir.stat()
    except FileNotFoundError:
        pass
    except OSError as exc:  # a symbolic link that loops, say
        raise DatasetError(describe_os_error(idx_dir, exc)) from None
    if not idx_dir.is_dir():
        raise DatasetError(f"{idx_dir} is not a folder; --from-idx needs the folder of the MNIST IDX files.")
    folder_sums = read_checksums(idx_dir)
    arrays = {}
    for key, name in IDX_FILES.items():
        path = find_idx_file(idx_dir, name)
        content = read_idx_bytes(path, IDX_SIZES[name])
        if official:
            check_idx_sha256(content, name, IDX_SHA256[name], str(path))
        if name in folder_sums:
            digest = hashlib.sha256(content).hexdigest()
            if digest != folder_sums[name]:
                raise DatasetError(
                    f"{path}: SHA-256 of the decompressed content is {digest}, "
                    f"SHA256SUMS.idx says {folder_sums[name]}. The file is corrupt or not the "
                    f"one the folder lists; download it again."
                )
        arrays[key] = parse_idx(content, str(path))
    return arrays


def split_idx_arrays(arrays: dict[str, np.ndarray]) -> Dataset:
    """The tutorial's three splits from the four IDX arrays (see :func:`load_idx_dir`).

    train = first 50,000 training images, valid = last 10,000, test = the test
    file; pixels are ``uint8 / 256`` as float32 (as in the original
    ``mnist.pkl.gz``), labels int64.
    """
    train_images, train_labels = arrays["train_images"], arrays["train_labels"]
    test_images, test_labels = arrays["test_images"], arrays["test_labels"]
    for key in ("train_images", "test_images"):
        if arrays[key].shape[1:] != IMAGE_SHAPE:
            rows, cols = arrays[key].shape[1:]
            raise DatasetError(f"{IDX_FILES[key]} holds images of {rows}x{cols} pixels; expected "
                               f"28x28, as MNIST's (and Fashion-MNIST's) are.")
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


def build_from_idx(idx_dir: Path | str, official: bool = True) -> Dataset:
    """The tutorial's three splits from the IDX files of ``idx_dir``.

    With ``official`` (the default) the files must be the official MNIST ones
    and the result is checked against :data:`MNIST_ARRAY_SHA256` as well.
    """
    dataset = split_idx_arrays(load_idx_dir(idx_dir, official))
    if official:
        check_mnist_arrays(dataset, f"the dataset built from {idx_dir}")
    return dataset


# --------------------------------------------------------------------------
# mnist.pkl.gz: writing (NumPy-1 compatible) and reading (restricted, verified)
# --------------------------------------------------------------------------


class _LegacyNumpyPickler(pickle._Pickler):
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
    """The pickle of ``mnist.pkl.gz`` (before gzip): protocol 2, loadable by NumPy 1.x and 2.x."""
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
        _gzip_into(raw, payload)
    return path


def _gzip_into(raw: IO[bytes], payload: bytes) -> None:
    """Write ``payload`` gzip'd to ``raw``, with no time stamp or name in the header."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as handle:
        handle.write(payload)


def write_verified_dataset(dataset: Dataset, path: Path | str) -> Path:
    """Write ``dataset`` as :func:`write_dataset` does, replacing ``path`` only with a verified file.

    See :func:`verified_replacement`.

    Raises
    ------
    DatasetError
        The file as written does not verify; ``path`` is as it was.
    OSError
        It cannot be written; ``path`` is as it was.
    """
    path = Path(path)
    payload = dumps_dataset(dataset)
    with verified_replacement(path) as raw:
        _gzip_into(raw, payload)
    return path


@contextmanager
def verified_replacement(path: Path | str) -> Iterator[IO[bytes]]:
    """A temporary file beside ``path`` to write a gzip'd dataset into; it replaces ``path`` only once verified.

    When the block ends, the temporary file is read back to its end and
    checked as :func:`read_dataset` would check ``path`` (MNIST's sizes for a
    file called ``mnist.pkl.gz``), then renamed over ``path``.  When the
    block or the check fails, the temporary file is removed and ``path``,
    a verified dataset maybe, is untouched.

    Raises
    ------
    DatasetError
        What was written does not verify.
    """
    path = Path(path)
    source = f"the data written for {path}"
    kept = f"It was not saved: {path} is as it was."
    with atomic_write(path, "w+b") as handle:
        yield handle
        handle.flush()
        handle.seek(0)
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            dataset = load_dataset_stream(stream, source, hint=kept)
        verify_dataset(dataset, source, (N_TRAIN, N_VALID, N_TEST) if path.name == MNIST_NAME else None,
                       hint=kept)


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
                   sizes: tuple[int, int, int] | None = (N_TRAIN, N_VALID, N_TEST),
                   hint: str | None = None) -> Dataset:
    """Check the structure, shapes, dtypes and value ranges of a loaded dataset.

    ``sizes`` are the expected numbers of train/valid/test examples (MNIST's
    by default); ``None`` accepts any sizes, for datasets of one's own.
    ``hint`` ends each error message (by default :func:`fix_hint` for the
    file ``source``; a download passes ``""``, since it replaces nothing).
    """
    hint = _as_suffix(fix_hint(source, damaged=False) if hint is None else hint)
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 3):
        raise DatasetError(f"{source}: expected a 3-tuple (train, valid, test).{hint}")
    for name, split, count in zip(SPLIT_NAMES, dataset, sizes or (None, None, None)):
        if not (isinstance(split, (tuple, list)) and len(split) == 2):
            raise DatasetError(f"{source}: the {name} set is not an (x, y) pair.{hint}")
        x, y = split
        if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
            raise DatasetError(f"{source}: the {name} set does not hold NumPy arrays.{hint}")
        count = len(x) if count is None else count
        if x.shape != (count, N_PIXELS) or y.shape != (count,) or count == 0:
            raise DatasetError(
                f"{source}: the {name} set has shapes x{x.shape}, y{y.shape}; expected "
                f"x({count}, {N_PIXELS}), y({count},).{hint}"
            )
        if x.dtype.kind != "f" or y.dtype.kind not in "iu":
            raise DatasetError(
                f"{source}: the {name} set has dtypes {x.dtype}/{y.dtype}; expected "
                f"float pixels and integer labels.{hint}"
            )
        if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() < 1.0):
            raise DatasetError(f"{source}: {name} pixels are not all in [0, 1).{hint}")
        if y.min() < 0 or y.max() > 9:
            raise DatasetError(f"{source}: {name} labels are not all in 0..9.{hint}")
    return tuple(tuple(split) for split in dataset)  # type: ignore[return-value]


def mnist_array_sha256(dataset: Dataset) -> dict[str, str]:
    """SHA-256 of each array of ``dataset``, as in :data:`MNIST_ARRAY_SHA256`.

    Pixels are hashed as little-endian float32 and labels as little-endian
    int64, so a copy holding the same values in another byte order or width
    gives the same sums.
    """
    sums = {}
    for name, (x, y) in zip(SPLIT_NAMES, dataset):
        sums[f"{name} x"] = hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()
        sums[f"{name} y"] = hashlib.sha256(np.ascontiguousarray(y, dtype="<i8").tobytes()).hexdigest()
    return sums


def check_mnist_arrays(dataset: Dataset, source: str) -> None:
    """Refuse ``dataset`` unless its arrays are exactly MNIST's (:data:`MNIST_ARRAY_SHA256`).

    Raises
    ------
    DatasetError
        Naming the arrays that differ.
    """
    sums = mnist_array_sha256(dataset)
    wrong = [name for name, digest in MNIST_ARRAY_SHA256.items() if sums[name] != digest]
    if wrong:
        raise DatasetError(f"{source}: the {', '.join(wrong)} arrays differ from MNIST's "
                           f"(their SHA-256 do not match); this is not the MNIST dataset.")


def load_dataset_stream(handle: io.BufferedIOBase, source: str, hint: str | None = None) -> object:
    """Unpickle a dataset from ``handle`` (a gzip stream, or bytes already decompressed) and read it to its end.

    Reading past the pickle makes gzip check its CRC and length, so a
    damaged file cannot load with changed pixels. The object is returned
    unverified (see :func:`verify_dataset`, which also explains ``hint``).

    Raises
    ------
    DatasetError
        The gzip stream is truncated or damaged, or holds no readable dataset pickle.
    """
    hint = _as_suffix(fix_hint(source) if hint is None else hint)
    try:
        try:
            dataset = _DatasetUnpickler(handle, encoding="latin1").load()
        except GZIP_ERRORS:
            raise
        except Exception as exc:
            # a damaged gzip stream is the likelier cause of a bad pickle: say so if it is one
            while handle.read(1 << 20):
                pass
            raise DatasetError(f"{source} holds no readable dataset pickle ({exc}).{hint}") from exc
        if handle.read(1):
            raise DatasetError(f"{source} has data after its pickle; it is damaged.{hint}")
    except GZIP_ERRORS as exc:
        raise DatasetError(
            f"{source} is truncated or corrupt ({exc or type(exc).__name__}): not a complete, "
            f"intact gzip file.{hint}"
        ) from exc
    return dataset


def read_dataset(path: Path | str, mnist_sizes_by_name: bool = True) -> Dataset:
    """Load and verify a dataset file such as ``mnist.pkl.gz``.

    Parameters
    ----------
    path
        The file.
    mnist_sizes_by_name
        Require MNIST's 50,000/10,000/10,000 split of a file called
        ``mnist.pkl.gz`` (the tutorials' rule); ``False`` accepts any sizes.

    Raises
    ------
    DatasetError
        The file is missing, unreadable (permissions, a folder), damaged
        (checked to the gzip trailer), holds anything but NumPy arrays, or
        has the wrong structure or sizes.
    """
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist.\n{fix_hint(path)}") from None
    except OSError as exc:  # a symbolic link that loops, a folder on the way that cannot be entered
        raise DatasetError(describe_os_error(path, exc)) from None
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as handle:
            dataset = load_dataset_stream(handle, str(path))  # gzip's own errors become DatasetError
    except OSError as exc:
        raise DatasetError(describe_os_error(path, exc)) from exc
    sizes = (N_TRAIN, N_VALID, N_TEST) if mnist_sizes_by_name and path.name == MNIST_NAME else None
    return verify_dataset(dataset, str(path), sizes)
