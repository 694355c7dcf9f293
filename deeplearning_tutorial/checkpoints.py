"""The files a training run writes: checkpoints, best models, and locks that keep two runs apart.

Checkpoints and best models are NumPy ``.npz`` archives of plain arrays: the
parameters, plus one string holding a JSON description (what the file is,
which program wrote it, the run's arguments, the loop state).  They are read
with ``allow_pickle=False``, so a file can hold numbers and text but never
code: a foreign or tampered file is refused with a message, and nothing in
it runs.  A best model is rebuilt from its recorded arguments by the
tutorial's own code, then given the saved parameters.

While a run is going, each file it writes has a ``<name>.lock`` beside it
with the run's process id, so that a second run in the same folder stops at
once instead of overwriting the first one's files.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib
import json
import os
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplearning_tutorial.datasets import atomic_write, create_temporary_beside
from deeplearning_tutorial.training import LoopState
from deeplearning_tutorial.validation import check_images

FORMAT = "deeplearning_tutorial"
VERSION = 1
# the programs whose best models load_best_model can rebuild, and the module that builds each
PROGRAMS = {
    "logistic_sgd": "deeplearning_tutorial.logistic_sgd",
    "mlp": "deeplearning_tutorial.mlp",
    "convolutional_mlp": "deeplearning_tutorial.convolutional_mlp",
    "lenet5": "deeplearning_tutorial.lenet5",
}


class RunFileError(ValueError):
    """A checkpoint or model file that cannot be used, or that a new run would clobber."""


# --------------------------------------------------------------------------
# The archive format
# --------------------------------------------------------------------------


def write_archive(path: Path | str, description: dict, arrays: Sequence[np.ndarray]) -> None:
    """Write ``description`` (JSON) and ``arrays`` atomically to the ``.npz`` archive ``path``.

    Raises
    ------
    RunFileError
        When the file cannot be written (full disk, no permission); any
        earlier file at ``path`` is left as it was.
    """
    description = {"format": FORMAT, "version": VERSION, **description, "n_arrays": len(arrays)}
    content = {"description": np.array(json.dumps(description))}
    content.update({f"array_{i}": np.asarray(a) for i, a in enumerate(arrays)})
    try:
        with atomic_write(path) as handle:
            np.savez(handle, **content)  # type: ignore[arg-type]
    except OSError as exc:
        raise RunFileError(f"could not write {path}: {exc.strerror or exc}; the earlier file (if any) "
                           f"is unchanged. Free some space or choose another file name.") from None


def read_archive(path: Path | str, kind: str, arrays: bool = True) -> tuple[dict, list[np.ndarray]]:
    """The description and (when ``arrays``) the arrays of a ``kind`` archive written by :func:`write_archive`.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    RunFileError
        When ``path`` is a folder, is not such an archive (a pickle, another
        program's file, a damaged file) or holds another kind of file.
    """
    path = Path(path)
    if path.is_dir():
        raise RunFileError(f"{path} is a folder, not a {kind} file; give the path of the file")
    not_ours = (f"{path} is not a {kind} written by deeplearning_tutorial, or it is damaged")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an archive")
        with archive:
            description = json.loads(archive["description"].item())
            if not (isinstance(description, dict) and description.get("format") == FORMAT):
                raise ValueError("no deeplearning_tutorial description in it")
            n_arrays = description["n_arrays"]
            loaded = [archive[f"array_{i}"] for i in range(n_arrays)] if arrays else []
    except FileNotFoundError:
        raise
    except PermissionError:
        raise RunFileError(f"cannot read {path}: permission denied") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        # np.load refuses pickles (allow_pickle=False) with a ValueError: nothing was unpickled
        raise RunFileError(f"{not_ours} ({exc}); nothing in it was run. Use a file this package "
                           f"wrote, or move this one away.") from None
    if description.get("version") != VERSION or description.get("kind") != kind:
        raise RunFileError(f"{path} is a {description.get('kind')!r} file of version "
                           f"{description.get('version')!r}, not a {kind} of version {VERSION}")
    return description, loaded


def describe_config(config: dict) -> str:
    """A run's arguments as ``key=value`` pairs separated by commas, for messages."""
    return ", ".join(f"{key}={value!r}" for key, value in config.items())


# --------------------------------------------------------------------------
# Locks
# --------------------------------------------------------------------------


class RunLock:
    """``<file>.lock`` beside each file of a running run, holding the process id.

    A lock left by a process that no longer exists (killed, crashed) or by
    this very process (an earlier call that raised) is taken over.  A lock
    appears with its pid already in it, so an empty one is a crash's too.
    ``elsewhere`` ends the message when another run holds a lock: how to run
    beside it (by default, with a program's options).
    """

    def __init__(self, paths: Sequence[Path],
                 elsewhere: str = "give this run other file names (--checkpoint-file, --best-model-file) "
                                  "or another folder") -> None:
        self.locks = [path.with_name(path.name + ".lock") for path in paths]
        self.elsewhere = elsewhere
        self.held: list[Path] = []

    def acquire(self) -> None:
        """Take every lock, or none: on an error the ones already taken are released.

        The locks are also released when the process exits.

        Raises
        ------
        RunFileError
            When a live process other than this one holds a lock, or a lock
            file cannot be created (no permission to write in the folder, or
            another OS error).
        """
        try:
            for lock in self.locks:
                self._take(lock)
                self.held.append(lock)
        except BaseException:
            self.release()
            raise
        atexit.register(self.release)  # also when the run fails before training ends

    def _take(self, lock: Path) -> None:
        target = lock.with_name(lock.name[: -len(".lock")])
        while True:
            try:
                _create_lock(lock)
            except FileExistsError:
                owner = _lock_owner(lock)
                if owner is not None and owner != os.getpid() and _process_exists(owner):
                    raise RunFileError(
                        f"another run (process {owner}) is writing {target}; wait for it to end, or "
                        f"{self.elsewhere}. If no such run exists, delete {lock}."
                    ) from None
                lock.unlink(missing_ok=True)  # stale: its process is gone (or it crashed before writing)
                continue
            except PermissionError:
                raise RunFileError(
                    f"cannot write in {lock.parent.resolve()} (permission denied), so the run could not "
                    f"save {target.name} there; run it in a folder you can write to, or give other "
                    f"file names (--checkpoint-file, --best-model-file)") from None
            except OSError as exc:
                raise RunFileError(f"cannot create {lock}: {exc.strerror or exc}") from None
            return

    def release(self) -> None:
        """Remove the lock files this process holds; those another process took over stay."""
        for lock in self.held:
            if _lock_owner(lock) == os.getpid():
                lock.unlink(missing_ok=True)
        self.held = []
        atexit.unregister(self.release)


def _create_lock(lock: Path) -> None:
    """Create ``lock`` holding this process's id, or raise FileExistsError if it exists.

    The id is written to a temporary file first, which is then hard-linked to
    ``lock`` (a link, like ``O_EXCL``, fails where the name exists), so that
    no other run ever finds the lock empty and takes it for a stale one.  On
    a filesystem without hard links the lock is created with ``O_EXCL`` and
    the id written into it.
    """
    pid = str(os.getpid())
    fd, name = create_temporary_beside(lock)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(pid)
        try:
            os.link(temporary, lock)
            return
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares)
            pass
    finally:
        temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644), "w") as handle:
        handle.write(pid)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Checkpoint:
    """The loop state and parameter values of a run of ``program`` with arguments ``config``.

    Saved at every validation and when the run stops; ``finished`` tells a
    completed run from an interrupted one.
    """

    path: Path
    program: str
    config: dict

    def check_start(self, resume: bool, discard: bool) -> None:
        """Before anything is built: may a run (a resumed one if ``resume``) use this checkpoint?

        Raises
        ------
        RunFileError
            ``resume`` without a checkpoint, or with one of other arguments;
            a new run over an interrupted run's checkpoint (unless ``discard``)
            or over a file that is not a checkpoint.
        """
        if resume:
            try:
                description, _ = read_archive(self.path, "checkpoint", arrays=False)
            except FileNotFoundError:
                raise RunFileError(f"no checkpoint at {self.path} to resume from; run without --resume "
                                   f"to start a new run") from None
            self._check_same_run(description)
            state = description["state"]
            print(f"Resuming {self.path}: {self.program} run with {describe_config(self.config)}; "
                  f"{_progress(state)}", file=sys.stderr)
            return
        if not self.path.exists() and not self.path.is_symlink():
            return
        try:
            description, _ = read_archive(self.path, "checkpoint", arrays=False)
        except RunFileError as exc:
            if discard:
                return
            raise RunFileError(f"{exc}\nA new run would overwrite it: pass --discard-checkpoint to do so, "
                               f"or --checkpoint-file with another name.") from None
        if description.get("finished") or discard:
            what = "finished" if description.get("finished") else "interrupted"
            print(f"Replacing the {what} run in {self.path} ({description.get('program')} with "
                  f"{describe_config(description.get('config', {}))})", file=sys.stderr)
            return
        raise RunFileError(
            f"{self.path} holds an interrupted run ({description.get('program')} with "
            f"{describe_config(description.get('config', {}))}; {_progress(description['state'])}). "
            f"Continue it with --resume, or start over with --discard-checkpoint (which overwrites it).")

    def _check_same_run(self, description: dict) -> None:
        saved = description.get("config")
        if description.get("program") != self.program or saved != self.config:
            saved = saved if isinstance(saved, dict) else {}
            differences = [f"{key}: {saved.get(key)!r} there, {self.config.get(key)!r} here"
                           for key in sorted(set(saved) | set(self.config))
                           if saved.get(key) != self.config.get(key)]
            raise RunFileError(
                f"checkpoint {self.path} was written by a {description.get('program')} run with other "
                f"arguments ({'; '.join(differences) or 'another program'}); resume with the same "
                f"arguments, or start over with --discard-checkpoint")

    def save(self, state: LoopState, params: Sequence, finished: bool = False) -> None:
        """Write the loop state and the values of ``params`` to the checkpoint, atomically.

        Parameters
        ----------
        state
            The patience loop's variables.
        params
            The model's shared variables.
        finished
            Whether the run completed (a finished checkpoint may be replaced
            by a new run; an interrupted one only with ``discard``).

        Raises
        ------
        RunFileError
            When the file cannot be written; the earlier checkpoint is left as it was.
        """
        write_archive(self.path, {"kind": "checkpoint", "program": self.program, "config": self.config,
                                  "state": dataclasses.asdict(state), "finished": finished},
                      [p.get_value(borrow=True) for p in params])

    def load(self, params: Sequence) -> LoopState:
        """Give ``params`` the saved values and return the saved loop state.

        Parameters
        ----------
        params
            The model's shared variables, in the order they were saved.

        Returns
        -------
        LoopState
            The saved state, with ``stopped_by`` cleared so that the run continues.

        Raises
        ------
        FileNotFoundError
            When there is no checkpoint file.
        RunFileError
            When the file cannot be read, is not a checkpoint of this
            package, was written by another program or with other arguments,
            holds parameters of other shapes or dtypes, or has a damaged loop
            state.
        """
        description, arrays = read_archive(self.path, "checkpoint")
        self._check_same_run(description)
        _check_arrays(self.path, arrays, [p.get_value(borrow=True) for p in params])
        state = _loop_state(self.path, description.get("state"))
        for param, value in zip(params, arrays):
            param.set_value(value)
        state.stopped_by = None
        return state


