"""Train LeNet-5 as LeCun et al. (1998) did: ``python scripts/lenet5_published.py [--help]``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial.lenet5_published import main  # noqa: E402

if __name__ == "__main__":
    main()
