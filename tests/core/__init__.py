"""Tests of cnnlab.core."""
