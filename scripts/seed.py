"""Load the demo users and tasks: `.venv/bin/python scripts/seed.py [--reset]` (= `task-api seed`)."""

import sys

from impl.cli import main

if __name__ == "__main__":
    sys.exit(main(["seed", *sys.argv[1:]]))
