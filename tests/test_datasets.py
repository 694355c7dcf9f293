"""The MNIST pipeline: IDX parsing, the split and scaling, verification, atomic writes."""

from __future__ import annotations

import gzip
import shutil
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from deeplearning_tutorial import datasets
from deeplearning_tutorial.datasets import DatasetError


def idx_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def test_parse_idx_images_and_labels():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(datasets.parse_idx(idx_images(images)), images)
    labels = np.array([7, 2, 1], dtype=np.uint8)
    np.testing.assert_array_equal(datasets.parse_idx(idx_labels(labels)), labels)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x00", "too short"),
    (struct.pack(">II", 1234, 1) + b"\x00", "magic number 1234"),
    (idx_labels(np.arange(5))[:-1], "truncated"),
])
def test_parse_idx_rejects_bad_content(content, message):
    with pytest.raises(DatasetError, match=message):
        datasets.parse_idx(content)


def test_split_and_scaling_follow_the_original(mnist, idx_dir):
    """train = first 50,000, valid = last 10,000 training images; pixels uint8/256."""
    raw = datasets.load_idx_dir(idx_dir)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    flat = raw["train_images"].reshape(60000, 784)
    np.testing.assert_array_equal(train_x, flat[:50000] / np.float32(256))
    np.testing.assert_array_equal(valid_x, flat[50000:] / np.float32(256))
    np.testing.assert_array_equal(test_x, raw["test_images"].reshape(10000, 784) / np.float32(256))
    np.testing.assert_array_equal(train_y, raw["train_labels"][:50000])
    np.testing.assert_array_equal(valid_y, raw["train_labels"][50000:])
    np.testing.assert_array_equal(test_y, raw["test_labels"])
    assert train_x.dtype == np.float32 and train_y.dtype == np.int64
    assert train_x.max() == np.float32(0.99609375)  # 255/256, not 1.0


def test_build_is_reproducible_and_numpy1_compatible(idx_dir, tmp_path, mnist):
    first = datasets.write_dataset(datasets.build_from_idx(idx_dir), tmp_path / "a.pkl.gz")
    second = datasets.write_dataset(datasets.build_from_idx(idx_dir), tmp_path / "b.pkl.gz")
    assert first.read_bytes() == second.read_bytes()
    payload = gzip.decompress(first.read_bytes())
    assert payload[:2] == b"\x80\x02"  # protocol 2, readable by Python 2
    assert b"numpy.core.multiarray" in payload and b"numpy._core" not in payload
    for (x, y), (x_ref, y_ref) in zip(datasets.read_dataset(first), mnist):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)


def copy_idx_dir(source, target):
    target.mkdir()
    for name in datasets.IDX_FILES.values():
        shutil.copy(source / f"{name}.gz", target)
    shutil.copy(source / "SHA256SUMS.idx", target)
    return target


def test_checksum_mismatch_is_reported(idx_dir, tmp_path):
    bad = copy_idx_dir(idx_dir, tmp_path / "idx")
    labels = gzip.decompress((bad / "t10k-labels-idx1-ubyte.gz").read_bytes())
    corrupted = labels[:-1] + bytes([(labels[-1] + 1) % 10])
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(corrupted))
    with pytest.raises(DatasetError, match="SHA-256.*t10k-labels|t10k-labels.*SHA-256"):
        datasets.build_from_idx(bad)


def test_missing_idx_file_is_reported(idx_dir, tmp_path):
    bad = copy_idx_dir(idx_dir, tmp_path / "idx")
    (bad / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz"):
        datasets.build_from_idx(bad)


def test_truncated_gzip_is_reported_with_the_fix(mnist_path, tmp_path):
    truncated = tmp_path / "mnist.pkl.gz"
    truncated.write_bytes(mnist_path.read_bytes()[:100_000])
    with pytest.raises(DatasetError, match="truncated or corrupt") as error:
        datasets.read_dataset(truncated)
    assert "prepare_data.py --from-idx" in str(error.value)


def test_foreign_pickle_is_refused(tmp_path):
    import pickle
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(("not", "a", datasets.Path("x")), f, protocol=2)
    with pytest.raises(DatasetError, match="no readable dataset pickle"):
        datasets.read_dataset(path)


def test_wrong_shapes_are_reported(tmp_path):
    x = np.zeros((10, 784), np.float32)
    y = np.zeros(10, np.int64)
    path = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "mnist.pkl.gz")
    with pytest.raises(DatasetError, match=r"train set has shapes x\(10, 784\)"):
        datasets.read_dataset(path)
    # a dataset of one's own (another name) may have any sizes, but consistent ones
    own = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "small.pkl.gz")
    assert len(datasets.read_dataset(own)[0][0]) == 10
    datasets.write_dataset(((x, y[:5]), (x, y), (x, y)), own)
    with pytest.raises(DatasetError, match="expected x\\(10, 784\\), y\\(10,\\)"):
        datasets.read_dataset(own)


def test_missing_file_without_network_says_how_to_build_it(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    target = tmp_path / "mnist.pkl.gz"
    with pytest.raises(DatasetError, match="--from-idx"):
        datasets.ensure_dataset(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_bare_name_resolves_to_the_data_folder():
    assert datasets.resolve_dataset_path("mnist.pkl.gz") == datasets.DATA_DIR / "mnist.pkl.gz"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with datasets.atomic_write(path) as handle:
            handle.write(b"half-written")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    import os
    old_mask = os.umask(0o027)
    try:
        with datasets.atomic_write(tmp_path / "file.bin") as handle:
            handle.write(b"data")
        with open(tmp_path / "plain.bin", "wb") as handle:
            handle.write(b"data")
    finally:
        os.umask(old_mask)
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "plain.bin").stat().st_mode & 0o777 == 0o640


def test_prepare_data_script_builds_a_verified_file(idx_dir, tmp_path):
    from conftest import REPO, run_python
    out = tmp_path / "mnist.pkl.gz"
    result = run_python("scripts/prepare_data.py", "--from-idx", str(idx_dir), "--output", str(out), cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    bad = run_python("scripts/prepare_data.py", "--from-idx", str(tmp_path / "nowhere"), cwd=REPO)
    assert bad.returncode == 1 and "is not a folder" in bad.stderr
