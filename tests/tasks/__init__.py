"""Tests of impl/tasks/: the operations, listing and counting, the fields, the seed, load."""
