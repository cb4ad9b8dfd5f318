"""Tests of cnnlab.data."""
