"""ONNX Runtime sessions, graph pruning and per-model runtime state."""
