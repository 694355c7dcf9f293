"""Run the conjugate-gradient logistic regression tutorial: ``python scripts/logistic_cg.py [--help]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial.logistic_cg import main  # noqa: E402

if __name__ == "__main__":
    main()
