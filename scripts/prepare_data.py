"""Get ``data/mnist.pkl.gz``: build it from the official IDX files, or download it.

    python scripts/prepare_data.py --from-idx ../shared/data/mnist
    python scripts/prepare_data.py --download
    python scripts/prepare_data.py --download --mirror https://mirror.example.com/mnist/

Either way the result is verified against the checksums of the official
files, then written to a temporary file that is read back and checked before
it replaces anything: a verified file is never replaced by an unverified one. --download tries the --mirror URLs, then
those of $DEEPLEARNING_TUTORIAL_MNIST_MIRRORS (or, when it is unset, the
canonical URL and the public IDX mirrors), in order. A URL ending in .pkl.gz
is mnist.pkl.gz itself; any other is a folder holding the four IDX .gz files.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial import datasets, download
from deeplearning_tutorial.datasets import DatasetError


def existing_output(path: Path, writing_mnist: bool) -> str | None:
    """What is at ``path`` now: ``None`` (nothing, or a damaged file to replace) or ``"mnist"``.

    Raises
    ------
    DatasetError
        ``path`` cannot be replaced safely: a folder, a symbolic link that
        loops, a file this user cannot read (so nobody can tell what it is),
        when MNIST is to be written a readable dataset that is not MNIST
        (somebody's own data), and otherwise the verified MNIST dataset
        (which unchecked data would replace).
    """
    try:
        path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DatasetError(f"{datasets.describe_os_error(path, exc)} It is left as it is.") from None
    if path.is_dir():
        raise DatasetError(f"--output {path} is a folder; give a file name, such as {path / datasets.MNIST_NAME}.")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise DatasetError(f"{datasets.describe_os_error(path, exc)} It is left as it is.") from exc
    try:
        dataset = datasets.read_dataset(path, mnist_sizes_by_name=False)
    except DatasetError:
        return None  # damaged or not a dataset: replaced once the new file is verified
    try:
        datasets.check_mnist_arrays(dataset, str(path))
    except DatasetError:
        if writing_mnist:
            raise DatasetError(
                f"{path} holds a dataset that is not MNIST (its arrays differ from MNIST's); "
                f"it is not overwritten. Move it away or choose another --output."
            ) from None
        return None
    if not writing_mnist:
        raise DatasetError(
            f"{path} holds the verified MNIST dataset; IDX files read with --no-checksums would replace "
            f"it with unchecked data. Choose another --output (or, for MNIST's own files, leave out "
            f"--no-checksums)."
        )
    return "mnist"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-idx", metavar="DIR", type=Path,
                        help="folder with the four official MNIST IDX files (.gz or plain), "
                             "checked against the official SHA-256 (and the folder's SHA256SUMS.idx)")
    source.add_argument("--download", action="store_true",
                        help="download MNIST: mnist.pkl.gz from the canonical URL, else the IDX files "
                             f"from public mirrors (or the URLs of ${download.MIRRORS_ENV})")
    parser.add_argument("--mirror", metavar="URL", action="append", default=[],
                        help="with --download: a source to try first (repeatable); a URL ending in "
                             ".pkl.gz is mnist.pkl.gz, any other a folder of the four IDX .gz files")
    parser.add_argument("--no-checksums", action="store_true",
                        help="with --from-idx: IDX files other than the official MNIST ones (such as "
                             "Fashion-MNIST); only the folder's SHA256SUMS.idx, if any, is checked")
    parser.add_argument("--output", type=Path, default=datasets.DATA_DIR / datasets.MNIST_NAME,
                        help="where to write the dataset (default: data/mnist.pkl.gz)")
    args = parser.parse_args(argv)
    if args.mirror and not args.download:
        parser.error("--mirror goes with --download")
    if args.no_checksums and not args.from_idx:
        parser.error("--no-checksums goes with --from-idx")

    official = not args.no_checksums
    try:
        present = existing_output(args.output, writing_mnist=official)
        if args.download and present == "mnist":
            print(f"{args.output} is already there (verified against MNIST's checksums); nothing to download")
            return 0
        if args.from_idx:
            dataset = datasets.build_from_idx(args.from_idx, official=official)
            try:
                datasets.write_verified_dataset(dataset, args.output)  # read back before it replaces anything
            except OSError as exc:
                raise DatasetError(f"cannot write {args.output}: {exc.strerror or exc}.") from exc
        else:
            download.download_dataset(args.output, download.configured_sources(args.mirror))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted; {args.output} is as it was before", file=sys.stderr)
        return 130
    if official:
        checked = "verified against the official MNIST checksums"
    elif (args.from_idx / "SHA256SUMS.idx").exists():
        checked = f"IDX files checked against {args.from_idx / 'SHA256SUMS.idx'} only, not against MNIST's"
    else:
        checked = f"not verified: --no-checksums, and {args.from_idx} has no SHA256SUMS.idx"
    print(f"wrote {args.output} ({checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
