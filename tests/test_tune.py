"""Tuning studies: trials on a Dask LocalCluster equal the standalone programs, nothing is lost."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, run_python
from distributed import Client

from deeplearning_tutorial import datasets, tune

STUDY = """
name = "{name}"
program = "logistic_sgd"
[fixed]
dataset = "{dataset}"
batch_size = 100
{fixed}
[grid]
{grid}
"""


@pytest.fixture(scope="module")
def tiny_mnist(mnist, tmp_path_factory) -> Path:
    """1,000 / 300 / 300 images: ten logistic_sgd minibatches of 100 per epoch."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = mnist
    subset = ((train_x[:1000], train_y[:1000]), (valid_x[:300], valid_y[:300]), (test_x[:300], test_y[:300]))
    return datasets.write_dataset(subset, tmp_path_factory.mktemp("data") / "tiny_mnist.pkl.gz")


@pytest.fixture(scope="module")
def environment_before_the_cluster() -> dict[str, str]:
    return environment()


def environment() -> dict[str, str]:
    """This process's environment, less the variable in which pytest names the running test."""
    return {name: value for name, value in os.environ.items() if name != "PYTEST_CURRENT_TEST"}


@pytest.fixture(scope="module")
def client(environment_before_the_cluster):
    """A LocalCluster of two single-threaded worker processes; a dead worker's trial is not retried."""
    cluster = tune.local_cluster(2, 1, retries=0, dashboard=False)
    with Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def write_study(folder: Path, dataset: Path, name: str, grid: str, fixed: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, dataset=dataset, grid=grid, fixed=fixed))
    return path


@pytest.fixture(scope="module")
def finished_study(client, tiny_mnist, tmp_path_factory):
    """Three trials of two epochs: the default learning rate, a smaller one, one that diverges."""
    folder = tmp_path_factory.mktemp("study")
    study = tune.load_study(write_study(folder, tiny_mnist, "lr", "learning_rate = [0.13, 0.05, 1e308]",
                                        fixed="n_epochs = 2"))
    outcome = tune.run_study(study, client, folder / "out", progress=False)
    return study, outcome, folder / "out" / "lr"


def by_rate(outcome) -> dict[float, dict]:
    return {record["searched"]["learning_rate"]: record for record in outcome.records.values()}


def without_timings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "epochs/sec" not in line and " ran for " not in line]


def test_trials_equal_the_standalone_programs(finished_study, tiny_mnist, tmp_path):
    _, outcome, folder = finished_study
    assert outcome.ran == 3 and not outcome.interrupted
    records = by_rate(outcome)
    assert len({records[0.13]["pid"], records[0.05]["pid"]}) == 2  # one trial in each worker process
    for rate in (0.13, 0.05):
        record = records[rate]
        standalone = run_python(str(REPO / "scripts" / "logistic_sgd.py"), "--dataset", str(tiny_mnist),
                                "--n-epochs", "2", "--batch-size", "100", "--learning-rate", str(rate), cwd=tmp_path,
                                env=tune.worker_environment(1))
        assert standalone.returncode == 0, standalone.stderr
        log = (folder / record["log"]).read_text()
        assert without_timings(log) == without_timings(standalone.stdout)
        final = re.search(r"best validation score of ([\d.]+) %,with test performance ([\d.]+) %", standalone.stdout)
        assert (f"{record['validation']:f}", f"{record['test']:f}") == final.groups()
        printed = re.findall(r"validation error ([\d.]+) %", standalone.stdout)
        assert [f"{h['validation']:f}" for h in record["history"]] == printed
        assert record["status"] == "done" and record["epochs"] == 2 and record["threads"] == 1
        assert record["best_iteration"] == 20 and record["params"]["learning_rate"] == rate


def test_a_diverging_trial_is_recorded_as_failed(finished_study):
    _, outcome, folder = finished_study
    record = by_rate(outcome)[1e308]
    assert record["status"] == "failed"
    assert record["reason"].startswith("DivergenceError: the training cost became nan")
    assert "DivergenceError" in (folder / record["log"]).read_text()  # the traceback is in the log


