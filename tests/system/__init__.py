"""Tests of impl/system/: the probes."""
