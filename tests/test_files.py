"""Atomic writes and run locks, the file-handling every writer of the package shares."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

# a process that takes the lock of ``target`` with a delay between reading the stale lock's pid and
# acting on it, prints whether it got it, and holds it for a while
TAKE_LOCK_SLOWLY = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from deeplearning_tutorial import files

    read_owner = files._lock_owner

    def slowly(lock):
        owner = read_owner(lock)
        time.sleep(0.05)
        return owner

    files._lock_owner = slowly
    lock = files.RunLock([Path(sys.argv[1])])
    try:
        lock.acquire()
    except files.RunFileError:
        print("refused", flush=True)
    else:
        print("held", flush=True)
        time.sleep(1.5)
""")


def test_one_process_takes_over_a_stale_lock(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "mlp.ckpt"
    for _ in range(3):
        (tmp_path / "mlp.ckpt.lock").write_text(dead.stdout.strip())  # left by a process that is gone
        processes = [subprocess.Popen([sys.executable, "-c", TAKE_LOCK_SLOWLY, str(target)], cwd=REPO,
                                      stdout=subprocess.PIPE, text=True) for _ in range(4)]
        outcomes = sorted(process.communicate(timeout=120)[0].strip() for process in processes)
        assert outcomes == ["held", "refused", "refused", "refused"]


def test_the_package_has_no_import_cycle_and_a_cycle_is_found(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    assert check_imports.cycles(check_imports.import_graph()) == []
    package = tmp_path / "deeplearning_tutorial"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from deeplearning_tutorial import b\n")
    (package / "b.py").write_text("def f():\n    from deeplearning_tutorial.sub import c\n")
    (package / "sub" / "__init__.py").write_text("")
    # run as a program, c imports b: not an import of the package's graph
    (package / "sub" / "c.py").write_text("from .. import a\n"
                                          "if __name__ == '__main__':\n    import deeplearning_tutorial.b\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\n"
                                  "if TYPE_CHECKING:\n    from deeplearning_tutorial import a\n")
    graph = check_imports.import_graph(tmp_path)
    assert graph["deeplearning_tutorial.d"] == set()  # imports only for the type checker do not count
    assert check_imports.cycles(graph) == [["deeplearning_tutorial.a", "deeplearning_tutorial.b",
                                            "deeplearning_tutorial.sub.c"]]
