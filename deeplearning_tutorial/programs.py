"""The tutorial programs, in one registry: what runs each, which files it writes, how its models load.

Each entry names the tutorial function a program runs (the original's, such
as ``evaluate_lenet5``), how to rebuild its classifier from a saved best
model, and the default names of its run files.  The command line
(:mod:`deeplearning_tutorial.cli`), :func:`load_best_model`, the tuning
studies (:mod:`deeplearning_tutorial.tune`) and ``scripts/reproduce.py`` all
read it, so that a new program is added here, once.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections.abc import Callable
from pathlib import Path

import pytensor
import pytensor.tensor as pt

from deeplearning_tutorial import DBN, SdA, cA, convolutional_mlp, dA, lenet5, logistic_cg, logistic_sgd, mlp, rbm
from deeplearning_tutorial.checkpoints import BestModel, RunFileError, check_arrays, read_archive


@dataclasses.dataclass(frozen=True)
class Program:
    """A tutorial program.

    Attributes
    ----------
    name : str
        Its module's name, as the original's file (``"convolutional_mlp"``).
    function : callable
        The tutorial function it runs; every parameter with a default is an option of its command line.
    rebuild_classifier : callable or None
        ``rebuild_classifier(x, config)``: the classifier of a saved best model
        on the image matrix ``x``, from the run's recorded arguments; returns
        the classifier, its predicted classes, its parameters (in the order
        training saves them) and the batch size its graph takes (None: any).
        None for a program that saves no best model.
    checkpoint_file, best_model_file : str or None
        The default names of its checkpoint (None: it cannot be resumed) and
        best model (None: it saves none).
    dataset_argument : str
        The function's parameter that names the data file.
    original_seed : int or None
        The seed of the RandomState its weights are drawn from, as in the
        original (None: nothing is drawn).
    dry_run_argument : str or None
        A boolean parameter that makes the function print and return without
        training (so no file is claimed), such as LeNet-5's ``summary``.
    """

    name: str
    function: Callable
    rebuild_classifier: Callable | None = None
    checkpoint_file: str | None = None
    best_model_file: str | None = None
    dataset_argument: str = "dataset"
    original_seed: int | None = None
    dry_run_argument: str | None = None

    @property
    def qualified_name(self) -> str:
        """The function's module and name, ``deeplearning_tutorial.mlp.test_mlp``."""
        return f"{self.function.__module__}.{self.function.__name__}"

    def defaults(self) -> dict:
        """The function's parameters that have defaults, with them."""
        return {name: parameter.default for name, parameter in inspect.signature(self.function).parameters.items()
                if parameter.default is not inspect.Parameter.empty}


# To add a program, add its entry here.
PROGRAMS: dict[str, Program] = {program.name: program for program in (
    Program("logistic_sgd", logistic_sgd.sgd_optimization_mnist, logistic_sgd.rebuild_classifier,
            best_model_file="best_model_logistic.npz"),
    Program("logistic_cg", logistic_cg.cg_optimization_mnist, dataset_argument="mnist_pkl_gz"),
    Program("mlp", mlp.test_mlp, mlp.rebuild_classifier, "mlp.ckpt", "best_model_mlp.npz", original_seed=1234),
    Program("convolutional_mlp", convolutional_mlp.evaluate_lenet5, convolutional_mlp.rebuild_classifier,
            "convolutional_mlp.ckpt", "best_model_lenet.npz", original_seed=23455),
    Program("lenet5", lenet5.train_lenet5, lenet5.rebuild_classifier, "lenet5.ckpt", "best_model_lenet5.npz",
            original_seed=23455, dry_run_argument="summary"),
    Program("dA", dA.test_dA, original_seed=123),
    Program("cA", cA.test_cA, original_seed=123),
    Program("SdA", SdA.test_SdA, SdA.rebuild_classifier, best_model_file="best_model_SdA.npz", original_seed=89677),
    Program("rbm", rbm.test_rbm, original_seed=123),
    Program("DBN", DBN.test_DBN, DBN.rebuild_classifier, best_model_file="best_model_DBN.npz", original_seed=123),
)}


def load_best_model(path: Path | str) -> BestModel:
    """Rebuild the model saved in ``path`` by a tutorial and give it the saved parameters.

    The file holds only arrays and JSON (no pickle): loading it runs no code
    from it.  The model is rebuilt by the tutorial's own code from the
    recorded arguments (``repr`` of the result shows them).

    Parameters
    ----------
    path
        A best-model file: ``best_model_mlp.npz``, ``best_model_lenet.npz``,
        ``best_model_logistic.npz``.

    Returns
    -------
    BestModel
        The rebuilt model with the saved parameters; its
        :meth:`~BestModel.predict` classifies images.

    Raises
    ------
    FileNotFoundError
        When there is no such file.
    RunFileError
        When the file cannot be read (a folder, no permission), is not a
        best model of this package (a pickle, another kind of file, a
        damaged file), names a program it cannot rebuild, or was altered
        (arguments no model can be built from, parameters of other shapes
        or dtypes).

    Warns
    -----
    UserWarning
        When the model was trained in another floatX than the current one
        (its parameters are converted).
    """
    description, arrays = read_archive(path, "best model")
    name, config = description.get("program"), description.get("config")
    loadable = [program.name for program in PROGRAMS.values() if program.rebuild_classifier is not None]
    if name not in loadable or not isinstance(config, dict):
        raise RunFileError(f"{path} names the program {name!r}; only the models of "
                           f"{', '.join(loadable)} can be loaded")
    program = PROGRAMS[name]
    assert program.rebuild_classifier is not None
    if config.get("floatX", pytensor.config.floatX) != pytensor.config.floatX:
        warnings.warn(f"{path} was trained in {config['floatX']}; it is loaded in {pytensor.config.floatX}",
                      stacklevel=2)
    x = pt.matrix("x")
    try:
        classifier, y_pred, params, batch_size = program.rebuild_classifier(x, config)
    except (KeyError, TypeError, ValueError, MemoryError) as exc:
        raise RunFileError(f"{path} records arguments {name} cannot build a model from "
                           f"({type(exc).__name__}: {exc}); the file was altered") from None
    floatX_arrays = [a.astype(pytensor.config.floatX) if a.dtype.kind == "f" else a for a in arrays]
    check_arrays(Path(path), floatX_arrays, [p.get_value(borrow=True) for p in params])
    for param, value in zip(params, floatX_arrays):
        param.set_value(value)
    return BestModel(name, config, classifier, x, y_pred, batch_size)
