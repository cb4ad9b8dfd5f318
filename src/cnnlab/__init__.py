"""cnnlab: train, compare and understand image classifiers on your own image datasets."""

__version__ = "0.1.0"
