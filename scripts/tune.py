"""Run a tuning study: ``python scripts/tune.py STUDY.toml [--workers N] [--threads-per-trial T]
[--scheduler ADDRESS | --dashboard-address HOST:PORT] [--out DIR] [--resume]`` (``--help`` for all options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deeplearning_tutorial.tune import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
