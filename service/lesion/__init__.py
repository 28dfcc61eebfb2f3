"""Offline evaluation and lesion studies through the serving runtime.

Images go through the service's own decoding and preprocessing and through
the same ONNX Runtime path (`service.runtime.model.ModelRuntime`), so the
figures describe what the service computes.
"""
