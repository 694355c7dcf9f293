"""Get ``data/mnist.pkl.gz``: build it from the official IDX files, or download it.

    python scripts/prepare_data.py --from-idx ../shared/data/mnist
    python scripts/prepare_data.py --download
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial import datasets  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-idx", metavar="DIR", type=Path,
                        help="folder with the four official MNIST IDX files (.gz or plain), "
                             "checked against its SHA256SUMS.idx when present")
    source.add_argument("--download", action="store_true",
                        help=f"download mnist.pkl.gz from {datasets.MNIST_URL}")
    parser.add_argument("--output", type=Path, default=datasets.DATA_DIR / "mnist.pkl.gz",
                        help="where to write the dataset (default: data/mnist.pkl.gz)")
    args = parser.parse_args(argv)
    try:
        if args.from_idx:
            datasets.write_dataset(datasets.build_from_idx(args.from_idx), args.output)
        else:
            datasets.download_dataset(args.output)
        datasets.read_dataset(args.output)
    except datasets.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} (verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
