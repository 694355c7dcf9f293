"""The study file: the TOML it is written in, checked against the program's function, and its trials."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from deeplearning_tutorial.programs import PROGRAMS, Program

# Arguments that make a call train nothing, so that no trial could be ranked: why, for the message.
NOT_TRAINING = {"summary": "only prints the table of layers and trains nothing; a study cannot rank it"}

MAX_TRIALS = 10_000
"""The most trials a study may have: a grid is counted, not expanded, when its file is read."""
MAX_STUDY_BYTES = 2**20
"""The largest study file read."""


# --------------------------------------------------------------------------
# The study file
# --------------------------------------------------------------------------


class StudyError(ValueError):
    """A study that cannot be run (its file, or the folder its results go to), with what to change."""


DISTRIBUTIONS = ("uniform", "log_uniform", "int_uniform", "choice")
_STUDY_KEYS = {"name", "program", "floatX", "include_default", "fixed", "grid", "random"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass
class Study:
    """A parsed and checked study file (see the module docstring for the format)."""

    name: str
    program: Program
    defaults: dict[str, Any]  # the tutorial function's tunable arguments and their defaults
    fixed: dict[str, Any]
    grid: list[dict[str, list]] | None = None  # one or more grids: their trials' union
    random: dict[str, tuple[str, list]] | None = None  # argument -> (distribution, its list)
    n_trials: int = 0
    seed: int = 0
    floatX: str | None = None
    include_default: bool = False

    @property
    def searched(self) -> list[str]:
        """The arguments the study varies, in the file's order."""
        tables = self.grid if self.grid is not None else [self.random or {}]
        return list(dict.fromkeys(argument for table in tables for argument in table))


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of a study: the full arguments of the call and the searched ones."""

    id: str
    arguments: dict[str, Any]
    searched: dict[str, Any]


def load_study(path: Path | str, base_dir: Path | str | None = None) -> Study:
    """Read and check a study file; nothing is run.

    Parameters
    ----------
    path : Path or str
        The TOML study file.
    base_dir : Path or str, optional
        Folder that a relative dataset path is relative to (default: the
        current folder, as for the standalone programs).

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        For a file that cannot be read (missing, a folder, a symbolic link
        that loops, no permission, larger than :data:`MAX_STUDY_BYTES`, not
        UTF-8) or is not TOML, and for what :func:`parse_study` refuses.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_STUDY_BYTES + 1)
    except FileNotFoundError:
        raise StudyError(f"no study file {path}") from None
    except IsADirectoryError:
        raise StudyError(f"{path} is a folder, not a study file; give the path of a .toml file") from None
    except PermissionError:
        raise StudyError(f"cannot read {path}: permission denied; make it readable (chmod u+r {path})") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StudyError(f"{path} is a symbolic link that loops; point it at the study file "
                             f"(see `ls -l {path}`)") from None
        raise StudyError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(content) > MAX_STUDY_BYTES:
        raise StudyError(f"{path} has more than {MAX_STUDY_BYTES} bytes; a study file is a few lines of TOML")
    try:
        document = tomllib.loads(content.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path} is not UTF-8 text (byte {exc.start} is {content[exc.start]:#04x}); "
                         f"save it as UTF-8, as TOML requires") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path} is not valid TOML: {exc}") from None
    return parse_study(document, source=str(path), base_dir=base_dir)


