"""ResNet definitions, the model manifest, weights, preprocessing and export.

Importing this package does not import PyTorch: the serving runtime reads the
manifest, labels and preprocessing from here without it.
"""
