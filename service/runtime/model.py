"""One loaded model: its masked session, its pruned sub-network sessions, its facts.

`run_batch` is what the batcher calls, on a worker thread: it splits a batch by
which graph serves each row (a cached pruned graph for a frequent set of
removed blocks, else the masked graph) and runs each group once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from models.manifest import Preprocessing
from models.repository import ModelFiles
from service.runtime.pruning import prune_graph
from service.runtime.session import active_provider, create_session, warm_up

logger = logging.getLogger(__name__)

MASKED = "masked"
PRUNED = "pruned"

RemovedSet = frozenset[int]


@dataclass
class BatchOutput:
    logits: np.ndarray
    probabilities: np.ndarray
    graphs: list[str]


class SubnetworkCache:
    """Pruned sessions for the most recently used sets of removed blocks.

    A set must be asked for by `prune_after` requests before its graph is
    built, in the background, so that one-off sets never pay for a session
    build. At most `capacity` sessions are kept (least recently used goes
    first); the request counts are bounded the same way.
    """

    def __init__(self, capacity: int, prune_after: int, build: Any) -> None:
        self.capacity = capacity
        self.prune_after = prune_after
        self._build = build
        self._sessions: OrderedDict[RemovedSet, ort.InferenceSession] = OrderedDict()
        self._counts: OrderedDict[RemovedSet, int] = OrderedDict()
        self._building: set[RemovedSet] = set()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="prune")

    def lookup(self, removed: RemovedSet) -> ort.InferenceSession | None:
        """The pruned session for `removed`, or None if none is built."""
        if self.capacity == 0 or not removed:
            return None
        with self._lock:
            session = self._sessions.get(removed)
            if session is not None:
                self._sessions.move_to_end(removed)
            return session

    def count_request(self, removed: RemovedSet) -> None:
        """Count one request for `removed`; the `prune_after`-th starts its build.

        Counted per request, not per image or batch row: otherwise a single
        request of several images would build a graph for a one-off set.
        """
        if self.capacity == 0 or not removed:
            return
        with self._lock:
            if removed in self._sessions or removed in self._building:
                return
            count = self._counts.pop(removed, 0) + 1
            self._counts[removed] = count
            while len(self._counts) > 64 * self.capacity:
                self._counts.popitem(last=False)
            if count >= self.prune_after:
                self._building.add(removed)
                self._executor.submit(self._build_and_store, removed)

    def _build_and_store(self, removed: RemovedSet) -> None:
        try:
            session = self._build(removed)
        except Exception:
            logger.exception("building the pruned graph without blocks %s failed",
                             sorted(removed))
            with self._lock:
                self._building.discard(removed)
            return
        # Stored and marked done under one lock: in between, a request would
        # find the set neither built nor building and start a second build.
        with self._lock:
            self._building.discard(removed)
            self._sessions[removed] = session
            self._counts.pop(removed, None)
            while len(self._sessions) > self.capacity:
                self._sessions.popitem(last=False)

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Block until no build is in flight (tests and benchmarks use this)."""
        deadline = time.monotonic() + timeout_s
        while self._building and time.monotonic() < deadline:
            time.sleep(0.01)

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelRuntime:
    """A model from the repository, loaded into ONNX Runtime and warmed up."""

    def __init__(
        self,
        files: ModelFiles,
        providers: list[str],
        threads: int,
        cache_size: int = 8,
        prune_after: int = 3,
    ) -> None:
        started = time.perf_counter()
        self.name = files.name
        self.version = files.version
        self.metadata = files.read_metadata()
        self.labels: list[str] = self.metadata["labels"]
        self.preprocessing = Preprocessing(**{
            key: tuple(value) if isinstance(value, list) else value
            for key, value in self.metadata["preprocessing"].items()
        })
        self.blocks: list[dict[str, Any]] = self.metadata["blocks"]
        self.input_shape = tuple(self.metadata["input"]["shape"][1:])
        self._providers = providers
        self._threads = threads
        self._proto = onnx.load(str(files.onnx_path))

        label = f"{self.name}:{self.version}"
        self.session = create_session(
            self._proto.SerializeToString(), providers, threads, label
        )
        self.provider = active_provider(self.session)
        self.subnetworks = SubnetworkCache(cache_size, prune_after, self._build_pruned)
        self.warm_up()
        self.load_seconds = time.perf_counter() - started

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def pretrained(self) -> bool:
        return bool(self.metadata.get("pretrained", False))

    def warm_up(self) -> None:
        for batch in (1, 4):
            inputs = np.zeros((batch, *self.input_shape), dtype=np.float32)
            warm_up(self.session, self.feeds(inputs, [frozenset()] * batch))

    def run_batch(self, inputs: np.ndarray, removed: Sequence[RemovedSet]) -> BatchOutput:
        """Logits and probabilities for `inputs` ([B, 3, H, W]), row i without
        the blocks in `removed[i]`. One ONNX Runtime call per graph used."""
        batch = len(inputs)
        logits = np.empty((batch, len(self.labels)), dtype=np.float32)
        probabilities = np.empty_like(logits)
        graphs = [MASKED] * batch

        groups: dict[int, tuple[ort.InferenceSession, list[int]]] = {}
        masked_rows = []
        for row, key in enumerate(removed):
            session = self.subnetworks.lookup(key)
            if session is None:
                masked_rows.append(row)
            else:
                groups.setdefault(id(session), (session, []))[1].append(row)

        if masked_rows:
            rows = np.asarray(masked_rows)
            feeds = self.feeds(inputs[rows], [removed[i] for i in masked_rows])
            logits[rows], probabilities[rows] = self.session.run(None, feeds)
        for session, row_list in groups.values():
            rows = np.asarray(row_list)
            logits[rows], probabilities[rows] = session.run(None, {"input": inputs[rows]})
            for row in row_list:
                graphs[row] = PRUNED
        return BatchOutput(logits, probabilities, graphs)

    def feeds(self, inputs: np.ndarray, removed: Sequence[RemovedSet]) -> dict[str, np.ndarray]:
        mask = np.ones((len(inputs), self.num_blocks), dtype=np.float32)
        for row, key in enumerate(removed):
            if key:
                mask[row, list(key)] = 0.0
        return {"input": np.ascontiguousarray(inputs), "block_mask": mask}

    def pruned_graph(self, removed: RemovedSet) -> onnx.ModelProto:
        """The exported graph with the blocks in `removed` structurally removed."""
        return prune_graph(self._proto, [block["onnx"] for block in self.blocks], removed)

    def _build_pruned(self, removed: RemovedSet) -> ort.InferenceSession:
        started = time.perf_counter()
        proto = self.pruned_graph(removed)
        session = create_session(
            proto.SerializeToString(), self._providers, self._threads,
            f"{self.name}:{self.version} pruned",
        )
        warm_up(session, {"input": np.zeros((1, *self.input_shape), dtype=np.float32)})
        logger.info(
            "built pruned graph of %s without %d blocks in %.3f s",
            self.name, len(removed), time.perf_counter() - started,
        )
        return session

    def close(self) -> None:
        self.subnetworks.close()
