"""Tests of cnnlab.workflows."""
