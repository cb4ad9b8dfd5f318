"""Tests of cnnlab.cli."""
