"""Helpers for scripts/bench.py: the baseline app, its SQL, the wrk script."""