def parse_study(document: dict, source: str = "study", base_dir: Path | str | None = None) -> Study:
    """Check a study already read from TOML (``document``); see :func:`load_study`.

    Parameters
    ----------
    document : dict
        The study's TOML tables, as ``tomllib`` reads them.
    source : str
        What the messages name as the study (the file's path).
    base_dir : Path or str, optional
        As in :func:`load_study`.

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        For an unknown key, program or argument, a missing name or program,
        a name that is not a plain folder name, an invalid ``floatX`` or
        ``include_default``, a ``[fixed]``, ``[grid]`` or ``[random]`` that
        is not a table, both or neither of ``[grid]`` and ``[random]``, an
        argument both fixed and searched, a value of the wrong type, an
        empty grid, an invalid distribution or ``n_trials``/``seed``, more
        than :data:`MAX_TRIALS` trials, or a program whose module is not
        installed.
    """
    def fail(message: str) -> StudyError:
        return StudyError(f"{source}: {message}")

    unknown = set(document) - _STUDY_KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; a study has {sorted(_STUDY_KEYS)}")
    for key in ("name", "program"):
        if not isinstance(document.get(key), str):
            raise fail(f'{key!r} must be given as a string, e.g. {key} = "..."')
    name = document["name"]
    if not _NAME.fullmatch(name):
        raise fail(f"name {name!r} must be a plain folder name (letters, digits, '_', '-', '.')")
    if document["program"] not in PROGRAMS:
        raise fail(f"unknown program {document['program']!r}; choose one of {sorted(PROGRAMS)}")
    program = PROGRAMS[document["program"]]
    floatX = document.get("floatX")
    if floatX not in (None, "float32", "float64"):
        raise fail(f'floatX must be "float32" or "float64", got {floatX!r}')
    include_default = document.get("include_default", False)
    if not isinstance(include_default, bool):
        raise fail(f"include_default must be true or false, got {include_default!r}")
    defaults = program.defaults()

    grids = document.get("grid", {})
    grids = grids if isinstance(grids, list) else [grids]
    tables = {}
    for table in ("fixed", "grid", "random"):
        values = grids if table == "grid" else [document.get(table, {})]
        if not all(isinstance(value, dict) for value in values):
            raise fail(f"[{table}] must be a table of arguments" + (" (or [[grid]] tables)" if table == "grid" else ""))
        tables[table] = {argument: None for value in values for argument in value} if table == "grid" else values[0]
    random_options = {key: tables["random"].pop(key) for key in ("n_trials", "seed") if key in tables["random"]}
    if "grid" in document and "random" in document:
        raise fail("give either [grid] or [random], not both")
    if "grid" not in document and "random" not in document:
        raise fail("nothing to search: add a [grid] table (every combination) or a [random] one")
    for table, arguments in tables.items():
        for argument in arguments:
            _check_argument_name(argument, defaults, program, f"[{table}]", fail)
    both = set(tables["fixed"]) & (set(tables["grid"]) | set(tables["random"]))
    if both:
        raise fail(f"{sorted(both)} both fixed and searched; keep each argument in one table")

    fixed = {argument: _checked_value(value, defaults[argument], f"fixed.{argument}", fail)
             for argument, value in tables["fixed"].items()}
    fixed = _absolute_dataset(fixed, program, base_dir)
    study = Study(name=name, program=program, defaults=defaults, fixed=fixed, floatX=floatX,
                  include_default=include_default)
    if "grid" in document:
        study.grid = [_checked_grid(grid, defaults, fail) for grid in grids or [{}]]
        n_trials = sum(math.prod(len(values) for values in grid.values()) for grid in study.grid)
        if n_trials > MAX_TRIALS:
            raise fail(f"the study has {n_trials} trials, more than {MAX_TRIALS}; search fewer values, "
                       f"or split it into several studies")
    else:
        study.n_trials = random_options.get("n_trials")  # type: ignore[assignment]  # checked just below
        study.seed = random_options.get("seed", 0)  # type: ignore[assignment]
        for option, value, high in (("n_trials", study.n_trials, MAX_TRIALS), ("seed", study.seed, None)):
            low = int(option == "n_trials")
            if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
                raise fail(f"random.{option} must be an integer >= {low}"
                           + (f" and at most {high}" if high else "") + f", got {value!r}")
        study.random = _checked_random(tables["random"], defaults, fail)
    return study


def _check_argument_name(argument, defaults, program, where, fail) -> None:
    if argument in NOT_TRAINING:
        raise fail(f"{where} {argument!r} {NOT_TRAINING[argument]}")
    if argument not in defaults:
        raise fail(f"{where} {argument!r} is not an argument of {program.qualified_name}; "
                   f"it takes {sorted(defaults)}")


def _checked_value(value: Any, default: Any, where: str, fail) -> Any:
    """``value`` converted to the type of ``default`` (int -> float), or a StudyError."""
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise fail(f"{where} must be a finite number, got {value}")
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, (list, tuple)):
        if isinstance(value, list):
            if not default:
                return value
            return [_checked_value(item, default[0], f"{where}[{i}]", fail) for i, item in enumerate(value)]
    else:
        raise fail(f"{where}: arguments of type {type(default).__name__} cannot be set from a study")
    expected = _type_name(default)
    raise fail(f"{where} must be {expected} (like the default {toml_value(default)}), got {toml_value(value)}")


def _type_name(default: Any, plural: bool = False) -> str:
    """What a value like ``default`` is, in words: "an integer", "a list of integers"."""
    if isinstance(default, (list, tuple)):
        name = f"list of {_type_name(default[0], plural=True)}" if default else "list"
        return name + "s" if plural else "a " + name
    singular, several = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
                         float: ("a number", "numbers"), str: ("a string", "strings")}[type(default)]
    return several if plural else singular