def test_resume_reruns_nothing(finished_study, client):
    study, _, folder = finished_study
    before = (folder / "trials.jsonl").read_text()
    assert len(before.splitlines()) == 3
    with pytest.raises(FileExistsError, match="--resume"):
        tune.run_study(study, client, folder.parent, progress=False)
    again = tune.run_study(study, client, folder.parent, resume=True, progress=False)
    assert again.ran == 0 and (folder / "trials.jsonl").read_text() == before
    assert [r["status"] for r in again.records.values()].count("done") == 2


def test_summary_ranks_trials_and_marks_the_default(finished_study):
    study, outcome, folder = finished_study
    written = tune.write_report(study, outcome.records, folder.parent)
    summary = (folder / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if re.match(r"\| \d", line)]
    records = by_rate(outcome)
    assert rows[0].startswith(f"| 1 | 0.13 | {records[0.13]['validation']:f} |")
    assert rows[0].endswith("**default** |") and "default" not in rows[1]
    assert rows[1].startswith("| 2 | 0.05 |") and len(rows) == 2
    assert "learning_rate=1e+308: failed: DivergenceError" in summary
    pytest.importorskip("matplotlib")
    assert {p.name for p in written} == {"summary.md", "validation_by_argument.png", "learning_curves.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written if p.suffix == ".png")


def test_a_killed_worker_costs_only_its_trial(client, tiny_mnist, tmp_path):
    # the victim trains for at least 5,000 minibatches (its patience), the other for ten
    study = tune.load_study(write_study(tmp_path, tiny_mnist, "kill", "n_epochs = [1000, 1]"))
    victim, bystander = tune.expand_trials(study)
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(target=lambda: result.update(outcome=tune.run_study(study, client, out, progress=False)))
    runner.start()
    victim_log = out / "kill" / "logs" / f"{victim.id}.running.log"
    deadline = time.monotonic() + 300
    while not (victim_log.exists() and "training the model" in victim_log.read_text()):
        assert time.monotonic() < deadline and runner.is_alive(), "the victim trial never started training"
        time.sleep(0.01)
    worker = next(address for address, keys in client.processing().items()
                  if any(key.startswith(f"trial-{victim.id}-") for key in keys))
    os.kill(client.run(os.getpid)[worker], signal.SIGKILL)
    runner.join(timeout=300)
    records = result["outcome"].records
    assert records[victim.id]["status"] == "lost", "the victim finished before it was killed"
    assert "KilledWorker" in records[victim.id]["reason"]
    assert records[bystander.id]["status"] == "done" and records[bystander.id]["epochs"] == 1

    resumed = tune.run_study(study, client, out, resume=True, progress=False)
    assert resumed.ran == 1 and resumed.records[victim.id]["status"] == "done"
    assert resumed.records[bystander.id] == records[bystander.id]
    lines = [json.loads(line) for line in (out / "kill" / "trials.jsonl").read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in lines][-1] == (victim.id, "done") and len(lines) == 3
    logs = sorted(p.name for p in (out / "kill" / "logs").iterdir())
    assert logs == sorted(f"{t.id}.log" for t in (victim, bystander))


def test_the_cluster_sets_the_workers_environment_not_the_callers(client, environment_before_the_cluster):
    # after test_a_killed_worker_costs_only_its_trial: its worker's restart may still be under way
    deadline = time.monotonic() + 60
    client.wait_for_workers(2, timeout=60)
    while tune.cluster._environment_keeping_nanny().starting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert environment() == environment_before_the_cluster  # the restarted worker left nothing either
    # a thread count other than the test worker's own and Dask's default, whatever the caller's environment says
    with tune.local_cluster(1, 3, dashboard=False) as cluster, Client(cluster) as three_threads:
        worker_environment = next(iter(three_threads.run(lambda: dict(os.environ)).values()))
        assert worker_environment.items() >= tune.worker_environment(3).items()
        assert "MALLOC_TRIM_THRESHOLD_" not in worker_environment  # Dask's, which keep_freed_memory respects
    assert environment() == environment_before_the_cluster


def study_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(tune.StudyError) as error:
        tune.load_study(path)
    return str(error.value)


HEADER = 'name = "bad"\nprogram = "logistic_sgd"\n'


@pytest.mark.parametrize("body, message", [
    ('name = "x"\nprogram = "svm"\n[grid]\nC = [1]\n', "unknown program 'svm'; choose one of"),
    (HEADER + "[grid]\nlearnin_rate = [0.1]\n", "[grid] 'learnin_rate' is not an argument of"),
    (HEADER + '[fixed]\nn_epochs = "ten"\n[grid]\nbatch_size = [100]\n',
     'fixed.n_epochs must be an integer (like the default 1000), got "ten"'),
    (HEADER + "[grid]\nn_epochs = [1, 2.5]\n", "grid.n_epochs[1] must be an integer"),
    (HEADER + "[grid]\nn_epochs = [true]\n", "grid.n_epochs[0] must be an integer"),
    (HEADER + "[grid]\n", "[grid] is empty"),
    (HEADER + "[grid]\nbatch_size = []\n", "grid.batch_size must be a non-empty list"),
    (HEADER + "[grid]\nbatch_size = 100\n", "grid.batch_size must be a non-empty list"),
    (HEADER + "[fixed]\nn_epochs = 1\n", "nothing to search"),
    (HEADER + "[grid]\nbatch_size = [1]\n[random]\nn_trials = 2\n", "either [grid] or [random]"),
    (HEADER + "[fixed]\nbatch_size = 1\n[grid]\nbatch_size = [2]\n", "both fixed and searched"),
    (HEADER + "[grid]\nresume = [true]\n", "is not an argument of deeplearning_tutorial.logistic_sgd"),
    (HEADER + "sampler = 1\n[grid]\nbatch_size = [1]\n", "unknown key(s) ['sampler']"),
    (HEADER + 'floatX = "float16"\n[grid]\nbatch_size = [1]\n', 'floatX must be "float32" or "float64"'),
    ('name = "a/b"\nprogram = "logistic_sgd"\n[grid]\nbatch_size = [1]\n', "plain folder name"),
    (HEADER + "[random]\nlearning_rate = {log_uniform = [0.0, 1.0]}\n", "random.n_trials must be an integer >= 1"),
    (HEADER + "[random]\nn_trials = 3\nlearning_rate = {log_uniform = [0.0, 1.0]}\n", "needs low < high and low > 0"),
    (HEADER + "[random]\nn_trials = 3\nlearning_rate = {normal = [0, 1]}\n", "must be one distribution"),
    (HEADER + "[random]\nn_trials = 3\nbatch_size = {uniform = [10, 100]}\n",
     "uniform draws numbers, but batch_size takes an integer"),
    (HEADER + "[random]\nn_trials = 3\nbatch_size = {int_uniform = [10.5, 100]}\n", "must be [low, high]"),
    ('name = "x"\nprogram = "convolutional_mlp"\n[grid]\nnkerns = [20, 50]\n',
     "grid.nkerns[0] must be a list of integers (like the default [20, 50]), got 20"),
    ("name = ", "is not valid TOML"),
])
def test_bad_study_files_are_refused_with_a_clear_message(tmp_path, body, message):
    assert message in study_error(tmp_path, body)


def test_the_command_line_refuses_a_bad_study_before_starting_a_cluster(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(HEADER + "[grid]\nlearnin_rate = [0.1]\n")
    assert tune.main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "is not an argument of deeplearning_tutorial.logistic_sgd" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grid_and_random_trials(tmp_path):
    grid = tune.load_study(write_study(tmp_path, Path("data/x.pkl.gz"), "g",
                                       "learning_rate = [1, 0.5]\nn_epochs = [1, 2, 3]"), base_dir="/base")
    trials = tune.expand_trials(grid)
    assert [t.searched for t in trials] == [{"learning_rate": lr, "n_epochs": n}
                                           for lr in (1.0, 0.5) for n in (1, 2, 3)]
    assert all(type(t.arguments["learning_rate"]) is float for t in trials)  # as the command line gives
    assert trials[0].arguments["dataset"] == "/base/data/x.pkl.gz" and len({t.id for t in trials}) == 6

    path = tmp_path / "union.toml"
    path.write_text(HEADER + "[[grid]]\nlearning_rate = [0.1, 0.13]\n[[grid]]\nbatch_size = [600, 20]\n"
                    "n_epochs = [5]\n[[grid]]\nbatch_size = [600]\n")
    union = tune.load_study(path)
    assert union.searched == ["learning_rate", "batch_size", "n_epochs"]
    assert [tuple(t.searched.values()) for t in tune.expand_trials(union)] == [
        (0.1, 600, 1000), (0.13, 600, 1000), (0.13, 600, 5), (0.13, 20, 5)]  # the default once
    assert "[grid] is empty" in study_error(tmp_path, HEADER + "grid = []\n")

    path = tmp_path / "r.toml"
    path.write_text(HEADER + "include_default = true\n[random]\nn_trials = 40\nseed = 3\n"
                    "learning_rate = {log_uniform = [0.01, 0.3]}\nbatch_size = {int_uniform = [10, 12]}\n"
                    "n_epochs = {choice = [1, 2]}\n")
    trials = tune.expand_trials(tune.load_study(path))
    assert trials == tune.expand_trials(tune.load_study(path))  # the same seed, the same trials
    assert trials[0].searched == {"learning_rate": 0.13, "batch_size": 600, "n_epochs": 1000}
    sample = [t.searched for t in trials[1:]]
    assert len(sample) == 40 and all(0.01 <= s["learning_rate"] <= 0.3 for s in sample)
    assert {s["batch_size"] for s in sample} == {10, 11, 12} and {s["n_epochs"] for s in sample} == {1, 2}
    assert all(type(s["batch_size"]) is int for s in sample)


def test_a_study_runs_from_the_command_line_with_its_report(tiny_mnist, tmp_path):
    path = write_study(tmp_path, tiny_mnist, "cli", "batch_size = [100]", fixed="n_epochs = 1")
    path.write_text(path.read_text().replace("batch_size = 100\n", ""))
    completed = run_python(str(REPO / "scripts" / "tune.py"), str(path), "--workers", "1", "--out", "out",
                           cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert re.search(r"Dask cluster tcp://\S+: 1 workers; dashboard http://\S+", completed.stdout)
    assert "study cli: 1 trial(s) of logistic_sgd, 0 already finished, 1 to run" in completed.stdout
    record = json.loads((tmp_path / "out" / "cli" / "trials.jsonl").read_text())
    assert record["status"] == "done" and record["floatX"] in ("float32", "float64")
    assert "**default**" not in (tmp_path / "out" / "cli" / "summary.md").read_text()


def test_the_quick_example_study_loads():
    study = tune.load_study(REPO / "studies" / "logistic_sgd_lr_batch.toml")
    assert len(tune.expand_trials(study)) == 6 and study.floatX == "float64"


def test_the_progress_bar_counts_a_trial_lost_now_and_not_one_lost_before_a_resume():
    earlier = {"a": {"status": "lost"}, "b": {"status": "failed"}}  # --resume runs "a" again
    bar = tune.cluster._ProgressBar(total=3, records=earlier, ids=["a", "b", "c"], enabled=False)
    assert (bar.done, bar.failed) == (0, 1)
    bar.finished({"status": "lost"})
    bar.finished({"status": "done", "validation": 0.05})
    assert (bar.done, bar.failed, bar.best) == (1, 2, 0.05)
