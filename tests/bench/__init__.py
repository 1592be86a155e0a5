"""Tests of bench/: the baseline answers like the API."""
