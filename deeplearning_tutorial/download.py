"""Downloading ``mnist.pkl.gz``: several sources, tried in order, each verified.

The one URL the original tutorials used has been unreachable for long
stretches, so a download tries a list of sources:

* a URL ending in ``.pkl.gz`` is the tutorial's ``mnist.pkl.gz`` itself,
  accepted only when its six arrays have MNIST's SHA-256
  (:data:`~deeplearning_tutorial.datasets.MNIST_ARRAY_SHA256`);
* any other URL is a folder holding the four official IDX files
  (``train-images-idx3-ubyte.gz`` and the three others), each accepted only
  when its decompressed content has the official SHA-256
  (:data:`~deeplearning_tutorial.datasets.IDX_SHA256`), then built into the
  tutorial's layout here.

Everything is downloaded into memory and verified there (the whole gzip
stream, CRC and length included); only then is the dataset written, to a
temporary file renamed over the target. A source that fails, serves an HTML
page, a truncated file or other data is skipped with one line saying why, and
nothing on disk is touched; Ctrl-C leaves nothing behind either.

The list is :data:`DEFAULT_SOURCES` unless the environment variable
``DEEPLEARNING_TUTORIAL_MNIST_MIRRORS`` gives another (URLs separated by spaces
or commas, tried in that order); ``prepare_data.py --download --mirror URL``
tries its URLs before those.
"""

from __future__ import annotations

import http.client
import io
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from deeplearning_tutorial.datasets import (
    IDX_FILES,
    IDX_SHA256,
    IDX_SIZES,
    MNIST_NAME,
    Dataset,
    DatasetError,
    check_idx_sha256,
    check_mnist_arrays,
    gunzip,
    load_dataset_stream,
    offline_hint,
    parse_idx,
    split_idx_arrays,
    verified_replacement,
    verify_dataset,
    write_verified_dataset,
)

MNIST_URL = "http://www.iro.umontreal.ca/~lisa/deep/data/mnist/mnist.pkl.gz"
"""The canonical ``mnist.pkl.gz`` of the original tutorials."""

DEFAULT_SOURCES = (
    MNIST_URL,
    "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's own mirror, its first choice
    "https://yann.lecun.com/exdb/mnist/",  # the official home, torchvision's second
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # Google's public dataset bucket
)
MIRRORS_ENV = "DEEPLEARNING_TUTORIAL_MNIST_MIRRORS"

MAX_DOWNLOAD_BYTES = {
    "mnist.pkl.gz": 32 * 2**20,
    "train-images-idx3-ubyte.gz": 16 * 2**20,
    "train-labels-idx1-ubyte.gz": 64 * 2**10,
    "t10k-images-idx3-ubyte.gz": 4 * 2**20,
    "t10k-labels-idx1-ubyte.gz": 16 * 2**10,
}
"""The most bytes a download of each file may bring: at least a third above the size of its
content gzip'd at the fastest level (the largest a mirror's copy could reasonably be), so that a
source that never stops sending is cut off, and nothing it sent is kept."""
MAX_PICKLE_BYTES = 256 * 2**20
"""The most bytes a downloaded ``mnist.pkl.gz`` may decompress to (MNIST's pickle is about 212 MiB)."""

TIMEOUT_S = 30
"""Seconds to wait for a connection or for the next bytes before giving up on a source."""

USER_AGENT = "deeplearning_tutorial (Python urllib)"

# the small files first, so that a mirror serving something else is found out early
IDX_DOWNLOAD_ORDER = ("train_labels", "test_labels", "test_images", "train_images")

NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)
"""What a failing request raises: network errors (``URLError`` is an ``OSError``),
protocol errors, malformed URLs."""
SOURCE_ERRORS = (DatasetError, *NETWORK_ERRORS)
"""What a failing source raises: the above, or a verification error."""


def parse_sources(text: str) -> list[str]:
    """The URLs of ``text``, separated by spaces or commas, in order, without repeats."""
    return list(dict.fromkeys(text.replace(",", " ").split()))


def configured_sources(first: Iterable[str] = ()) -> list[str]:
    """The sources to try: ``first``, then ``$DEEPLEARNING_TUTORIAL_MNIST_MIRRORS`` or the defaults.

    Parameters
    ----------
    first
        URLs to try before the others (``prepare_data.py --mirror``).

    Returns
    -------
    list of str
        Each URL once, in the order to try them.
    """
    configured = parse_sources(os.environ.get(MIRRORS_ENV, "")) or list(DEFAULT_SOURCES)
    return list(dict.fromkeys([*first, *configured]))


