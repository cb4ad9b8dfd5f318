"""Tests of cnnlab.reports."""
