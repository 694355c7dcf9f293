"""Tuning studies: trials on a Dask LocalCluster equal the standalone programs, nothing is lost."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
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
    assert re.search(r"Dask cluster tcp://127\.0\.0\.1:\d+: 1 workers; dashboard http://127\.0\.0\.1:\d+/status\n",
                     completed.stdout)
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


# --------------------------------------------------------------------------
# Hard inputs: bounds, locks, unwritable outputs, strict JSON, signals
# --------------------------------------------------------------------------


def test_a_grid_too_large_is_refused_before_it_is_expanded(tmp_path):
    values = ", ".join(str(v) for v in range(1, 1001))
    message = study_error(tmp_path, HEADER + f"[grid]\nn_epochs = [{values}]\nbatch_size = [{values}]\n"
                                             f"learning_rate = [{values}]\n")
    assert message.endswith(f"the study has 1000000000 trials, more than {tune.study.MAX_TRIALS}; "
                            f"search fewer values, or split it into several studies")
    message = study_error(tmp_path, HEADER + "[random]\nn_trials = 1000000000\nbatch_size = {int_uniform = [1, 9]}\n")
    assert f"random.n_trials must be an integer >= 1 and at most {tune.study.MAX_TRIALS}" in message


@pytest.mark.parametrize("body, message", [
    (HEADER + "[grid]\nlearning_rate = [0.1, inf]\n", "grid.learning_rate[1] must be a finite number, got inf"),
    (HEADER + "[fixed]\nlearning_rate = nan\n[grid]\nbatch_size = [1]\n", "fixed.learning_rate must be a finite"),
    ('name = "x"\nprogram = "lenet5"\n[grid]\nsummary = [true]\n',
     "[grid] 'summary' only prints the table of layers and trains nothing"),
])
def test_values_no_trial_can_use_are_refused(tmp_path, body, message):
    assert message in study_error(tmp_path, body)


def test_a_study_file_that_cannot_be_read_is_refused_in_one_line(tmp_path):
    with pytest.raises(tune.StudyError, match=f"^{tmp_path} is a folder, not a study file"):
        tune.load_study(tmp_path)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(HEADER.encode() + b"# \xe9t\xe9\n[grid]\nbatch_size = [1]\n")
    with pytest.raises(tune.StudyError, match="is not UTF-8 text .* save it as UTF-8"):
        tune.load_study(latin1)
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    with pytest.raises(tune.StudyError, match="is a symbolic link that loops"):
        tune.load_study(loop)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(HEADER.encode() + b"#" * tune.study.MAX_STUDY_BYTES)
    with pytest.raises(tune.StudyError, match=f"more than {tune.study.MAX_STUDY_BYTES} bytes"):
        tune.load_study(huge)


def test_an_unreadable_study_file_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "s.toml"
    path.write_text(HEADER + "[grid]\nbatch_size = [1]\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "open", denied)
    with pytest.raises(tune.StudyError, match=f"^cannot read {path}: permission denied"):
        tune.load_study(path)


def quick_study(tmp_path: Path, name: str = "q") -> Path:
    return write_study(tmp_path, Path("data/x.pkl.gz"), name, "learning_rate = [0.1]")


def refused(argv: list, capsys) -> str:
    """Run tune.main, which must stop with status 2 before any cluster starts; its one-line error."""
    started = time.monotonic()
    assert tune.main(argv) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 10 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_outputs_that_cannot_be_written_are_refused_before_the_cluster_starts(tmp_path, capsys, monkeypatch):
    study = quick_study(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert f"cannot create {a_file / 'q' / 'logs'}: not a directory" in refused(
        [str(study), "--out", str(a_file)], capsys)

    def read_only(path):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as patch:  # what root, who may write anywhere, cannot see otherwise
        patch.setattr(tune.cluster, "create_temporary_beside", read_only)
        assert f"cannot write in {tmp_path / 'out' / 'q'}: permission denied" in refused(
            [str(study), "--out", str(tmp_path / "out")], capsys)

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    err = refused([str(study), "--out", str(tmp_path / "out")], capsys)
    assert f"cannot write in {tmp_path / 'out' / 'q'}: no space left on device" in err
    assert sorted(p.name for p in (tmp_path / "out" / "q").iterdir()) == ["logs"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the folder's mode")
def test_a_read_only_out_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    assert "permission denied" in refused([str(quick_study(tmp_path)), "--out", str(out)], capsys)


def test_a_second_tune_on_the_same_study_and_out_is_refused(tmp_path, capsys):
    study = quick_study(tmp_path)
    (tmp_path / "out" / "q").mkdir(parents=True)
    with subprocess.Popen(["sleep", "60"]) as other:  # a live process that holds the study
        (tmp_path / "out" / "q" / "trials.jsonl.lock").write_text(str(other.pid))
        try:
            err = refused([str(study), "--out", str(tmp_path / "out")], capsys)
        finally:
            other.kill()
    assert f"another run (process {other.pid}) is writing {tmp_path / 'out' / 'q' / 'trials.jsonl'}" in err
    assert "another --out" in err and "--checkpoint-file" not in err


@pytest.mark.parametrize("line, message", [
    ('{"status": "done"}', "line 2 is not a trial record (it has no 'id')"),
    ('{"id": "abc", "status": "done", "searched": {}}', "line 2 is not a trial record (it has no 'validation')"),
    ('[' * 200_000 + ']' * 200_000, "line 2 is not JSON"),
    ('{"id": "abc", "status": "done", "validation": Infinity}', "line 2 is not JSON"),
])
def test_a_damaged_trials_file_is_refused_on_resume(tmp_path, capsys, line, message):
    study = quick_study(tmp_path)
    folder = tmp_path / "out" / "q"
    folder.mkdir(parents=True)
    good = {"id": "x", "status": "failed", "reason": "r", "params": {}, "searched": {"learning_rate": 0.1}}
    (folder / "trials.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
    err = refused([str(study), "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert f"{folder / 'trials.jsonl'}, {message}" in err and "fix or remove that line" in err


def test_an_unreachable_scheduler_fails_fast(tmp_path, capsys):
    err = refused([str(quick_study(tmp_path)), "--scheduler", "tcp://127.0.0.1:1", "--out", str(tmp_path)], capsys)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in err


@pytest.mark.parametrize("option", [["--workers", "0"], ["--threads-per-trial", "0"], ["--retries", "-1"]])
def test_impossible_counts_are_refused(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_status:
        tune.main([str(quick_study(tmp_path)), *option])
    assert exit_status.value.code == 2
    assert f"argument {option[0]}: must be an integer >= {int(option[0] != '--retries')}, got {option[1]}" \
        in capsys.readouterr().err


def test_trials_file_is_strict_json_and_reads_back_non_finite_numbers(tmp_path):
    trials = tune.TrialsFile(tmp_path / "trials.jsonl")
    record = {"id": "a", "status": "done", "params": {}, "searched": {}, "validation": math.inf, "test": math.nan,
              "best_iteration": 1, "epochs": 1, "seconds": 1.0,
              "history": [{"iteration": 1, "validation": -math.inf, "test": None}]}
    trials.append(record)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")
    json.loads((tmp_path / "trials.jsonl").read_text(), parse_constant=refuse)
    back = tune.TrialsFile(tmp_path / "trials.jsonl").records()["a"]
    assert back["validation"] == math.inf and math.isnan(back["test"])
    assert back["history"] == [{"iteration": 1, "validation": -math.inf, "test": None}]


def test_the_dashboard_listens_on_localhost_only_and_its_link_is_the_real_address():
    with tune.local_cluster(1, 1, retries=0) as cluster, Client(cluster) as dask_client:
        host, port = cluster.scheduler.http_server.address, cluster.scheduler.http_server.port
        assert host == "127.0.0.1"
        assert tune.cluster.dashboard_link(dask_client) == f"http://127.0.0.1:{port}/status"
        # nothing of the cluster (scheduler, nannies, workers, their HTTP servers) listens beyond this machine
        processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
        listening = {c.laddr for p in processes for c in p.net_connections(kind="inet") if c.status == "LISTEN"}
        assert ("127.0.0.1", port) in listening and {address.ip for address in listening} == {"127.0.0.1"}
    with tune.local_cluster(1, 1, retries=0, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as dask_client:
        port = cluster.scheduler.http_server.port
        assert port != 0 and tune.cluster.dashboard_link(dask_client) == f"http://127.0.0.1:{port}/status"


def test_a_trial_no_better_than_chance_is_flagged_as_diverged(small_mnist):
    # the tutorial's MLP at a learning rate of 100: its cost stays finite, its error ends at 89.4 %,
    # where always answering the most frequent label of these 500 validation images gives 89.2 %
    record = tune.run_trial({"program": "mlp", "arguments": {"dataset": str(small_mnist), "n_epochs": 1,
                                                             "batch_size": 100, "learning_rate": 100.0},
                             "floatX": "float32", "threads": 1, "log_path": None})
    assert record["status"] == "failed" and record["reason"].startswith("diverged: its best validation error")
    assert record["chance"] == pytest.approx(89.2) and record["validation"] == pytest.approx(89.4)
    ranked = tune.summary_markdown(tune.load_study(REPO / "studies" / "logistic_sgd_lr_batch.toml"),
                                   [{**record, "id": "d", "params": {}, "searched": {"learning_rate": 100.0}}])
    assert "**Best**" not in ranked and "learning_rate=100.0: failed: diverged" in ranked


def test_sigterm_stops_a_study_like_ctrl_c(tiny_mnist, tmp_path):
    path = write_study(tmp_path, tiny_mnist, "term", "n_epochs = [1, 1000]")
    process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "tune.py"), str(path), "--workers", "2",
                                "--out", "out"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "out" / "term"
    deadline = time.monotonic() + 300
    while not ((folder / "trials.jsonl").exists() and list((folder / "logs").glob("*.running.log"))):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Interrupted: the finished trials are in" in err and "Traceback" not in err
    assert len((folder / "trials.jsonl").read_text().splitlines()) == 1
    assert [p.name for p in (folder / "logs").iterdir() if p.name.endswith(".running.log")] == []
    assert (folder / "summary.md").exists()
