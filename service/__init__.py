"""resnet-serve: an inference service for residual networks and their sub-networks."""

__version__ = "0.1.0"
