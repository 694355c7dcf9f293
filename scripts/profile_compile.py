"""Where a cold start goes: what Numba compiles on a tutorial's first calls, node by node.

    python scripts/profile_compile.py lenet                # LeNet [20, 50], batch 500, float32
    python scripts/profile_compile.py mlp --top 10
    python scripts/profile_compile.py lenet --cache-dir /tmp/caches   # keep the caches it fills

The first call of a function compiled in PyTensor's NUMBA mode compiles the
whole graph with Numba, unless PyTensor's cache on disk has it.  This script
builds the model of ``scripts/benchmark.py`` with the tutorial's own code, in
a child process whose PyTensor and Numba caches are empty folders (a fresh
temporary one, removed afterwards, unless ``--cache-dir`` names one), and
makes the first call of the training, validation and test functions in turn.
It listens to Numba's compile events and reports, per function, the seconds
of its first call, how many functions Numba compiled for it, how much of that
was the whole graph's own function (linking and generating the code of all
its nodes once more) and how much each kind of node took, its helpers
included (the string formatting of an error message, a sort).  A helper is
compiled once per process, by the first node that needs it: the next node of
that kind costs less.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from numba.core import event

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchmark  # noqa: E402  (scripts/benchmark.py: the models and how they are built)

# The name of the function PyTensor's NUMBA linker makes of a whole graph (and of its cache wrapper).
GRAPH_FUNCTION = "numba_funcified_fgraph"
FUNCTIONS = ("train_model", "validate_model", "test_model")


class CompileEvents(event.Listener):
    """Numba's compile events as a tree: (depth, name, seconds, own seconds), in order of start."""

    def __init__(self):
        self.events: list = []
        self._open: list = []

    def on_start(self, ev):
        self._open.append([time.perf_counter(), 0.0, len(self.events)])
        self.events.append(None)

    def on_end(self, ev):
        start, children, index = self._open.pop()
        seconds = time.perf_counter() - start
        if self._open:
            self._open[-1][1] += seconds
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        name = getattr(function, "__qualname__", "?").split(".<locals>.")[-1]
        self.events[index] = (len(self._open), name, seconds, seconds - children)


def summarize(events: list) -> dict:
    """One first call's compilations: their number, the graph functions' own seconds, and the
    seconds of the graph's node functions (helpers included) by name, as (count, seconds).

    The graph functions are the chain the events start with (the cache wrapper, then the graph,
    one level down each); the nodes are the children of its last link.  A graph inside a node
    (an ``OpFromGraph``'s) counts as part of that node."""
    graph = []
    for depth, name, _, own in events:
        if name != GRAPH_FUNCTION or depth != len(graph):
            break
        graph.append(own)
    nodes: dict = collections.defaultdict(lambda: [0, 0.0])
    for depth, name, seconds, _ in events:
        if depth == len(graph):
            nodes[name][0] += 1
            nodes[name][1] += seconds
    return {
        "compilations": len(events),
        "graph_own_s": sum(graph),
        "nodes": {name: tuple(value) for name, value in nodes.items()},
    }


def profile(model: str) -> dict:
    """First-call seconds and compile summary of each of ``model``'s functions, in this process."""
    recorder = CompileEvents()
    event.register("numba:compile", recorder)
    with contextlib.redirect_stdout(io.StringIO()):
        built = benchmark.build(model)
    results = {}
    for name in FUNCTIONS:
        first = len(recorder.events)
        start = time.perf_counter()
        getattr(built, name)(0)
        results[name] = {"first_call_s": time.perf_counter() - start, **summarize(recorder.events[first:])}
    return results


def report(model: str, results: dict, top: int) -> str:
    lines = []
    for name, result in results.items():
        nodes = result["nodes"]
        lines.append(f"{model} {name}: first call {result['first_call_s']:.2f} s, {result['compilations']} "
                     f"Numba compilations; the whole graph's own {result['graph_own_s']:.2f} s, its nodes "
                     f"{sum(s for _, s in nodes.values()):.2f} s")
        for node, (count, seconds) in sorted(nodes.items(), key=lambda item: -item[1][1])[:top]:
            lines.append(f"    {seconds:6.2f} s  {count:3d} x  {node}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[name for name in benchmark.MODELS if name != "logistic_cg"])
    parser.add_argument("--floatX", default="float32", choices=["float32", "float64"])
    parser.add_argument("--top", type=int, default=15, help="kinds of node listed per function, slowest first")
    parser.add_argument("--cache-dir", type=Path,
                        help="an empty folder for both compile caches, kept (default: a temporary one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        import pytensor

        pytensor.config.floatX = args.floatX
        print(report(args.model, profile(args.model), args.top))
        return 0

    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="profile_compile-"))
    if args.cache_dir and args.cache_dir.exists() and any(args.cache_dir.iterdir()):
        parser.error(f"--cache-dir {args.cache_dir} is not empty: a cold start needs empty caches")
    flags = ",".join(filter(None, [os.environ.get("PYTENSOR_FLAGS"), f"base_compiledir={cache / 'pytensor'}"]))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache / "numba"), "PYTENSOR_FLAGS": flags}
    command = [sys.executable, __file__, args.model, "--floatX", args.floatX, "--top", str(args.top), "--child"]
    try:
        return subprocess.run(command, env=env).returncode
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
