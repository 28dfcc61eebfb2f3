"""Build a graph without chosen residual blocks from the exported masked graph.

The exported graph gates every block's branch with a column of `block_mask`
(see `models.export`). For a fixed set of removed blocks we rewrite it: the
join (Add) of a removed block becomes an Identity of its shortcut, the gate of
a kept block becomes an Identity of its branch, and every node that no longer
feeds an output is dropped, the mask input with it. What remains computes only
the kept branches, so it costs less than the full network.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import onnx
from onnx import helper


def prune_graph(
    model: onnx.ModelProto, gates: Sequence[dict[str, Any]], removed: Iterable[int]
) -> onnx.ModelProto:
    """A copy of `model` with the blocks at `removed` structurally removed.

    Args:
        model: the masked graph as exported.
        gates: per block, the sidecar's `onnx` entry (`gate_node`, `add_node`,
            `branch_tensor`, `shortcut_tensor`), in block order.
        removed: block indices to remove.
    """
    removed = set(removed)
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    by_name = {node.name: node for node in graph.node}

    for index, gate in enumerate(gates):
        if index in removed:
            _to_identity(by_name[gate["add_node"]], gate["shortcut_tensor"])
        else:
            _to_identity(by_name[gate["gate_node"]], gate["branch_tensor"])

    _drop_dead_nodes(graph)
    return pruned


def _to_identity(node: onnx.NodeProto, source: str) -> None:
    output = node.output[0]
    name = node.name
    node.CopyFrom(helper.make_node("Identity", [source], [output], name=name))


def _drop_dead_nodes(graph: onnx.GraphProto) -> None:
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    kept.reverse()

    del graph.node[:]
    graph.node.extend(kept)

    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)

    for field in (graph.input, graph.value_info):
        values = [value for value in field if value.name in needed]
        del field[:]
        field.extend(values)