def _progress(state: dict) -> str:
    best = state.get("best_validation_loss")
    best = f"best validation {best * 100.0:f} %" if isinstance(best, float) and best < 1e300 else "no validation yet"
    return f"stopped in epoch {state.get('epoch')}, {best}"


def _check_arrays(path: Path, arrays: list[np.ndarray], expected: list[np.ndarray]) -> None:
    found = [(a.shape, a.dtype.str) for a in arrays]
    wanted = [(e.shape, e.dtype.str) for e in expected]
    if found != wanted:
        raise RunFileError(f"{path} holds parameters of shapes and dtypes {found}, but this model has "
                           f"{wanted}: it was not written for this model (or it was altered)")


def _loop_state(path: Path, data: object) -> LoopState:
    """A LoopState from its saved fields, each of the right type."""
    names = {f.name for f in dataclasses.fields(LoopState)}

    def integer(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def entry(h):
        return (isinstance(h, list) and len(h) == 3 and integer(h[0]) and number(h[1])
                and (h[2] is None or number(h[2])))

    valid = (isinstance(data, dict) and set(data) == names
             and all(integer(data[k]) for k in ("patience", "epoch", "next_minibatch", "best_iter"))
             and all(number(data[k]) for k in ("best_validation_loss", "test_score", "elapsed"))
             and isinstance(data["done_looping"], bool)
             and (data["stopped_by"] is None or integer(data["stopped_by"]))
             and isinstance(data["history"], list) and all(entry(h) for h in data["history"]))
    if not valid:
        raise RunFileError(f"{path} has a damaged or altered loop state; it cannot be resumed: start "
                           f"over without --resume, with --discard-checkpoint, or move the file away")
    state = LoopState(**data)  # type: ignore[arg-type]  # checked above
    state.history = [(h[0], h[1], h[2]) for h in state.history]
    return state


# --------------------------------------------------------------------------
# Best models
# --------------------------------------------------------------------------


def save_best_model(path: Path | str, program: str, config: dict, params: Sequence) -> None:
    """Save the parameters of ``program``'s model and the arguments that built it.

    Parameters
    ----------
    path
        The best-model file, written atomically.
    program
        The tutorial's name, one of :data:`PROGRAMS`.
    config
        The run's arguments, from which :func:`load_best_model` rebuilds the model.
    params
        The model's shared variables.

    Raises
    ------
    RunFileError
        When the file cannot be written; an earlier file is left as it was.
    """
    write_archive(path, {"kind": "best model", "program": program, "config": config},
                  [p.get_value(borrow=True) for p in params])


class BestModel:
    """A trained model rebuilt from a best-model file: ``predict(images)`` classifies images.

    Attributes
    ----------
    program, config
        The tutorial that trained it and the arguments of that run.
    classifier
        The rebuilt model (a ``LogisticRegression``, an ``MLP``, LeNet's list of layers).
    """

    def __init__(self, program: str, config: dict, classifier, input, y_pred, batch_size: int | None):
        self.program, self.config, self.classifier = program, config, classifier
        self.input, self.y_pred, self.batch_size = input, y_pred, batch_size
        self._function: Any = None

    def __repr__(self) -> str:
        return f"<BestModel of {self.program} trained with {describe_config(self.config)}>"

    def predict(self, images) -> np.ndarray:
        """Predicted classes (0..9) of ``images``.

        Parameters
        ----------
        images
            (n, 784) or (n, 28, 28) pixel values in [0, 1] (MNIST's bytes / 256), n >= 1.

        Returns
        -------
        numpy.ndarray
            (n,) int64 classes.

        Raises
        ------
        ValueError
            For another shape, no image, or NaN / infinite values (a warning
            is given for values outside [0, 1], as in 0..255 images).
        """
        import pytensor

        images = check_images(images)
        if self._function is None:
            self._function = pytensor.function([self.input], self.y_pred)
        size = self.batch_size or len(images)
        predictions = []
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), chunk.shape[1]), chunk.dtype)])
            predictions.append(self._function(padded)[: len(chunk)])
        return np.concatenate(predictions).astype(np.int64)


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
    import pytensor
    import pytensor.tensor as pt

    description, arrays = read_archive(path, "best model")
    program, config = description.get("program"), description.get("config")
    if program not in PROGRAMS or not isinstance(config, dict):
        raise RunFileError(f"{path} names the program {program!r}; only the models of "
                           f"{', '.join(PROGRAMS)} can be loaded")
    if config.get("floatX", pytensor.config.floatX) != pytensor.config.floatX:
        warnings.warn(f"{path} was trained in {config['floatX']}; it is loaded in {pytensor.config.floatX}",
                      stacklevel=2)
    module = importlib.import_module(PROGRAMS[program])
    x = pt.matrix("x")
    try:
        classifier, y_pred, params, batch_size = module.rebuild_classifier(x, config)
    except (KeyError, TypeError, ValueError, MemoryError) as exc:
        raise RunFileError(f"{path} records arguments {program} cannot build a model from "
                           f"({type(exc).__name__}: {exc}); the file was altered") from None
    floatX_arrays = [a.astype(pytensor.config.floatX) if a.dtype.kind == "f" else a for a in arrays]
    _check_arrays(Path(path), floatX_arrays, [p.get_value(borrow=True) for p in params])
    for param, value in zip(params, floatX_arrays):
        param.set_value(value)
    return BestModel(program, config, classifier, x, y_pred, batch_size)


