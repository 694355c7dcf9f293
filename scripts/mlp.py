"""Run the mlp tutorial: ``python scripts/mlp.py [--help]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial.mlp import main  # noqa: E402

if __name__ == "__main__":
    main()
