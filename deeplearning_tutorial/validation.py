"""Checks of hyper-parameters, made before anything is compiled."""

from __future__ import annotations

from typing import Sequence


def check_n_epochs(n_epochs: int) -> None:
    """Raise ValueError unless ``n_epochs`` is an integer >= 1."""
    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"n_epochs must be an integer >= 1, got {n_epochs!r}")


def check_hyperparameters(
    learning_rate: float,
    n_epochs: int,
    batch_size: int,
    split_sizes: Sequence[int],
    nkerns: Sequence[int] | None = None,
) -> None:
    """Raise ValueError, saying what to change, for arguments no run can use."""
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    check_n_epochs(n_epochs)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    smallest = min(split_sizes)
    if batch_size > smallest:
        raise ValueError(
            f"batch_size {batch_size} is larger than the smallest data split "
            f"({smallest} examples): no full minibatch could be formed; use at most {smallest}"
        )
    if nkerns is not None:
        if len(nkerns) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                                       for k in nkerns):
            raise ValueError(f"nkerns must be two positive integers, e.g. [20, 50]; got {list(nkerns)!r}")
