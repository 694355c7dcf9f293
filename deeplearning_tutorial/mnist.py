"""Where a tutorial's dataset comes from: the path resolved as the tutorials resolve it, MNIST
downloaded when it is missing, and every file verified before it is used.

This module ties :mod:`~deeplearning_tutorial.datasets` (the file format and
its verification) to :mod:`~deeplearning_tutorial.download` (fetching), which
know nothing of each other's policy.
"""

from __future__ import annotations

import os
from pathlib import Path

from deeplearning_tutorial.datasets import DATA_DIR, MNIST_NAME, Dataset, read_dataset
from deeplearning_tutorial.download import download_dataset


def resolve_dataset_path(dataset: str | os.PathLike) -> Path:
    """The tutorials' rule: a bare name that is not an existing file lives in ``data/``."""
    path = Path(dataset)
    if path.parent == Path(".") and not path.is_file():
        candidate = DATA_DIR / path
        if candidate.is_file() or path.name == MNIST_NAME:
            return candidate
    return path


def ensure_dataset(dataset: str | os.PathLike) -> Dataset:
    """Resolve, download if it is the missing ``mnist.pkl.gz``, then load and verify.

    Parameters
    ----------
    dataset
        A path, or a bare name looked up in ``data/`` (:func:`resolve_dataset_path`).

    Returns
    -------
    Dataset
        The three verified ``(x, y)`` splits.

    Raises
    ------
    DatasetError
        When the file is missing and cannot be downloaded, or is not a valid dataset.
    """
    path = resolve_dataset_path(dataset)
    if not os.path.lexists(path) and path.name == MNIST_NAME:
        download_dataset(path)
    return read_dataset(path)
