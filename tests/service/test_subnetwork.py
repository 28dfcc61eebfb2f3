"""The sub-network endpoint over real HTTP against real servers.

Answers are compared with `models.subnetwork.remove_blocks`, which removes
blocks structurally in PyTorch, so neither the mask nor the pruned graph the
service runs can agree with a wrong definition of "removed". Also covered:
validation of `remove`, block metadata, metric labels, the pruned-graph cache
and batches that mix different sets of removed blocks.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from models.build import build_from_spec, load_weights
from models.manifest import get_spec
from models.preprocessing import decode_and_preprocess
from models.subnetwork import remove_blocks
from tests.helpers import CIFAR_SAMPLES, ServerProcess
from tests.service.probes import metric

MODELS = ["resnet20-cifar10", "resnet56-cifar10"]
#: The model of the dedicated servers, which start with it alone.
TUNED_MODEL = "resnet56-cifar10"
IMAGES = [path.read_bytes() for path in CIFAR_SAMPLES]
SUBNETWORK_PATH = "/v1/models/{model}/subnetwork/classify"
PROBABILITY_ATOL = 1e-5
LOGIT_ATOL = 1e-4


class Reference:
    """A pretrained network in PyTorch, and the samples preprocessed as its manifest says."""

    def __init__(self, name: str, mirror: Path) -> None:
        spec = get_spec(name)
        assert spec.weights is not None
        weights = mirror / "cifar10" / spec.weights.file_name
        self.network = load_weights(build_from_spec(spec), weights)
        self.blocks = self.network.named_blocks()
        self.names = [block_name for block_name, _ in self.blocks]
        self.inputs = torch.from_numpy(np.stack([
            decode_and_preprocess(data, spec.preprocessing) for data in IMAGES
        ]))

    def logits(self, removed: list[int], rows: slice | list[int] = slice(None)) -> np.ndarray:
        with torch.no_grad():
            logits: np.ndarray = remove_blocks(self.network, removed)(self.inputs[rows]).numpy()
        return logits

    def probabilities(
        self, removed: list[int], rows: slice | list[int] = slice(None)
    ) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits(removed, rows)), dim=1).numpy()

    def indices(self, items: list[str]) -> list[int]:
        """The sorted, distinct block indices that `remove` items name."""
        return sorted({int(item) if item.isdigit() else self.names.index(item) for item in items})


@pytest.fixture(scope="module")
def reference(mirror: Path) -> Callable[[str], Reference]:
    return cache(lambda name: Reference(name, mirror))


@pytest.fixture(scope="module")
def start_server(repository: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Starts a server of TUNED_MODEL with the given settings; all stop with the module."""
    started: list[ServerProcess] = []

    def start(**settings: object) -> ServerProcess:
        process = ServerProcess(repository, models=TUNED_MODEL, **settings)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def pruning_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """Builds a set's pruned graph on its third request."""
    return start_server(subnetwork_prune_after=3, subnetwork_cache_size=2)


@pytest.fixture(scope="module")
def masked_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """Never prunes (it would on a first request), and holds each batch open for
    100 ms so that concurrent requests surely meet in one."""
    return start_server(
        subnetwork_cache_size=0, subnetwork_prune_after=1, max_queue_delay_ms=100
    )


def _form(images: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"image{i}.png", data, "image/png")) for i, data in enumerate(images)]


def _query(remove: str | None) -> dict[str, Any]:
    """Every class in the answer, so that whole probability vectors compare."""
    query: dict[str, Any] = {"top_k": 100}
    if remove is not None:
        query["remove"] = remove
    return query


def _subnetwork(
    server: ServerProcess, model: str, remove: str | None, images: list[bytes] = IMAGES
) -> httpx.Response:
    return httpx.post(f"{server.url}{SUBNETWORK_PATH.format(model=model)}",
                      files=_form(images), params=_query(remove), timeout=60)


def _answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _probabilities(body: dict[str, Any]) -> np.ndarray:
    """[images, classes] from a /v1 answer that lists every class; NaN where one is missing."""
    predictions = body["predictions"]
    table = np.full((len(predictions), len(predictions[0]["top"])), np.nan)
    for row, prediction in enumerate(predictions):
        for entry in prediction["top"]:
            table[row, entry["class_id"]] = entry["probability"]
    return table


