"""Export a network to ONNX with a block-mask input, plus its metadata sidecar.

The graph has two inputs, `input` ([batch, 3, H, W], preprocessed) and
`block_mask` ([batch, num_blocks], 1 keeps a block and 0 removes it), and two
outputs, `logits` and `probabilities`. Because the mask is per sample, requests
that remove different blocks share one batch. After export we locate, for every
block, the node that gates its branch and the addition that joins it to the
shortcut; the sidecar records their names so that the service can build graphs
without the removed blocks (`service.runtime.pruning`) without PyTorch.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from models.manifest import Preprocessing
from models.network import ResidualNetwork, count_macs
from models.repository import require_valid_name

OPSET = 17
INPUT_NAME = "input"
MASK_NAME = "block_mask"
OUTPUT_NAMES = ("logits", "probabilities")


class _Exportable(nn.Module):
    def __init__(self, network: ResidualNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor, block_mask: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.network(x, block_mask)
        return logits, torch.softmax(logits, dim=1)


@dataclass(frozen=True)
class GateNodes:
    """Where block i lives in the graph: its gate (Mul) and its join (Add)."""

    gate_node: str
    add_node: str
    branch_tensor: str
    shortcut_tensor: str


@dataclass
class ExportSource:
    """Provenance of the exported weights, recorded in the sidecar."""

    kind: str  # "published", "checkpoint" or "random-init"
    url: str | None = None
    file: str | None = None
    sha256: str | None = None
    licence: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.kind != "random-init"


def export_onnx(network: ResidualNetwork, path: Path) -> list[GateNodes]:
    """Write `network` (in eval mode) to `path`; return each block's gate nodes."""
    network = network.eval()
    height, width = network.input_size
    example = (torch.zeros(2, 3, height, width), torch.ones(2, network.num_blocks))
    path.parent.mkdir(parents=True, exist_ok=True)

    # The TorchScript-based exporter gives stable, scope-derived node names and
    # folds BatchNorm into the convolutions in eval mode; its deprecation
    # warning is not ours to act on while it does the job.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The wrapper must be in eval mode too: the exporter restores the
        # wrapper's mode afterwards, recursively, which would otherwise leave
        # the caller's network training.
        torch.onnx.export(
            _Exportable(network).eval(),
            example,
            str(path),
            dynamo=False,
            input_names=[INPUT_NAME, MASK_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                INPUT_NAME: {0: "batch"},
                MASK_NAME: {0: "batch"},
                OUTPUT_NAMES[0]: {0: "batch"},
                OUTPUT_NAMES[1]: {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
        )

    proto = onnx.load(str(path))
    gates = find_gate_nodes(proto, network.num_blocks)
    onnx.checker.check_model(proto)
    return gates


def find_gate_nodes(proto: onnx.ModelProto, num_blocks: int) -> list[GateNodes]:
    """Locate each block's gating Mul and joining Add, in network order.

    A tensor is mask-derived when every non-constant input of the node that
    makes it is mask-derived. A gate is a Mul with one mask-derived input and
    one that is not (the branch); its only consumer is the block's Add.
    """
    graph = proto.graph
    constants = {init.name for init in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    derived = {MASK_NAME}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    gates = []

    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
        live = [name for name in node.input if name and name not in constants]
        if live and all(name in derived for name in live):
            derived.update(node.output)

    for node in graph.node:
        if node.op_type != "Mul":
            continue
        masked = [name for name in node.input if name in derived]
        if len(masked) != 1 or len(node.input) != 2:
            continue
        branch = node.input[0] if node.input[1] in derived else node.input[1]
        (add,) = consumers[node.output[0]]
        if add.op_type != "Add":
            raise ValueError(f"gate {node.name} feeds {add.op_type}, expected Add")
        shortcut = add.input[0] if add.input[1] == node.output[0] else add.input[1]
        gates.append(GateNodes(node.name, add.name, branch, shortcut))

    if len(gates) != num_blocks:
        raise ValueError(f"found {len(gates)} gated blocks in the graph, expected {num_blocks}")
    return gates


def build_metadata(
    network: ResidualNetwork,
    *,
    name: str,
    version: int,
    dataset: str,
    labels: list[str],
    preprocessing: Preprocessing,
    source: ExportSource,
    gates: list[GateNodes],
    description: str = "",
) -> dict[str, Any]:
    """The sidecar: everything the service and its users need about the model."""
    blocks = [info.to_dict() for info in network.describe_blocks()]
    for block, gate in zip(blocks, gates, strict=True):
        # FLOPs as two per multiply-accumulate, for readers used to that unit.
        block["flops"] = 2 * block["macs"]
        block["onnx"] = vars(gate)
    height, width = network.input_size
    architecture = type(network).__name__
    family = "cifar" if "Cifar" in architecture else "imagenet"
    preact = "PreAct" in architecture
    total_macs = sum(count_macs(network, network.input_size).values())

    return {
        "name": name,
        "version": str(version),
        "description": description,
        "dataset": dataset,
        "architecture": {
            "name": f"{'preact-' if preact else ''}resnet{network.depth}",  # type: ignore[attr-defined]
            "family": family,
            "depth": network.depth,  # type: ignore[attr-defined]
            "preactivation": preact,
            "block_type": type(network.named_blocks()[0][1]).__name__,
            "stages": list(network.stage_names),
            "num_blocks": network.num_blocks,
        },
        "input": {"name": INPUT_NAME, "shape": [-1, 3, height, width], "dtype": "float32"},
        "mask_input": {"name": MASK_NAME, "shape": [-1, network.num_blocks], "dtype": "float32"},
        "outputs": [
            {"name": OUTPUT_NAMES[0], "shape": [-1, len(labels)], "dtype": "float32"},
            {"name": OUTPUT_NAMES[1], "shape": [-1, len(labels)], "dtype": "float32"},
        ],
        "preprocessing": preprocessing.to_dict(),
        "labels": labels,
        "blocks": blocks,
        "total_params": sum(p.numel() for p in network.parameters()),
        "total_macs": total_macs,
        "total_flops": 2 * total_macs,
        "pretrained": source.pretrained,
        "source": source.__dict__,
        "opset": OPSET,
        "exporter": {
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "python": platform.python_version(),
        },
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_model(
    network: ResidualNetwork,
    repository: Path,
    *,
    name: str,
    version: int,
    dataset: str,
    labels: list[str],
    preprocessing: Preprocessing,
    source: ExportSource,
    description: str = "",
) -> Path:
    """Export into `<repository>/<name>/<version>/` and return that folder.

    Files are written under temporary names and renamed at the end, so a
    running service never sees a half-written model.

    Raises:
        ValueError: `name` is not a valid model name (see
            `models.repository.is_valid_name`), or the labels do not match the
            network's classes.
    """
    require_valid_name(name)
    if len(labels) != network_classes(network):
        raise ValueError(
            f"{len(labels)} labels for a network with {network_classes(network)} classes"
        )
    folder = repository / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    temp_onnx = folder / "model.onnx.part"
    gates = export_onnx(network, temp_onnx)
    metadata = build_metadata(
        network, name=name, version=version, dataset=dataset, labels=labels,
        preprocessing=preprocessing, source=source, gates=gates, description=description,
    )
    temp_json = folder / "metadata.json.part"
    temp_json.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    temp_onnx.replace(folder / "model.onnx")
    temp_json.replace(folder / "metadata.json")
    return folder


def network_classes(network: ResidualNetwork) -> int:
    head = getattr(network, "linear", None) or getattr(network, "fc")
    return int(head.out_features)