# --------------------------------------------------------------------------
# The files of one run
# --------------------------------------------------------------------------


class RunFiles:
    """The files a run of ``program`` writes, claimed before anything is built.

    Creating it locks the checkpoint and best-model files against other runs
    and checks the checkpoint: a resume needs one of the same arguments, a
    new run refuses to overwrite an interrupted one unless
    ``discard_checkpoint``.  :func:`~deeplearning_tutorial.training.train`
    releases the locks when the run ends.

    Parameters
    ----------
    program
        The tutorial's module name (``"mlp"``), recorded in the files.
    config
        The run's arguments (and floatX), recorded in the files; a resume must match them.
    checkpoint_file, best_model_file
        Paths, or None for no such file.
    resume
        Continue the run saved in ``checkpoint_file``.
    discard_checkpoint
        Start over even if ``checkpoint_file`` holds an interrupted run (it is overwritten).

    Raises
    ------
    RunFileError
        When ``resume`` is asked without a ``checkpoint_file`` or together
        with ``discard_checkpoint``, another run is writing these files, the
        folder is not writable, or the checkpoint forbids this start (see
        :meth:`Checkpoint.check_start`).
    """

    def __init__(self, program: str, config: dict, checkpoint_file: str | os.PathLike | None = None,
                 best_model_file: str | os.PathLike | None = None, *, resume: bool = False,
                 discard_checkpoint: bool = False) -> None:
        if resume and checkpoint_file is None:
            raise RunFileError("resume needs a checkpoint file: pass checkpoint_file")
        if resume and discard_checkpoint:
            raise RunFileError("--resume continues the checkpoint and --discard-checkpoint overwrites it: "
                               "choose one")
        self.program, self.config, self.resume = program, config, resume
        self.checkpoint = Checkpoint(Path(checkpoint_file), program, config) if checkpoint_file else None
        self.best_model_file = Path(best_model_file) if best_model_file else None
        paths = [self.checkpoint.path] if self.checkpoint is not None else []
        if self.best_model_file is not None:
            paths.append(self.best_model_file)
        self._lock = RunLock(paths)
        self._lock.acquire()
        try:
            if self.checkpoint is not None:
                self.checkpoint.check_start(resume, discard_checkpoint)
        except BaseException:
            self._lock.release()
            raise

    def save_best_model(self, params: Sequence) -> None:
        """Save ``params`` to ``best_model_file`` (:func:`save_best_model`); the run must have one."""
        assert self.best_model_file is not None, "this run has no best_model_file"
        save_best_model(self.best_model_file, self.program, self.config, params)

    def release(self) -> None:
        """Release the locks on the run's files."""
        self._lock.release()
