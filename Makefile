# The two commands of the README:
#   make run    set everything up, then run the LeNet tutorial (convolutional_mlp.py)
#   make test   set everything up, then run the test suite
#   make lint   ruff and mypy, as configured in pyproject.toml, and no import cycle in the package
#   make docs   the documentation site, into docs/_build/html (warnings are errors)
# Data: a missing data/mnist.pkl.gz is downloaded; offline, build it with
#   .venv/bin/python scripts/prepare_data.py --from-idx DIR
# (the tests do that from $MNIST_IDX_DIR or ../shared/data/mnist when they can).
PYTHON := .venv/bin/python

.PHONY: run test lint docs setup
setup:
	@bash scripts/bootstrap.sh

run: setup
	$(PYTHON) scripts/convolutional_mlp.py

# the suite runs in TEST_WORKERS processes (pytest-xdist; 'auto': one per core):
# most of a cold run is compiling graphs, one process per core at a time;
# each test file runs in one process, so its module fixtures run once; each process
# gets its share of the cores' threads (tests/conftest.py), as threads beyond the cores
# wait for each other
TEST_WORKERS ?= auto
test: setup
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
	$(PYTHON) scripts/check_imports.py

docs: setup
	.venv/bin/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
