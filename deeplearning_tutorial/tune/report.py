"""The report of a study: ``summary.md`` ranking the trials, and its two plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deeplearning_tutorial.files import atomic_write
from deeplearning_tutorial.tune.study import Study, default_point, describe_arguments, toml_value
from deeplearning_tutorial.utils import save_figure

# --------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------


def write_report(study: Study, records: dict[str, dict], out_dir: Path | str) -> list[Path]:
    """Write ``summary.md`` and, where matplotlib is installed, the two plots.

    Parameters
    ----------
    study : Study
    records : dict
        The study's trial records by id (:attr:`StudyOutcome.records`).
    out_dir : Path or str
        The folder that holds the study's folder.

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(out_dir) / study.name
    summary = folder / "summary.md"
    with atomic_write(summary, "w") as handle:
        handle.write(summary_markdown(study, list(records.values())))
    written = [summary]
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[plot]')", file=sys.stderr)
        return written
    matplotlib.use("Agg")
    done = [r for r in records.values() if r["status"] == "done"]
    if done:
        written += [_plot_by_argument(study, done, folder / "validation_by_argument.png"),
                    _plot_learning_curves(done, folder / "learning_curves.png")]
    return written


def _ranked(records: list[dict]) -> list[dict]:
    return sorted((r for r in records if r["status"] == "done"), key=lambda r: (r["validation"], r["test"]))


def summary_markdown(study: Study, records: list[dict]) -> str:
    """The study's summary: trials ranked by validation error, the best arguments, the default marked."""
    default = default_point(study)
    searched = study.searched
    ranked = _ranked(records)
    lines = [f"# Study `{study.name}`: {study.program.name}", ""]
    fixed = describe_arguments(study.fixed) or "none"
    lines += [(f"Program `{study.program.qualified_name}`, floatX {study.floatX or 'of the caller'}; "
               f"fixed arguments: {fixed}. {len(ranked)} trials done, "
               f"{sum(r['status'] == 'failed' for r in records)} failed, "
               f"{sum(r['status'] == 'lost' for r in records)} lost."), ""]
    if ranked:
        best = ranked[0]
        lines += [(f"**Best**: {describe_arguments(best['searched'])}: validation {best['validation']:f} %, "
                   f"test {best['test']:f} % (iteration {best['best_iteration']})."), ""]
    default_rows = [r for r in records if r["searched"] == default]
    if not default_rows:
        lines += [(f"The tutorial's default ({describe_arguments(default)}) is not among the trials; "
                   f"`include_default = true` adds it."), ""]
    header = ["rank", *searched, "validation %", "test %", "best iteration", "epochs", "seconds", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, record in enumerate(ranked, 1):
        mark = "**default**" if record["searched"] == default else ""
        cells = [str(rank), *(toml_value(record["searched"][a]) for a in searched),
                 f"{record['validation']:f}", f"{record['test']:f}", str(record["best_iteration"]),
                 str(record["epochs"]), f"{record['seconds']:.1f}", mark]
        lines.append("| " + " | ".join(cells) + " |")
    unfinished = [r for r in records if r["status"] != "done"]
    if unfinished:
        lines += ["", "Not finished:", ""]
        lines += [f"- {describe_arguments(r['searched'])}: {r['status']}: {r['reason']}"
                  + (" (`--resume` runs it again)" if r["status"] == "lost" else "") for r in unfinished]
    if "seed" in searched and len(searched) > 1:
        lines += ["", *_over_seeds(ranked, searched, default)]
    lines += ["", ("Plots: `validation_by_argument.png`, `learning_curves.png`; "
                   "each trial's output in `logs/<id>.log`, its numbers in `trials.jsonl`."), ""]
    return "\n".join(lines)


def _over_seeds(ranked: list[dict], searched: list[str], default: dict) -> list[str]:
    """Mean and standard deviation over seeds of each combination of the other arguments."""
    import numpy as np

    others = [a for a in searched if a != "seed"]
    groups: dict[str, list[dict]] = {}
    for record in ranked:
        groups.setdefault(json.dumps([record["searched"][a] for a in others]), []).append(record)
    rows = []
    for key, group in groups.items():
        valid = np.array([r["validation"] for r in group])
        test = np.array([r["test"] for r in group])
        rows.append((valid.mean(), json.loads(key), valid, test))
    rows.sort(key=lambda row: row[0])
    default_key = [default[a] for a in others]
    lines = ["Over seeds (mean ± sample standard deviation):", "",
             "| " + " | ".join([*others, "seeds", "validation %", "test %", ""]) + " |",
             "|" + "---|" * (len(others) + 4)]
    for _, values, valid, test in rows:
        def spread(a):
            return f"{a.mean():.4f} ± {a.std(ddof=1):.4f}" if len(a) > 1 else f"{a.mean():.4f}"

        lines.append("| " + " | ".join([*(toml_value(v) for v in values), str(len(valid)), spread(valid), spread(test),
                                        "**default**" if values == default_key else ""]) + " |")
    return lines


def _plot_by_argument(study: Study, done: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    searched = study.searched
    default = default_point(study)
    figure, axes = plt.subplots(1, len(searched), figsize=(max(6.0, 4.2 * len(searched)), 3.8), squeeze=False)
    for axis, argument in zip(axes[0], searched):
        values = [r["searched"][argument] for r in done]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            positions = values
        else:
            labels = sorted({toml_value(v) for v in values})
            positions = [labels.index(toml_value(v)) for v in values]
            axis.set_xticks(range(len(labels)), labels, rotation=30)
        errors = [r["validation"] for r in done]
        axis.scatter(positions, errors, alpha=0.7)
        at_default = [i for i, r in enumerate(done) if r["searched"] == default]
        axis.scatter([positions[i] for i in at_default], [errors[i] for i in at_default], s=120,
                     facecolors="none", edgecolors="tab:red", label="the tutorial's default")
        if at_default:
            axis.legend(fontsize="small")
        if numeric and len(set(values)) > 2 and min(values) > 0 and max(values) / min(values) > 20:
            axis.set_xscale("log")
        axis.set_xlabel(argument)
        axis.set_ylabel("best validation error (%)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"{study.name}: best validation error of each trial", fontsize="medium")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)


def _plot_learning_curves(done: list[dict], path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for record in _ranked(done):
        history = record["history"]
        axis.plot([h["iteration"] for h in history], [h["validation"] for h in history],
                  label=describe_arguments(record["searched"]), linewidth=1)
    axis.set_xlabel("iteration (minibatches trained)")
    axis.set_ylabel("validation error (%)")
    axis.grid(alpha=0.3)
    if len(done) <= 12:
        axis.legend(fontsize="small")
    axis.set_title("learning curves of all trials")
    figure.tight_layout()
    return save_figure(figure, path, dpi=110)
