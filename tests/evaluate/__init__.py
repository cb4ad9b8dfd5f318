"""Tests of cnnlab.evaluate."""