def _infer_v2(server: ServerProcess, model: str, remove: object,
              images: list[bytes] = IMAGES) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{
            "name": "image", "datatype": "BYTES", "shape": [len(images)],
            "data": [base64.b64encode(data).decode() for data in images],
        }],
        "outputs": [{"name": "logits"}],
    }
    if remove is not None:
        body["parameters"] = {"remove": remove}
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)


def _random_third(reference: Reference) -> list[str]:
    rng = np.random.default_rng(len(reference.names))
    chosen = rng.choice(len(reference.names), size=len(reference.names) // 3, replace=False)
    return [str(index) for index in sorted(chosen)]


#: Sets of blocks to remove, as `remove` items, for a given network.
CASES: dict[str, Callable[[Reference], list[str]]] = {
    "first-block": lambda ref: ["0"],
    "downsampling-by-name": lambda ref: [name for name, block in ref.blocks if block.downsamples],
    "names-and-indices": lambda ref: [ref.names[-1], str(len(ref.names) // 2), "1"],
    "random-third": _random_third,
    "every-block": lambda ref: [str(index) for index in range(len(ref.names))],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("model", MODELS)
def test_v1_probabilities_match_structural_reference(
    server: ServerProcess, reference: Callable[[str], Reference], model: str, case: str
) -> None:
    ref = reference(model)
    items = CASES[case](ref)
    removed = ref.indices(items)
    assert removed, "every case removes at least one block"

    body = _answer(_subnetwork(server, model, ",".join(items)))

    assert body["model"] == model
    assert body["removed_blocks"] == [{"index": i, "name": ref.names[i]} for i in removed]
    assert body["graph"] in ("masked", "pruned")
    np.testing.assert_allclose(_probabilities(body), ref.probabilities(removed),
                               rtol=0, atol=PROBABILITY_ATOL)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("model", MODELS)
def test_v2_logits_match_structural_reference(
    server: ServerProcess, reference: Callable[[str], Reference], model: str, case: str
) -> None:
    ref = reference(model)
    items = CASES[case](ref)
    removed = ref.indices(items)

    body = _answer(_infer_v2(server, model, ",".join(items)))

    assert body["parameters"]["remove"] == ",".join(map(str, removed))
    assert body["parameters"]["graph"] in ("masked", "pruned")
    (output,) = body["outputs"]
    logits = np.reshape(output["data"], output["shape"])
    assert np.abs(logits - ref.logits(removed)).max() <= LOGIT_ATOL


def test_v2_remove_may_be_a_list_of_indices_and_names(
    server: ServerProcess, reference: Callable[[str], Reference]
) -> None:
    ref = reference("resnet56-cifar10")
    items: list[object] = [12, "layer3.0", 12, "2"]

    body = _answer(_infer_v2(server, "resnet56-cifar10", items, IMAGES[:3]))

    removed = ref.indices([str(item) for item in items])
    assert body["parameters"]["remove"] == ",".join(map(str, removed))
    logits = np.reshape(body["outputs"][0]["data"], body["outputs"][0]["shape"])
    assert np.abs(logits - ref.logits(removed, slice(0, 3))).max() <= LOGIT_ATOL


@pytest.mark.parametrize("remove", [None, "", "   "], ids=["missing", "empty", "blank"])
@pytest.mark.parametrize("model", MODELS)
def test_no_blocks_named_means_the_full_model(
    server: ServerProcess, reference: Callable[[str], Reference], model: str,
    remove: str | None,
) -> None:
    full = _answer(httpx.post(f"{server.url}/v1/models/{model}/classify", files=_form(IMAGES),
                              params=_query(None), timeout=60))

    body = _answer(_subnetwork(server, model, remove))

    assert body["removed_blocks"] == []
    assert body["graph"] == "masked"
    np.testing.assert_allclose(_probabilities(body), _probabilities(full), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_probabilities(body), reference(model).probabilities([]),
                               rtol=0, atol=PROBABILITY_ATOL)


@pytest.mark.parametrize(("remove", "expected"), [
    (" 3 , layer1.3,3", [3]),
    ("layer2.0,9,layer2.0,\t9\n", [9]),
    ("0026,layer3.8", [26]),
], ids=["index-and-name", "whitespace-and-repeats", "leading-zeros"])
def test_duplicates_and_whitespace_count_once(
    server: ServerProcess, remove: str, expected: list[int]
) -> None:
    model = "resnet56-cifar10"
    plain = _answer(_subnetwork(server, model, ",".join(map(str, expected)), IMAGES[:2]))

    body = _answer(_subnetwork(server, model, remove, IMAGES[:2]))

    assert body["removed_blocks"] == plain["removed_blocks"]
    assert [block["index"] for block in body["removed_blocks"]] == expected
    np.testing.assert_allclose(_probabilities(body), _probabilities(plain),
                               rtol=0, atol=PROBABILITY_ATOL)


# ResNet-56 has 27 blocks, 0..26; the second item is what the message must name.
INVALID_REMOVE = [
    pytest.param("27", "27", id="past-the-last"),
    pytest.param("-1", "-1", id="negative"),
    pytest.param("--1", "--1", id="double-minus"),
    pytest.param("1,-27", "-27", id="negative-after-a-valid-one"),
    pytest.param("9" * 30, "999999", id="huge"),
    pytest.param("9" * 5000, "999999", id="past-the-int-digit-limit"),
    pytest.param("3,,4", "item 2", id="empty-item"),
    pytest.param(",3", "item 1", id="leading-comma"),
    pytest.param("3,", "item 2", id="trailing-comma"),
    pytest.param("3, ,4", "item 2", id="blank-item"),
    pytest.param("layer4.0", "layer4.0", id="unknown-stage"),
    pytest.param("layer2.9", "layer2.9", id="unknown-position"),
    pytest.param("Layer1.0", "Layer1.0", id="wrong-case"),
    pytest.param("[3,4]", "[3", id="json-list"),
    pytest.param("3;4", "3;4", id="semicolon"),
    pytest.param("3 4", "3 4", id="space-separated"),
    pytest.param("1.5", "1.5", id="fraction"),
    pytest.param("0x3", "0x3", id="hexadecimal"),
    pytest.param("+3", "+3", id="plus-sign"),
    pytest.param("\u00b2", "\u00b2", id="superscript-two"),
    pytest.param("\uff13", "\uff13", id="fullwidth-three"),
]


@pytest.mark.parametrize(("remove", "named"), INVALID_REMOVE)
def test_invalid_remove_is_422_naming_the_item_and_the_range(
    server: ServerProcess, remove: str, named: str
) -> None:
    response = _subnetwork(server, "resnet56-cifar10", remove, IMAGES[:1])

    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert named in message
    assert "0..26" in message
    assert len(message) < 300, "the error must not echo a huge item back"


@pytest.mark.parametrize("remove", ["27", "3,,4", "layer9.0", [3, "nope"], 5])
def test_v2_invalid_remove_is_400_naming_the_problem(
    server: ServerProcess, remove: object
) -> None:
    response = _infer_v2(server, "resnet56-cifar10", remove, IMAGES[:1])

    assert response.status_code == 400, response.text
    assert "remove" in response.json()["error"]


def _conv_macs(block: torch.nn.Module, side: int) -> int:
    """MACs of a block's convolutions with `side` x `side` outputs, from weight shapes."""
    convolutions = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    return sum(conv.weight.numel() * side * side for conv in convolutions)


@pytest.mark.parametrize("model", MODELS)
def test_metadata_lists_every_block(
    server: ServerProcess, reference: Callable[[str], Reference], model: str
) -> None:
    ref = reference(model)
    input_side = ref.inputs.shape[-1]

    response = httpx.get(f"{server.url}/v1/models/{model}", timeout=10)

    assert response.status_code == 200, response.text
    blocks = response.json()["blocks"]
    assert [block["index"] for block in blocks] == list(range(len(ref.blocks)))
    assert response.json()["architecture"]["num_blocks"] == len(ref.blocks)
    for listed, (name, block) in zip(blocks, ref.blocks, strict=True):
        stage = int(name.split(".")[0].removeprefix("layer"))
        assert listed["name"] == name
        assert listed["stage"] == stage
        assert listed["downsample"] == block.downsamples
        assert listed["params"] == sum(p.numel() for p in block.parameters())
        # CIFAR stages run at 32, 16 and 8 pixels a side.
        assert listed["macs"] == _conv_macs(block, input_side >> (stage - 1))
        assert listed["flops"] == 2 * listed["macs"]
        assert "onnx" not in listed


def _requests(server: ServerProcess, endpoint: str, network: str) -> float:
    return metric(server.url, "resnet_serve_requests_total", model="resnet20-cifar10",
                  endpoint=endpoint, network=network, code="200")


def _images(server: ServerProcess, network: str) -> float:
    return metric(server.url, "resnet_serve_images_total", model="resnet20-cifar10",
                  network=network)


def _samples(server: ServerProcess) -> list[tuple[str, dict[str, str]]]:
    """(name, labels) of every sample the server exposes."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [(sample.name, sample.labels) for family in text_string_to_metric_families(text)
            for sample in family.samples]


def test_metrics_tell_full_from_subnetwork_without_a_series_per_set(
    server: ServerProcess, reference: Callable[[str], Reference]
) -> None:
    model = "resnet20-cifar10"
    names = reference(model).names
    sets = [f"{names[i]},{i + 4}" for i in range(4)]
    v1_full, v1_sub = "/v1/models/{model}/classify", SUBNETWORK_PATH
    v2 = "/v2/models/{model}/infer"
    counters = [(v1_full, "full"), (v1_sub, "subnetwork"), (v2, "full"), (v2, "subnetwork")]
    before = [_requests(server, *key) for key in counters]
    images_before = [_images(server, network) for network in ("full", "subnetwork")]

    _answer(httpx.post(f"{server.url}/v1/models/{model}/classify", files=_form(IMAGES[:1]),
                       timeout=60))
    for remove in sets:
        _answer(_subnetwork(server, model, remove, IMAGES[:1]))
    _answer(_infer_v2(server, model, sets[0], IMAGES[:1]))
    _answer(_infer_v2(server, model, None, IMAGES[:1]))

    after = [_requests(server, *key) for key in counters]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 4, 1, 1]
    images_after = [_images(server, network) for network in ("full", "subnetwork")]
    assert [b - a for a, b in zip(images_before, images_after, strict=True)] == [2, 5]

    samples = _samples(server)
    values = {value for _, labels in samples for value in labels.values()}
    assert not [value for value in values if "layer" in value or "," in value]
    assert {labels["network"] for _, labels in samples if "network" in labels} <= {
        "full", "subnetwork", "none"
    }
    subnetwork_series = [
        labels for name, labels in samples
        if name == "resnet_serve_requests_total" and labels.get("endpoint") == v1_sub
        and labels.get("model") == model and labels.get("code") == "200"
    ]
    assert len(subnetwork_series) == 1, subnetwork_series


def _graph_of(server: ServerProcess, remove: str) -> str:
    graph: str = _answer(_subnetwork(server, TUNED_MODEL, remove, IMAGES[:1]))["graph"]
    return graph


def test_repeated_set_is_pruned_after_prune_after_requests_with_same_answers(
    pruning_server: ServerProcess, reference: Callable[[str], Reference]
) -> None:
    ref = reference(TUNED_MODEL)
    items = _random_third(ref)
    remove, removed = ",".join(items), ref.indices(items)

    masked = _answer(_subnetwork(pruning_server, TUNED_MODEL, remove))
    assert masked["graph"] == "masked"
    # Had each of those 20 images counted as a request, a build would have
    # started and, on two cores, finished within this pause.
    time.sleep(2.0)
    assert _answer(_subnetwork(pruning_server, TUNED_MODEL, remove))["graph"] == "masked"

    # The third request starts the build in the background.
    deadline = time.monotonic() + 60
    while _graph_of(pruning_server, remove) != "pruned":
        assert time.monotonic() < deadline, "no pruned graph 60 s after the third request"
        time.sleep(0.1)

    pruned = _answer(_subnetwork(pruning_server, TUNED_MODEL, remove))
    assert pruned["graph"] == "pruned"
    assert pruned["removed_blocks"] == masked["removed_blocks"]
    np.testing.assert_allclose(_probabilities(pruned), _probabilities(masked),
                               rtol=0, atol=PROBABILITY_ATOL)
    np.testing.assert_allclose(_probabilities(pruned), ref.probabilities(removed),
                               rtol=0, atol=PROBABILITY_ATOL)
    assert metric(pruning_server.url, "resnet_serve_subnetwork_graphs", model=TUNED_MODEL) == 1


def test_without_a_cache_a_repeated_set_stays_masked(masked_server: ServerProcess) -> None:
    graphs = [_graph_of(masked_server, "1,layer2.3") for _ in range(3)]
    # With a cache, the first request would have started a build by now.
    time.sleep(1.5)
    graphs.append(_graph_of(masked_server, "1,layer2.3"))

    assert graphs == ["masked"] * 4
    assert "built pruned graph" not in masked_server.log()
    assert metric(masked_server.url, "resnet_serve_subnetwork_graphs", model=TUNED_MODEL) == 0


def _batches(server: ServerProcess) -> tuple[float, float, float]:
    """(batches run, images in them, batches of one image) for TUNED_MODEL."""
    return (
        metric(server.url, "resnet_serve_batch_size_count", model=TUNED_MODEL),
        metric(server.url, "resnet_serve_batch_size_sum", model=TUNED_MODEL),
        metric(server.url, "resnet_serve_batch_size_bucket", model=TUNED_MODEL, le="1.0"),
    )


async def test_concurrent_requests_with_different_sets_share_batches(
    masked_server: ServerProcess, reference: Callable[[str], Reference]
) -> None:
    ref = reference(TUNED_MODEL)
    rng = np.random.default_rng(16)
    blocks = len(ref.names)
    jobs = [
        (row, sorted(int(i) for i in rng.choice(blocks, size=rng.integers(1, blocks),
                                                replace=False)))
        for row in range(16)
    ]
    assert len({tuple(removed) for _, removed in jobs}) == len(jobs)
    removes = [",".join(map(str, removed)) for _, removed in jobs]
    path = SUBNETWORK_PATH.format(model=TUNED_MODEL)

    sequential = [
        _probabilities(_answer(_subnetwork(masked_server, TUNED_MODEL, remove, [IMAGES[row]])))
        for (row, _), remove in zip(jobs, removes, strict=True)
    ]
    before = _batches(masked_server)
    async with httpx.AsyncClient(base_url=masked_server.url, timeout=60) as client:
        responses = await asyncio.gather(*(
            client.post(path, files=_form([IMAGES[row]]), params=_query(remove))
            for (row, _), remove in zip(jobs, removes, strict=True)
        ))
    after = _batches(masked_server)

    runs, images, singles = (b - a for a, b in zip(before, after, strict=True))
    assert images == len(jobs)
    assert runs - singles >= 1, "no batch held more than one request"
    for (row, removed), response, alone in zip(jobs, responses, sequential, strict=True):
        body = _answer(response)
        assert [block["index"] for block in body["removed_blocks"]] == removed
        together = _probabilities(body)
        np.testing.assert_allclose(together, alone, rtol=0, atol=PROBABILITY_ATOL)
        np.testing.assert_allclose(together, ref.probabilities(removed, [row]),
                                   rtol=0, atol=PROBABILITY_ATOL)


def test_repeated_remove_parameters_add_up(server: ServerProcess) -> None:
    model = MODELS[0]
    url = f"{server.url}{SUBNETWORK_PATH.format(model=model)}"
    repeated = httpx.post(url, files=_form(IMAGES[:2]), timeout=60,
                          params=[("top_k", "100"), ("remove", "3"), ("remove", "layer2.1,0")])
    joined = _subnetwork(server, model, "3,layer2.1,0", IMAGES[:2])

    assert _answer(repeated) == _answer(joined)
    assert [block["index"] for block in _answer(repeated)["removed_blocks"]] == [0, 3, 4]

    with_empty = httpx.post(url, files=_form(IMAGES[:2]), timeout=60,
                            params=[("top_k", "100"), ("remove", "3,layer2.1,0"), ("remove", "")])
    assert _answer(with_empty) == _answer(joined)


def test_remove_on_the_full_network_route_is_422(server: ServerProcess) -> None:
    model = MODELS[0]
    answer = httpx.post(f"{server.url}/v1/models/{model}/classify", params={"remove": "3"},
                        files=_form(IMAGES[:1]), timeout=60)
    assert answer.status_code == 422, answer.text
    assert "subnetwork/classify" in answer.json()["error"]
