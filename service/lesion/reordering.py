"""Run a network with its residual blocks in another order, on the exported graph.

A block whose shortcut is the identity maps a tensor to one of the same shape,
so two such blocks of one stage can trade places (Veit et al. 2016, section 4,
https://arxiv.org/abs/1605.06431). We start from the graph with every block
kept and the mask gone (`ModelRuntime.pruned_graph` of no block). In it, block
position p reads one tensor and writes another; running block k at position p
means renaming k's two boundary tensors to p's. Nothing else changes: the
weights stay where they are and a block's inner tensors keep their own names.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import onnx

from service.lesion.evaluation import EVAL_BATCH
from service.runtime.model import ModelRuntime
from service.runtime.session import create_session
from service.settings import available_cpus


@dataclass(frozen=True)
class BlockSpan:
    """Where one block sits in the unmasked graph.

    `nodes` are the indices of the nodes on every path from `input` (the
    tensor the block reads) to `output` (the tensor it writes).
    """

    stage: int
    input: str
    output: str
    nodes: tuple[int, ...]


class BlockReorderer:
    """Builds graphs of one model with blocks at other positions."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.unmasked = runtime.pruned_graph(frozenset())
        self.spans = find_spans(self.unmasked.graph, runtime.blocks)

    @property
    def swappable(self) -> list[bool]:
        """Per block, whether it may move (identity shortcut, same shape out)."""
        return [span is not None for span in self.spans]

    def graph(self, order: Sequence[int]) -> onnx.ModelProto:
        """The network with block `order[p]` at position p."""
        return reorder_graph(self.unmasked, self.spans, order)

    def predict(
        self, order: Sequence[int], inputs: np.ndarray, batch_size: int = EVAL_BATCH
    ) -> np.ndarray:
        """Top-1 class of every input with the blocks in `order`."""
        session = create_session(
            self.graph(order).SerializeToString(),
            ["CPUExecutionProvider"],
            available_cpus(),
            f"{self.runtime.name} reordered",
        )
        predictions = np.empty(len(inputs), dtype=np.int64)
        for start in range(0, len(inputs), batch_size):
            batch = np.ascontiguousarray(inputs[start : start + batch_size])
            logits = session.run(["logits"], {"input": batch})[0]
            predictions[start : start + len(batch)] = logits.argmax(axis=1)
        return predictions


def find_spans(graph: onnx.GraphProto, blocks: Sequence[dict[str, Any]]) -> list[BlockSpan | None]:
    """The span of every block that may move; None for the others.

    A block may move when it does not downsample and its shortcut tensor is
    also read by its branch, that is, the shortcut is the block's input itself
    (a projection or option-A shortcut writes a tensor only the join reads).

    Args:
        graph: the unmasked graph (every gate already an Identity).
        blocks: the sidecar's block entries, in network order.

    Raises:
        ValueError: two consecutive movable blocks do not join up.
    """
    readers: dict[str, list[int]] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(index)
    by_name = {node.name: index for index, node in enumerate(graph.node)}

    spans: list[BlockSpan | None] = []
    for block in blocks:
        shortcut = block["onnx"]["shortcut_tensor"]
        add = by_name[block["onnx"]["add_node"]]
        if block["downsample"] or readers.get(shortcut, []) == [add]:
            spans.append(None)
            continue
        output = _block_output(graph, readers, add)
        nodes = _between(graph, readers, shortcut, output)
        spans.append(BlockSpan(block["stage"], shortcut, output, nodes))

    _check_chain(spans)
    return spans


def _check_chain(spans: Sequence[BlockSpan | None]) -> None:
    """Renaming relies on each block reading exactly what the one before writes."""
    for index, (span, after) in enumerate(pairwise(spans)):
        if span is not None and after is not None and span.output != after.input:
            raise ValueError(
                f"block {index} writes {span.output!r} but block {index + 1} reads "
                f"{after.input!r}: the graph is not a chain of blocks"
            )


def _block_output(graph: onnx.GraphProto, readers: dict[str, list[int]], add: int) -> str:
    """The join's output, or the ReLU after it where the block has one."""
    joined = graph.node[add].output[0]
    after = readers.get(joined, [])
    if len(after) == 1 and graph.node[after[0]].op_type == "Relu":
        return str(graph.node[after[0]].output[0])
    return str(joined)


def _between(
    graph: onnx.GraphProto, readers: dict[str, list[int]], source: str, target: str
) -> tuple[int, ...]:
    """Indices of the nodes that read `source` (directly or not) and feed `target`."""
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}

    downstream: set[int] = set()
    pending = [source]
    while pending:
        name = pending.pop()
        for index in readers.get(name, []):
            if index not in downstream:
                downstream.add(index)
                if target not in graph.node[index].output:
                    pending.extend(graph.node[index].output)

    upstream: set[int] = set()
    pending = [target]
    while pending:
        index = producer.get(pending.pop(), -1)
        if index in downstream and index not in upstream:
            upstream.add(index)
            pending.extend(graph.node[index].input)
    return tuple(sorted(upstream))


def reorder_graph(
    unmasked: onnx.ModelProto, spans: Sequence[BlockSpan | None], order: Sequence[int]
) -> onnx.ModelProto:
    """A copy of `unmasked` that runs block `order[p]` at position p.

    Raises:
        ValueError: `order` is not a permutation of the blocks, or moves a
            block that cannot move or into another stage.
    """
    _check_order(spans, order)
    model = onnx.ModelProto()
    model.CopyFrom(unmasked)
    nodes = model.graph.node

    for position, block in enumerate(order):
        source, target = spans[block], spans[position]
        if block == position or source is None or target is None:
            continue
        renames = {source.input: target.input, source.output: target.output}
        for index in source.nodes:
            _rename(nodes[index], renames)

    _sort_topologically(model.graph)
    return model


def _check_order(spans: Sequence[BlockSpan | None], order: Sequence[int]) -> None:
    if sorted(order) != list(range(len(spans))):
        raise ValueError(f"order must be a permutation of 0..{len(spans) - 1}, got {order}")
    for position, block in enumerate(order):
        if block == position:
            continue
        source, target = spans[block], spans[position]
        if source is None or target is None:
            fixed = block if source is None else position
            raise ValueError(
                f"block {fixed} cannot move: it downsamples or has no identity shortcut"
            )
        if source.stage != target.stage:
            raise ValueError(
                f"block {block} (stage {source.stage}) cannot run at position "
                f"{position} (stage {target.stage}): shapes differ between stages"
            )


def _rename(node: onnx.NodeProto, renames: dict[str, str]) -> None:
    for field in (node.input, node.output):
        for slot, name in enumerate(field):
            field[slot] = renames.get(name, name)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Put the nodes back in an order where each follows what it reads.

    ONNX requires it; ties keep the original order, so an unchanged graph
    comes out unchanged.
    """
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    waiting = [0] * len(graph.node)
    readers: dict[int, list[int]] = {}
    for index, node in enumerate(graph.node):
        sources = {producer[name] for name in node.input if name in producer}
        waiting[index] = len(sources)
        for source in sources:
            readers.setdefault(source, []).append(index)

    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(graph.node[index])
        for reader in readers.get(index, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(ordered) != len(graph.node):
        raise ValueError("reordered graph has a cycle")

    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
