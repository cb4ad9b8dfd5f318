"""Unit tests of cnnlab.train: the epoch loop and each callback, beside the end-to-end tests."""
