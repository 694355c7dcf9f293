"""The MNIST pipeline: IDX parsing, the split and scaling, verification, atomic writes."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from deeplearning_tutorial import datasets, files
from deeplearning_tutorial.datasets import DatasetError
from deeplearning_tutorial.mnist import ensure_dataset, resolve_dataset_path


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


def test_missing_file_without_network_lists_every_source_and_the_offline_build(tmp_path, monkeypatch):
    from deeplearning_tutorial import download

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.delenv(download.MIRRORS_ENV, raising=False)
    target = tmp_path / "mnist.pkl.gz"
    with pytest.raises(DatasetError) as error:
        ensure_dataset(target)
    message = str(error.value)
    listed = message.splitlines()[1:5]
    assert listed == [f"  {download.MNIST_URL}: cannot connect (no network)"] + [
        f"  {url}: train-labels-idx1-ubyte.gz: cannot connect (no network)" for url in download.DEFAULT_SOURCES[1:]]
    assert f"prepare_data.py --from-idx DIR --output {target}" in message
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_bare_name_resolves_to_the_data_folder():
    assert resolve_dataset_path("mnist.pkl.gz") == datasets.DATA_DIR / "mnist.pkl.gz"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_write(path) as handle:
        handle.write(b"half-written")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    import os
    old_mask = os.umask(0o027)
    try:
        with files.atomic_write(tmp_path / "file.bin") as handle:
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
    assert result.stdout == f"wrote {out} (verified against the official MNIST checksums)\n"
    bad = run_python("scripts/prepare_data.py", "--from-idx", str(tmp_path / "nowhere"), cwd=REPO)
    assert bad.returncode == 1 and "is not a folder" in bad.stderr


# --------------------------------------------------------------------------
# The shipped checksums
# --------------------------------------------------------------------------


def test_shipped_idx_sums_are_the_published_ones(idx_dir):
    assert datasets.read_checksums(idx_dir) == datasets.IDX_SHA256


def test_shipped_array_sums_are_those_of_the_build(mnist):
    """``mnist`` is the build from the IDX files (test_split_and_scaling_follow_the_original)."""
    assert datasets.mnist_array_sha256(mnist) == datasets.MNIST_ARRAY_SHA256
    datasets.check_mnist_arrays(mnist, "mnist")


def test_one_changed_pixel_is_not_mnist(mnist):
    (train, (valid_x, valid_y), test) = mnist
    changed = valid_x.copy()
    changed[123, 456] = np.float32(0.5) if changed[123, 456] != np.float32(0.5) else np.float32(0.25)
    with pytest.raises(DatasetError, match="the valid x arrays differ from MNIST's"):
        datasets.check_mnist_arrays((train, (changed, valid_y), test), "copy")


def test_other_idx_files_build_only_when_told(idx_dir, tmp_path):
    other = copy_idx_dir(idx_dir, tmp_path / "idx")
    (other / "SHA256SUMS.idx").unlink()
    labels = bytearray(gzip.decompress((other / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = (labels[8] + 1) % 10
    (other / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: the SHA-256 .* not the official"):
        datasets.build_from_idx(other)
    (_, _, (_, test_y)) = datasets.build_from_idx(other, official=False)
    assert test_y[0] == labels[8]


# --------------------------------------------------------------------------
# Integrity: every gzip stream read to its end
# --------------------------------------------------------------------------


@pytest.fixture
def tiny_dataset(mnist, tmp_path):
    """A 30/10/10-image dataset of one's own, small enough to damage many times over."""
    subset = tuple((x[:n], y[:n]) for (x, y), n in zip(mnist, (30, 10, 10)))
    return datasets.write_dataset(subset, tmp_path / "tiny.pkl.gz")


def same_arrays(a, b):
    return all(np.array_equal(u, v) for split_a, split_b in zip(a, b) for u, v in zip(split_a, split_b))


