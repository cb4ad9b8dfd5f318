"""Tests of cnnlab.scratch."""
