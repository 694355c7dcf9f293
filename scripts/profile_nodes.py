"""Time each node of a tutorial's training function alone, on the values of a real call.

    python scripts/profile_nodes.py lenet                 # LeNet [20, 50], batch 500, float32, NUMBA
    python scripts/profile_nodes.py mlp --top 15 --repeats 50
    python scripts/profile_nodes.py logistic --mode CVM --floatX float64

The NUMBA mode compiles a whole graph into one function, so PyTensor's
profiler cannot say which node a call spends its time in.  This script builds
the model of ``scripts/benchmark.py`` with the tutorial's own code, takes the
graph its training function runs (after PyTensor's rewrites), and compiles
every node of it alone, in the same linker and without rewrites.  It then runs
the nodes in order on the values of a call at minibatch 0, each node on its
inputs' values, and times each one (min of ``--repeats`` calls; a node that
overwrites an input gets a fresh copy each time).  A node alone pays a
function call, and finds in cache what the same node repeated just left
there, where inside the whole function the other nodes have evicted it: the
sum of the nodes differs from the call's time, and the ranking is what
counts.  Compiling every node takes a while the first time (Numba's cache
keeps them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchmark  # noqa: E402  (scripts/benchmark.py: the models, how they are built, best_time)


def node_functions(fgraph, linker: str):
    """Each node of ``fgraph`` compiled alone: (node, function, its non-constant inputs)."""
    import pytensor
    from pytensor.graph.basic import Constant

    mode = pytensor.compile.mode.Mode(linker=linker, optimizer=None)
    for node in fgraph.toposort():
        variables = list(dict.fromkeys(v for v in node.inputs if not isinstance(v, Constant)))  # once each
        fresh = {variable: variable.type() for variable in variables}
        outputs = node.op.make_node(*(fresh.get(variable, variable) for variable in node.inputs)).outputs
        # borrowed outputs: a view of an input (a reshape, a slice) is returned as the node makes
        # it, not copied as a function's output otherwise is
        function = pytensor.function([pytensor.In(fresh[v], mutable=True) for v in variables],
                                     [pytensor.Out(output, borrow=True) for output in outputs],
                                     mode=mode, accept_inplace=True)
        function.trust_input = True
        yield node, function, variables


def profile(train, mode: str, repeats: int) -> tuple[list[dict], float, list]:
    """Time the nodes of the compiled function ``train`` of a minibatch index, at minibatch 0.

    Returns
    -------
    rows : list of dict
        Per node in the order they run: ``seconds``, ``op`` and output ``shapes``.
    whole : float
        Seconds of a whole call.
    outputs : list
        The function's outputs (its updates included) as the nodes computed
        them, from the parameters' values before the whole calls were timed.
    """
    import numpy as np

    fgraph = train.maker.fgraph
    # the inputs at minibatch 0, the parameters copied as they are now: the whole calls timed
    # next update the model's own
    updated = {fgraph.inputs[i] for i in fgraph.update_mapping.values()}
    values = {}
    for variable, container in zip(fgraph.inputs, train.input_storage):
        value = container.data if container.data is not None else np.asarray(0, variable.dtype)
        values[variable] = np.copy(value) if variable in updated else value
    whole = benchmark.best_time(train, lambda: (0,), repeats)
    linker = {"NUMBA": "numba", "CVM": "cvm", "JAX": "jax"}[mode]
    rows = []
    for node, function, variables in node_functions(fgraph, linker):
        destroyed = {i for inputs in getattr(node.op, "destroy_map", {}).values() for i in inputs}
        destroyed_variables = {node.inputs[i] for i in destroyed}

        def make_args(variables=variables, destroyed_variables=destroyed_variables):
            return [np.copy(values[v]) if v in destroyed_variables else values[v] for v in variables]

        seconds = benchmark.best_time(function, make_args, repeats)
        results = function(*make_args())
        results = results if isinstance(results, list) else [results]
        for output, value in zip(node.outputs, results):
            values[output] = value
        shapes = ", ".join("x".join(map(str, np.shape(value))) or "scalar" for value in results)
        rows.append({"seconds": seconds, "op": str(node.op), "shapes": shapes})
    return rows, whole, [values[output] for output in fgraph.outputs]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[name for name in benchmark.MODELS if name != "logistic_cg"])
    parser.add_argument("--mode", default="NUMBA", choices=["NUMBA", "CVM", "JAX"])
    parser.add_argument("--floatX", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--top", type=int, default=25, help="nodes listed, slowest first")
    args = parser.parse_args(argv)

    import pytensor

    from deeplearning_tutorial import speedups

    speedups.keep_freed_memory()  # as the tutorial programs' main does
    pytensor.config.floatX = args.floatX
    pytensor.config.mode = args.mode
    rows, whole, _ = profile(benchmark.build(args.model).train_model, args.mode, args.repeats)
    total = sum(row["seconds"] for row in rows)
    print(f"{args.model}, {args.mode}, {args.floatX}: the training call {whole * 1e3:.3f} ms; "
          f"its {len(rows)} nodes alone {total * 1e3:.3f} ms in all (min of {args.repeats})")
    print(f"{'ms':>9} {'share':>6}  node (output shapes)")
    for row in sorted(rows, key=lambda row: -row["seconds"])[: args.top]:
        print(f"{row['seconds'] * 1e3:9.3f} {row['seconds'] / total:6.1%}  {row['op'][:90]} ({row['shapes']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
