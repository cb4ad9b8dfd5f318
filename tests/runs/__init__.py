"""Unit tests of cnnlab.runs."""