def is_pickle_url(url: str) -> bool:
    """Whether ``url`` names ``mnist.pkl.gz`` itself rather than a folder of IDX files."""
    return url.endswith(".pkl.gz")


# --------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------


def _unit(n_bytes: float) -> tuple[int, str, str]:
    """The unit to show ``n_bytes`` in: its size, name and number format (MiB with a decimal, or KiB)."""
    return (2**20, "MiB", ".1f") if n_bytes >= 2**20 else (2**10, "KiB", ".0f")


def format_progress(label: str, done: int, total: int | None, elapsed: float, width: int = 24) -> str:
    """One progress line: ``label [####....]  42% 3.9/9.2 MiB  2.1 MiB/s  ETA 0:03``.

    Sizes and speeds under a MiB are in KiB. Without a known ``total`` it
    shows the size so far and the speed only.
    """
    speed = done / elapsed if elapsed > 0 else 0.0
    size, name, fmt = _unit(speed)
    rate = f"{speed / size:{fmt}} {name}/s" if speed else "-- KiB/s"
    size, name, fmt = _unit(total or done)
    if not total:
        return f"{label} {done / size:{fmt}} {name}  {rate}"
    filled = min(width, width * done // total)
    line = (f"{label} [{'#' * filled}{'.' * (width - filled)}] {100 * done // total:3d}% "
            f"{done / size:{fmt}}/{total / size:{fmt}} {name}  {rate}")
    if speed and done < total:
        remaining = round((total - done) / speed)
        line += f"  ETA {remaining // 60}:{remaining % 60:02d}"
    return line


class Progress:
    """What a download reports while it runs; this base class shows nothing."""

    def start(self, label: str, total: int | None) -> None:
        """A file named ``label`` of ``total`` bytes (``None``: unknown) begins."""

    def update(self, done: int) -> None:
        """``done`` bytes of the current file have arrived."""

    def finish(self) -> None:
        """The current file is complete, or its download stopped."""


class TerminalProgress(Progress):
    """A progress bar per file on a terminal (size, speed, ETA), redrawn in place.

    Parameters
    ----------
    stream
        Where to draw (standard error by default, so standard output keeps
        exactly the tutorial's lines).
    clock
        Seconds as a float; injectable for tests.
    """

    def __init__(self, stream: TextIO | None = None, clock=time.monotonic, interval: float = 0.1):
        self.stream = stream or sys.stderr
        self.clock = clock
        self.interval = interval
        self.label, self.done = "", 0
        self.total: int | None = None
        self.started = self.drawn = 0.0

    def start(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = self.drawn = self.clock()
        self._draw()

    def update(self, done: int) -> None:
        self.done = done
        if self.clock() - self.drawn >= self.interval:
            self._draw()

    def finish(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        self.drawn = self.clock()
        line = format_progress(self.label, self.done, self.total, self.drawn - self.started)
        self.stream.write(f"\r{line}\x1b[K")  # \x1b[K: clear what a longer line left
        self.stream.flush()


def default_progress() -> Progress:
    """A progress bar when standard error is a terminal, nothing otherwise (logs, CI)."""
    return TerminalProgress() if sys.stderr.isatty() else Progress()


# --------------------------------------------------------------------------
# Fetching and verifying one source
# --------------------------------------------------------------------------


def fetch(url: str, label: str, progress: Progress, max_bytes: int) -> bytes:
    """The body of ``url``, complete (as long as its Content-Length says), into memory.

    No more than ``max_bytes`` are accepted: a larger announced length is
    refused before anything is read, and a body that goes on past it is cut off.

    Raises
    ------
    OSError, http.client.HTTPException, ValueError
        The request failed (``urllib.error.HTTPError`` for a 404 and the like).
    DatasetError
        The connection closed before the announced length, or the body is
        larger than ``max_bytes``.
    """
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() else None
        if total is not None and total > max_bytes:
            raise DatasetError(f"{label}: the server announces {total} bytes, more than the {max_bytes} "
                               f"that MNIST's file can take; it is something else.")
        body = bytearray()
        progress.start(label, total)
        try:
            while chunk := response.read(1 << 16):
                body += chunk
                if len(body) > max_bytes:
                    raise DatasetError(f"{label}: more than {max_bytes} bytes arrived, more than MNIST's "
                                       f"file can take; the download was stopped and nothing was kept.")
                progress.update(len(body))
        finally:
            progress.finish()
    if total is not None and len(body) != total:
        raise DatasetError(f"{label}: the connection closed after {len(body)} of {total} bytes.")
    return bytes(body)


def fetch_pickle(url: str, progress: Progress) -> bytes:
    """Download ``mnist.pkl.gz`` from ``url``; return its bytes once they are verified MNIST.

    Raises
    ------
    DatasetError
        Not a gzip file, damaged, not a dataset pickle, or not MNIST's arrays.
    """
    name = url.rsplit("/", 1)[-1]
    data = fetch(url, name, progress, MAX_DOWNLOAD_BYTES[MNIST_NAME])
    pickled = gunzip(data, name, MAX_PICKLE_BYTES)
    dataset = load_dataset_stream(io.BytesIO(pickled), name, hint="")
    check_mnist_arrays(verify_dataset(dataset, name, hint=""), name)
    return data


def fetch_idx_mirror(base_url: str, progress: Progress) -> Dataset:
    """Download the four IDX files from the folder ``base_url``, verify them, build the dataset.

    Raises
    ------
    DatasetError
        A file is not gzip, is damaged, or its content is not the official file.
    """
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    arrays = {}
    for key in IDX_DOWNLOAD_ORDER:
        name = IDX_FILES[key]
        label = f"{name}.gz"
        try:
            data = fetch(base_url + label, label, progress, MAX_DOWNLOAD_BYTES[label])
        except NETWORK_ERRORS as exc:  # say which file: a mirror may lack only one
            raise DatasetError(f"{label}: {describe_failure(exc)}") from exc
        content = gunzip(data, label, IDX_SIZES[name])
        check_idx_sha256(content, name, IDX_SHA256[name], label)
        arrays[key] = parse_idx(content, label)
    dataset = split_idx_arrays(arrays)
    check_mnist_arrays(dataset, "the dataset built from them")
    return dataset


def describe_failure(exc: BaseException) -> str:
    """Why a source failed, in one line."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP error {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_S} s"
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------
# The download
# --------------------------------------------------------------------------


def download_dataset(path: Path | str, sources: Sequence[str] | None = None,
                     progress: Progress | None = None, log: TextIO | None = None) -> Path:
    """Download MNIST to ``path`` from the first source that serves verified data.

    Prints ``Downloading data from <url>`` (as the original did) on standard
    output for each source tried, and one line on ``log`` (standard error by
    default) for each that fails.

    Parameters
    ----------
    path
        Where to write ``mnist.pkl.gz``. It is replaced (atomically) only by
        verified data; a failed or interrupted download leaves it as it was.
    sources
        URLs to try in order (see the module's docstring); by default
        :func:`configured_sources`.
    progress
        Reports each file's download; by default a bar on a terminal.
    log
        Where the per-source failure lines and the final note go.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DatasetError
        Every source failed (the message lists each one with its error, and
        the offline command), or ``path`` cannot be written.
    """
    path = Path(path)
    sources = configured_sources() if sources is None else list(sources)
    progress = progress or default_progress()
    log = log or sys.stderr
    failures = []
    for url in sources:
        print(f"Downloading data from {url}", flush=True)
        try:
            if is_pickle_url(url):
                payload: bytes | Dataset = fetch_pickle(url, progress)
            else:
                payload = fetch_idx_mirror(url, progress)
        except SOURCE_ERRORS as exc:
            reason = describe_failure(exc)
            print(f"  skipped {url}: {reason}", file=log, flush=True)
            failures.append((url, reason))
            continue
        try:
            if isinstance(payload, bytes):
                with verified_replacement(path) as out:
                    out.write(payload)
            else:
                print(f"  building {path} from the verified IDX files", file=log, flush=True)
                write_verified_dataset(payload, path)
        except OSError as exc:
            raise DatasetError(f"cannot write {path}: {exc.strerror or exc}.") from exc
        print(f"  verified MNIST from {url}, saved to {path}", file=log, flush=True)
        return path
    listed = "\n".join(f"  {url}: {reason}" for url, reason in failures) or "  (no sources given)"
    raise DatasetError(
        f"could not download MNIST to {path}; every source failed:\n{listed}\n"
        f"Add a mirror you can reach to {MIRRORS_ENV} (URLs separated by spaces; one ending in "
        f".pkl.gz is mnist.pkl.gz itself, any other a folder of the four IDX .gz files), or "
        f"pass it to `python scripts/prepare_data.py --download --mirror URL`.\n"
        + offline_hint(path)
    )