def toml_value(value: Any) -> str:
    """A study value as a study file writes it (tuples as lists)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def describe_arguments(arguments: dict) -> str:
    """``name=value`` pairs, as a study file writes the values, for lines and labels."""
    return " ".join(f"{name}={toml_value(value)}" for name, value in arguments.items())


def _checked_grid(grid: dict, defaults: dict, fail) -> dict[str, list]:
    if not grid:
        raise fail("[grid] is empty: give each searched argument a list of values, "
                   "e.g. learning_rate = [0.05, 0.1]")
    checked = {}
    for argument, values in grid.items():
        if not isinstance(values, list) or not values:
            example = "[[20, 50], [10, 25]]" if isinstance(defaults[argument], (list, tuple)) else "[a, b]"
            raise fail(f"grid.{argument} must be a non-empty list of the values to try, e.g. "
                       f"{argument} = {example}; got {toml_value(values)}")
        checked[argument] = [_checked_value(value, defaults[argument], f"grid.{argument}[{i}]", fail)
                             for i, value in enumerate(values)]
    return checked


def _checked_random(space: dict, defaults: dict, fail) -> dict[str, tuple[str, list]]:
    if not space:
        raise fail("[random] has no arguments: give each a distribution, "
                   "e.g. learning_rate = {log_uniform = [0.01, 0.3]}")
    checked = {}
    for argument, spec in space.items():
        where = f"random.{argument}"
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise fail(f"{where} must be one distribution, {{uniform|log_uniform|int_uniform|choice = [...]}}, "
                       f"got {toml_value(spec)}")
        (kind, values), = spec.items()
        default = defaults[argument]
        if not isinstance(values, list) or not values:
            raise fail(f"{where}.{kind} must be a non-empty list")
        if kind == "choice":
            checked[argument] = (kind, [_checked_value(v, default, f"{where}.choice[{i}]", fail)
                                        for i, v in enumerate(values)])
            continue
        wanted = int if kind == "int_uniform" else float
        if default is not None and type(default) is not wanted:
            raise fail(f"{where}: {kind} draws {_type_name(wanted(), plural=True)}, "
                       f"but {argument} takes {_type_name(default)}")
        if (len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                or (wanted is int and not all(isinstance(v, int) for v in values))):
            raise fail(f"{where}.{kind} must be [low, high], two {_type_name(wanted(), plural=True)}; "
                       f"got {toml_value(values)}")
        low, high = values
        if not low < high or (kind == "log_uniform" and low <= 0):
            raise fail(f"{where}.{kind} needs low < high" + (" and low > 0" if kind == "log_uniform" else "")
                       + f", got {toml_value(values)}")
        checked[argument] = (kind, [wanted(low), wanted(high)])
    return checked


def _absolute_dataset(arguments: dict, program: Program, base_dir) -> dict:
    """A relative dataset path made absolute; a bare name stays (it is looked up in ``data/``)."""
    dataset = arguments.get(program.dataset_argument)
    if isinstance(dataset, str) and Path(dataset).parent != Path("."):
        path = Path(dataset).expanduser()
        if not path.is_absolute():
            path = Path(base_dir or os.getcwd()) / path
        arguments = {**arguments, program.dataset_argument: str(path)}
    return arguments


def expand_trials(study: Study) -> list[Trial]:
    """The study's trials, in a fixed order: each grid's combinations, or the random sample.

    A random sample is drawn with NumPy's generator from ``seed``, so the
    same file always gives the same trials (which is what lets ``--resume``
    find them again).  Repeated draws are kept once.  With
    ``include_default = true`` the tutorial's defaults for the searched
    arguments are added first if they are not among the trials already.
    """
    if study.grid is not None:
        # arguments a grid does not vary are set to their defaults, so that a
        # combination that two grids share is one trial
        default = default_point(study)
        combinations = [{**default, **dict(zip(grid, values))}
                        for grid in study.grid for values in itertools.product(*grid.values())]
    else:
        assert study.random is not None
        combinations = _random_sample(study.random, study.n_trials, study.seed)
    if study.include_default:
        combinations.insert(0, default_point(study))
    trials, seen = [], set()
    for searched in combinations:
        arguments = _absolute_dataset({**study.fixed, **searched}, study.program, None)
        trial_id = _trial_id(study.program.name, arguments, study.floatX)
        if trial_id not in seen:
            seen.add(trial_id)
            trials.append(Trial(trial_id, arguments, searched))
    return trials


def default_point(study: Study) -> dict[str, Any]:
    """The searched arguments at the tutorial's defaults."""
    return {argument: _plain(study.defaults[argument]) for argument in study.searched}


def _plain(value: Any) -> Any:
    """Tuples as lists, as TOML and JSON give them back."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _random_sample(space: dict[str, tuple[str, list]], n_trials: int, seed: int) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(seed)
    sample = []
    for _ in range(n_trials):
        point = {}
        for argument, (kind, values) in space.items():
            if kind == "choice":
                point[argument] = values[int(rng.integers(len(values)))]
            elif kind == "int_uniform":
                point[argument] = int(rng.integers(values[0], values[1], endpoint=True))
            elif kind == "uniform":
                point[argument] = float(rng.uniform(values[0], values[1]))
            else:
                point[argument] = float(math.exp(rng.uniform(math.log(values[0]), math.log(values[1]))))
        sample.append(point)
    return sample


def _trial_id(program: str, arguments: dict, floatX: str | None) -> str:
    key = json.dumps({"program": program, "arguments": arguments, "floatX": floatX}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]
