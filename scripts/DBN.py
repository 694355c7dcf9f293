"""Run the DBN tutorial: ``python scripts/DBN.py [--help]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial.cli import run  # noqa: E402

if __name__ == "__main__":
    run("DBN")