def test_every_single_bit_flip_is_refused_or_harmless(tiny_dataset, tmp_path):
    """No single-bit flip loads changed data; flips of the CRC/length trailer are all refused.

    A flip may load, with the same arrays, where no check looks and nothing
    changes: the header's MTIME, XFL and OS bytes, its advisory flag bits, or
    a deflate back-reference moved onto an identical run (the images' many
    zeros) -- the CRC is of the data, so any change of the data is caught.
    """
    original = tiny_dataset.read_bytes()
    reference = datasets.read_dataset(tiny_dataset)
    n = len(original)
    positions = sorted({*range(10), *range(10, n - 8, max(1, (n - 18) // 200)), *range(n - 8, n)})
    damaged = tmp_path / "damaged.pkl.gz"
    loaded_same = []
    for k, position in enumerate(positions):
        flipped = bytearray(original)
        flipped[position] ^= 1 << (k % 8)
        damaged.write_bytes(flipped)
        try:
            loaded = datasets.read_dataset(damaged)
        except DatasetError:
            continue
        assert same_arrays(loaded, reference), f"a flip at byte {position} of {n} loaded changed data"
        loaded_same.append(position)
    assert not [p for p in loaded_same if p >= n - 8], "a damaged trailer loaded"
    assert len(loaded_same) < len(positions) // 5, (len(loaded_same), len(positions))


@pytest.mark.parametrize("cut", [8, 4, 1])
def test_cut_trailer_is_refused(tiny_dataset, cut):
    tiny_dataset.write_bytes(tiny_dataset.read_bytes()[:-cut])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        datasets.read_dataset(tiny_dataset)


def test_real_file_without_its_trailer_is_refused(mnist_path, tmp_path):
    cut = tmp_path / "mnist.pkl.gz"
    cut.write_bytes(mnist_path.read_bytes()[:-8])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        datasets.read_dataset(cut)


def test_data_after_the_pickle_is_refused(mnist, tmp_path):
    subset = tuple((x[:5], y[:5]) for x, y in mnist)
    path = tmp_path / "padded.pkl.gz"
    path.write_bytes(gzip.compress(datasets.dumps_dataset(subset) + b"extra"))
    with pytest.raises(DatasetError, match="data after its pickle"):
        datasets.read_dataset(path)


# --------------------------------------------------------------------------
# Messages: permissions, folders, and hints that spare one's own data
# --------------------------------------------------------------------------


def test_unreadable_dataset_is_reported_as_such(tiny_dataset, monkeypatch):
    def denied(path, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(datasets, "open", denied, raising=False)
    with pytest.raises(DatasetError) as error:
        datasets.read_dataset(tiny_dataset)
    message = str(error.value)
    assert message.startswith(f"{tiny_dataset} cannot be read: permission denied")
    assert f"chmod u+r {tiny_dataset}" in message
    assert "corrupt" not in message and "prepare_data" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_dataset_on_disk(tiny_dataset):
    tiny_dataset.chmod(0)
    try:
        with pytest.raises(DatasetError, match="cannot be read: permission denied"):
            datasets.read_dataset(tiny_dataset)
    finally:
        tiny_dataset.chmod(0o644)


def test_folder_named_like_the_dataset_is_reported_and_not_downloaded_over(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")
    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    folder = tmp_path / "mnist.pkl.gz"
    folder.mkdir()
    with pytest.raises(DatasetError) as error:
        ensure_dataset(folder)
    assert str(error.value) == f"{folder} is a folder, not a dataset file; pass the path of the file itself."
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.pkl.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"\(such as .*data/mnist.pkl.gz\)"):
        datasets.read_dataset(tmp_path / "data")


def test_hints_never_overwrite_a_dataset_of_ones_own(tiny_dataset, tmp_path):
    tiny_dataset.write_bytes(tiny_dataset.read_bytes()[:-8])
    with pytest.raises(DatasetError) as error:
        datasets.read_dataset(tiny_dataset)
    message = str(error.value)
    assert "dataset of your own" in message and f"--output {tiny_dataset}" not in message
    # readable, called mnist.pkl.gz, but not MNIST: the hint says to move it away first
    x, y = np.zeros((10, 784), np.float32), np.zeros(10, np.int64)
    own = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "mnist.pkl.gz")
    with pytest.raises(DatasetError, match="give it another name .* move it away"):
        datasets.read_dataset(own)


def test_prepare_data_leaves_ones_own_data_and_folders_alone(prepare_data, idx_dir, tmp_path, capsys):
    x, y = np.zeros((10, 784), np.float32), np.zeros(10, np.int64)
    own = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "mine.pkl.gz")
    before = own.read_bytes()
    assert prepare_data.main(["--from-idx", str(idx_dir), "--output", str(own)]) == 1
    assert "holds a dataset that is not MNIST" in capsys.readouterr().err
    assert own.read_bytes() == before
    misnamed = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "mnist.pkl.gz")
    assert prepare_data.main(["--download", "--output", str(misnamed)]) == 1
    assert "holds a dataset that is not MNIST" in capsys.readouterr().err
    assert misnamed.read_bytes() == before
    assert prepare_data.main(["--download", "--output", str(tmp_path)]) == 1
    assert f"--output {tmp_path} is a folder" in capsys.readouterr().err


def test_a_damaged_output_may_be_replaced(prepare_data, tiny_dataset):
    tiny_dataset.write_bytes(tiny_dataset.read_bytes()[:-8])
    assert prepare_data.existing_output(tiny_dataset, writing_mnist=True) is None


def test_atomic_write_names_the_real_file_when_the_write_fails(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("earlier")
    with pytest.raises(OSError) as error:
        with files.atomic_write(path, "w") as handle:
            handle.write("partial")
            raise OSError(28, "No space left on device")
    assert error.value.errno == 28 and error.value.filename == str(path)
    assert str(error.value) == f"[Errno 28] No space left on device: '{path}'"
    assert path.read_text() == "earlier" and os.listdir(tmp_path) == ["result.json"]


# --------------------------------------------------------------------------
# A verified file is replaced only by a verified one; hostile IDX headers
# --------------------------------------------------------------------------


def test_a_build_that_fails_verification_leaves_the_earlier_file_untouched(prepare_data, idx_dir, tmp_path,
                                                                           capsys):
    other = copy_idx_dir(idx_dir, tmp_path / "idx")
    (other / "SHA256SUMS.idx").unlink()
    labels = bytearray(gzip.decompress((other / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[8] = 12  # a label outside 0..9: found only once the dataset is built
    (other / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    x, y = np.zeros((10, 784), np.float32), np.zeros(10, np.int64)
    earlier = datasets.write_dataset(((x, y), (x, y), (x, y)), tmp_path / "out" / "fashion.pkl.gz")
    before = earlier.read_bytes()
    assert prepare_data.main(["--from-idx", str(other), "--no-checksums", "--output", str(earlier)]) == 1
    assert "test labels are not all in 0..9" in capsys.readouterr().err
    assert earlier.read_bytes() == before and os.listdir(earlier.parent) == ["fashion.pkl.gz"]


def test_unchecked_idx_files_never_replace_a_verified_mnist(prepare_data, idx_dir, mnist_path, tmp_path, capsys):
    verified = tmp_path / "mnist.pkl.gz"
    shutil.copy(mnist_path, verified)
    assert prepare_data.main(["--from-idx", str(idx_dir), "--no-checksums", "--output", str(verified)]) == 1
    assert "holds the verified MNIST dataset" in capsys.readouterr().err
    assert verified.read_bytes() == mnist_path.read_bytes() and os.listdir(tmp_path) == ["mnist.pkl.gz"]


@pytest.mark.parametrize("header, message", [
    (struct.pack(">IIII", 2051, 10000, 32, 32) + bytes(10000 * 32 * 32), "32x32 pixels; expected 28x28"),
    (struct.pack(">IIII", 2051, 60000, 0, 0), "0x0 pixels; expected 28x28"),
    # 2**16 * 2**24 * 2**24 = 2**64 bytes: zero once wrapped to 64 bits
    (struct.pack(">IIII", 2051, 2**16, 2**24, 2**24), "announces 18446744073709551632 bytes"),
    (struct.pack(">IIII", 2051, 2**32 - 1, 28, 28), "is truncated or corrupt"),
])
def test_idx_headers_of_the_wrong_size_are_refused_in_one_line(prepare_data, idx_dir, tmp_path, capsys,
                                                               header, message):
    other = copy_idx_dir(idx_dir, tmp_path / "idx")
    (other / "SHA256SUMS.idx").unlink()
    (other / "train-images-idx3-ubyte.gz").unlink()
    (other / "train-images-idx3-ubyte").write_bytes(header)
    assert prepare_data.main(["--from-idx", str(other), "--no-checksums", "--output",
                              str(tmp_path / "out.pkl.gz")]) == 1
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and not (tmp_path / "out.pkl.gz").exists()


def test_an_idx_file_larger_than_any_mnist_one_is_not_decompressed(tmp_path):
    bomb = tmp_path / "train-labels-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(idx_labels(np.zeros(70_000))))
    with pytest.raises(DatasetError, match="more than the 60008 bytes"):
        datasets.read_idx_bytes(bomb, datasets.IDX_SIZES["train-labels-idx1-ubyte"])


def test_a_symbolic_link_loop_is_reported_as_such(tmp_path):
    loop = tmp_path / "mnist.pkl.gz"
    loop.symlink_to(loop)
    with pytest.raises(DatasetError, match="is a symbolic link that loops"):
        ensure_dataset(loop)
