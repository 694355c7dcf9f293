"""Shared fixtures: the MNIST dataset, built from the official IDX files when missing.

The test run gets a temporary directory of its own, removed when it ends, for
everything written through ``tempfile`` (PyTensor's generated Numba sources,
pytest's ``tmp_path``), in this process and in the subprocesses it starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_TMPDIR = tempfile.mkdtemp(prefix="deeplearning_tutorial-tests-")
os.environ["TMPDIR"] = tempfile.tempdir = RUN_TMPDIR

# pytest-xdist workers share the cores: each worker (and what it starts) gets its share
# of threads, read by Numba, OpenMP and the BLAS libraries when they load.  Threads
# that outnumber the cores wait for each other at every parallel region (a 1-epoch MLP
# took 17 s instead of 8 s beside a busy core).  A count set by the caller is kept.
# run_python(..., all_cores=True) runs a program as a user would, without them.
THREAD_VARIABLES_SET_HERE = []
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _variable in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if _variable not in os.environ:
            os.environ[_variable] = _threads
            THREAD_VARIABLES_SET_HERE.append(_variable)

import pytest  # noqa: E402

from deeplearning_tutorial import datasets  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
IDX_DIR = Path(os.environ.get("MNIST_IDX_DIR", REPO.parent / "shared" / "data" / "mnist"))


def pytest_configure(config):
    if config.option.basetemp is None:
        config.option.basetemp = os.path.join(RUN_TMPDIR, "pytest")


def pytest_unconfigure(config):
    shutil.rmtree(RUN_TMPDIR, ignore_errors=True)


def run_with_files(name: str, folder: Path, **arguments):
    """Call program ``name``'s function as its command line does: inside the run's files, in ``folder``
    under their default names, recording the full arguments (those not given at their defaults)."""
    from deeplearning_tutorial.checkpoints import RunFiles
    from deeplearning_tutorial.cli import run_config
    from deeplearning_tutorial.programs import PROGRAMS

    program = PROGRAMS[name]
    config = run_config({**program.defaults(), **arguments})
    paths = [program.checkpoint_file, program.best_model_file]
    with RunFiles(name, config, *[folder / path if path else None for path in paths]):
        return program.function(**arguments)


def run_python(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600,
               all_cores: bool = False) -> subprocess.CompletedProcess:
    """Run the project's Python in a subprocess (own floatX / mode flags), capturing output;
    with ``all_cores``, without the thread counts this test worker was given."""
    full_env = {name: value for name, value in os.environ.items()
                if not (all_cores and name in THREAD_VARIABLES_SET_HERE)}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def prepare_data():
    """``scripts/prepare_data.py`` as a module: ``prepare_data.main(argv)`` runs in this process."""
    spec = importlib.util.spec_from_file_location("prepare_data", REPO / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def idx_dir() -> Path:
    if not (IDX_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"no MNIST IDX files in {IDX_DIR}; set MNIST_IDX_DIR")
    return IDX_DIR


@pytest.fixture(scope="session")
def mnist_path() -> Path:
    """data/mnist.pkl.gz, built from the IDX files if it is not there yet."""
    path = datasets.DATA_DIR / "mnist.pkl.gz"
    if not path.exists():
        if not (IDX_DIR / "train-images-idx3-ubyte.gz").exists():
            pytest.skip(f"{path} is missing and there are no IDX files in {IDX_DIR} to build it "
                        f"(set MNIST_IDX_DIR or run scripts/prepare_data.py)")
        datasets.write_dataset(datasets.build_from_idx(IDX_DIR), path)
    return path


@pytest.fixture(scope="session")
def mnist(mnist_path):
    return datasets.read_dataset(mnist_path)


@pytest.fixture(scope="session")
def small_mnist(mnist, tmp_path_factory) -> Path:
    """A small MNIST subset (2,000 / 500 / 500 images) for quick runs of the tutorials."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:2000], train_y[:2000]), (valid_x[:500], valid_y[:500]), (test_x[:500], test_y[:500]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "small_mnist.pkl.gz")
