"""The files a training run writes: checkpoints and best models, claimed for a run by :class:`RunFiles`.

Checkpoints and best models are NumPy ``.npz`` archives of plain arrays: the
parameters, plus one string holding a JSON description (what the file is,
which program wrote it, the run's arguments, the loop state).  They are read
with ``allow_pickle=False``, so a file can hold numbers and text but never
code: a foreign or tampered file is refused with a message, and nothing in
it runs.  A best model is rebuilt from its recorded arguments by the
tutorial's own code, then given the saved parameters
(:func:`deeplearning_tutorial.programs.load_best_model`).

While a run is going, each file it writes is locked
(:class:`~deeplearning_tutorial.files.RunLock`), so that a second run in the
same folder stops at once instead of overwriting the first one's files.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deeplearning_tutorial.files import RunFileError, RunLock, atomic_write
from deeplearning_tutorial.training import ACTIVE_RUN_FILES, LoopState
from deeplearning_tutorial.validation import check_images

FORMAT = "deeplearning_tutorial"
VERSION = 1


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
    except (OSError, ValueError, KeyError, TypeError, EOFError, RecursionError, zipfile.BadZipFile) as exc:
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

    def save(self, state: LoopState, params: Sequence, finished: bool = False, data_sha256: str | None = None) -> None:
        """Write the loop state and the values of ``params`` to the checkpoint, atomically.

        Parameters
        ----------
        state
            The patience loop's variables.
        params
            The shared variables training changes: the parameters, and the
            random generators of a model that draws while it trains (saved as
            their generator's state), so that a resumed run draws on exactly
            as the interrupted one would have.
        finished
            Whether the run completed (a finished checkpoint may be replaced
            by a new run; an interrupted one only with ``discard``).
        data_sha256
            The fingerprint of the data the run uses
            (:func:`~deeplearning_tutorial.training.data_sha256`), which a resume must match.

        Raises
        ------
        RunFileError
            When the file cannot be written; the earlier checkpoint is left as it was.
        """
        values = [p.get_value(borrow=True) for p in params]
        generators = {str(i): v.bit_generator.state for i, v in enumerate(values) if isinstance(v, np.random.Generator)}
        write_archive(self.path, {"kind": "checkpoint", "program": self.program, "config": self.config,
                                  "state": dataclasses.asdict(state), "finished": finished,
                                  "data_sha256": data_sha256, "generators": generators},
                      [v for v in values if not isinstance(v, np.random.Generator)])

    def load(self, params: Sequence, n_train_batches: int, data_sha256: str | None = None) -> LoopState:
        """Give ``params`` the saved values and return the saved loop state.

        Parameters
        ----------
        params
            The shared variables training changes, in the order they were saved.
        n_train_batches
            The minibatches of this run's training set: the saved position must be one of them.
        data_sha256
            The fingerprint of this run's data: it must be the interrupted run's.

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
            holds parameters of other shapes or dtypes, has a damaged loop
            state, was written with other data, or stopped at a minibatch
            this training set does not have.
        """
        description, arrays = read_archive(self.path, "checkpoint")
        self._check_same_run(description)
        if description.get("data_sha256") != data_sha256:
            raise RunFileError(f"{self.path} was written by a run on other data than this run's (the dataset "
                               f"file changed since): resume with the data of the interrupted run, or start "
                               f"over with --discard-checkpoint")
        state = _loop_state(self.path, description.get("state"))
        values = [p.get_value(borrow=True) for p in params]
        generators = description.get("generators")
        is_generator = [isinstance(v, np.random.Generator) for v in values]
        wanted = {str(i) for i, g in enumerate(is_generator) if g}
        if not isinstance(generators, dict) or set(generators) != wanted:
            raise RunFileError(f"{self.path} does not hold the state of this model's random generators: it was "
                               f"not written for this model (or it was altered)")
        check_arrays(self.path, arrays, [v for v, g in zip(values, is_generator) if not g])
        if state.next_minibatch >= n_train_batches:
            raise RunFileError(f"{self.path} stopped at minibatch {state.next_minibatch + 1} of an epoch, but "
                               f"this training set has {n_train_batches} minibatches: the data are not those "
                               f"of the interrupted run. Resume with its data, or start over with "
                               f"--discard-checkpoint")
        saved = iter(arrays)
        for i, (param, value) in enumerate(zip(params, values)):
            if isinstance(value, np.random.Generator):
                generator = copy.deepcopy(value)
                try:
                    generator.bit_generator.state = generators[str(i)]
                except (TypeError, ValueError, KeyError) as exc:
                    raise RunFileError(f"{self.path} holds a damaged random generator state ({exc}); it cannot "
                                       f"be resumed: start over with --discard-checkpoint") from None
                param.set_value(generator, borrow=True)
            else:
                param.set_value(next(saved))
        state.stopped_by = None
        return state


def _progress(state: dict) -> str:
    best = state.get("best_validation_loss")
    best = f"best validation {best * 100.0:f} %" if isinstance(best, float) and best < 1e300 else "no validation yet"
    return f"stopped in epoch {state.get('epoch')}, {best}"


def check_arrays(path: Path, arrays: list[np.ndarray], expected: list[np.ndarray]) -> None:
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


# --------------------------------------------------------------------------
# The files of one run
# --------------------------------------------------------------------------


class RunFiles:
    """The files a run of ``program`` writes, claimed for the length of a ``with`` block.

    Entering the block locks the checkpoint and best-model files against other
    runs, checks the checkpoint (a resume needs one of the same arguments; a
    new run refuses to overwrite an interrupted one unless
    ``discard_checkpoint``) and makes these the files of the training run
    inside the block: :func:`~deeplearning_tutorial.training.train` saves
    its checkpoints and best models to them.
    Leaving the block, however it is left, releases the locks.  A tutorial
    called outside such a block writes none of these files, as the original
    programs did not::

        with RunFiles("mlp", config, "mlp.ckpt", "best_model_mlp.npz", resume=True) as files:
            state = test_mlp(**arguments)
            files.write_history({"arguments": arguments, **run_record(state)})

    Parameters
    ----------
    program
        The tutorial's name in :data:`~deeplearning_tutorial.programs.PROGRAMS`,
        recorded in the files.
    config
        The run's arguments (and floatX), recorded in the files (paths as
        strings, tuples as lists); a resume must match them.
    checkpoint_file, best_model_file, history_file
        Paths, or None for no such file.  The history file (the learning
        curve and result as JSON) is written by :meth:`write_history`; on
        entering the block it holds the arguments and ``"running": true``.
    resume
        Continue the run saved in ``checkpoint_file``.
    discard_checkpoint
        Start over even if ``checkpoint_file`` holds an interrupted run (it is overwritten).

    Raises
    ------
    RunFileError
        When ``resume`` is asked without a ``checkpoint_file`` or together
        with ``discard_checkpoint``, two of the files are the same file, or an
        output cannot be written there (a folder, a read-only file or
        folder); on entering the block, when another run is writing these
        files, the folder is not writable, or the checkpoint forbids this
        start (see :meth:`Checkpoint.check_start`).
    """

    def __init__(self, program: str, config: dict, checkpoint_file: str | os.PathLike | None = None,
                 best_model_file: str | os.PathLike | None = None,
                 history_file: str | os.PathLike | None = None, *, resume: bool = False,
                 discard_checkpoint: bool = False) -> None:
        if resume and checkpoint_file is None:
            raise RunFileError("resume needs a checkpoint file: pass checkpoint_file")
        if resume and discard_checkpoint:
            raise RunFileError("--resume continues the checkpoint and --discard-checkpoint overwrites it: "
                               "choose one")
        # as the files record it: JSON data, paths as strings, tuples as lists
        config = json.loads(json.dumps(config, default=lambda value: os.fspath(value)))
        self.program, self.config, self.resume = program, config, resume
        self.discard_checkpoint = discard_checkpoint
        self.checkpoint = Checkpoint(Path(checkpoint_file), program, config) if checkpoint_file else None
        self.best_model_file = Path(best_model_file) if best_model_file else None
        self.history_file = Path(history_file) if history_file else None
        outputs = {"checkpoint file": self.checkpoint.path if self.checkpoint is not None else None,
                   "best model file": self.best_model_file, "history file": self.history_file}
        _check_outputs({name: path for name, path in outputs.items() if path is not None})
        paths = [self.checkpoint.path] if self.checkpoint is not None else []
        if self.best_model_file is not None:
            paths.append(self.best_model_file)
        self._lock = RunLock(paths)
        self._token: contextvars.Token | None = None

    def __enter__(self) -> RunFiles:
        self._lock.acquire()
        try:
            if self.checkpoint is not None:
                self.checkpoint.check_start(self.resume, self.discard_checkpoint)
            # written now, so that a disk that cannot take it stops the run before it starts
            self.write_history({"arguments": self.config, "running": True})
        except BaseException:
            self._lock.release()
            raise
        self._token = ACTIVE_RUN_FILES.set(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            ACTIVE_RUN_FILES.reset(self._token)
            self._token = None
        self._lock.release()

    def save_best_model(self, params: Sequence) -> None:
        """Save ``params`` to ``best_model_file`` (:func:`save_best_model`); the run must have one."""
        assert self.best_model_file is not None, "this run has no best_model_file"
        save_best_model(self.best_model_file, self.program, self.config, params)

    def write_history(self, record: dict) -> None:
        """Write ``record`` as JSON to the history file, atomically (nothing when the run has none).

        Raises
        ------
        RunFileError
            When the file cannot be written; an earlier file is left as it was.
        """
        if self.history_file is None:
            return
        try:
            with atomic_write(self.history_file, "w") as handle:
                json.dump(record, handle, indent=1, allow_nan=False)
        except OSError as exc:
            raise RunFileError(f"could not write the history file {self.history_file}: "
                               f"{exc.strerror or exc}") from None


def _check_outputs(outputs: dict[str, Path]) -> None:
    """Refuse, before a run starts, outputs that are the same file or that cannot be written."""
    seen: dict[str, str] = {}
    for name, path in outputs.items():
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise RunFileError(f"the {name} and the {seen[key]} are the same file ({path}); one would "
                               f"overwrite the other: give them different names")
        seen[key] = name
        if path.is_dir():
            raise RunFileError(f"the {name} {path} is a folder; give the path of a file")
        folder = path.parent if str(path.parent) else Path(".")
        if path.exists() and not os.access(path, os.W_OK):
            raise RunFileError(f"the {name} {path} is read-only; make it writable or choose another name")
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise RunFileError(f"cannot write in {folder.resolve()} (permission denied), so the run could not "
                               f"save its {name} there; run it in a folder you can write to, or give another path")
