"""``python -m deeplearning_tutorial.tune STUDY.toml``, as ``scripts/tune.py``."""

from deeplearning_tutorial.tune import main

raise SystemExit(main())
