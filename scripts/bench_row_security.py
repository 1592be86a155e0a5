"""What row-level security (migration 0011) costs each benchmarked endpoint over HTTP: the API
before it and after it, side by side on one database, in one run.

    .venv/bin/python scripts/bench_row_security.py [--before 0e4d538] [--rounds 6] [--duration 4]

BEFORE is a commit without the wall (default 0e4d538, main when this branch was made),
unpacked with `git archive` into a temporary folder and run from there (PYTHONPATH before this checkout);
it connects as PostgreSQL's superuser, as servers did before (its statements carry no caller,
and a superuser passes every policy). AFTER is this checkout, connected as the API's role
`task_api`, held by the policies. One private PostgreSQL (pgserver, in a temporary folder)
migrated to this checkout's head, with scripts/bench.py's data (the bench user's 2,000 tasks
among others'); both `task-api serve --workers 1` run throughout. scripts/bench.py's wrk runs
(-t2 -c16) of GET /api/tasks?limit=20, GET /api/tasks/{id}, POST, PATCH and DELETE, a warm-up each,
then --rounds runs per version alternating (the order flipping every round), writes put back
after each run. Prints req/s per version (medians) and AFTER / BEFORE per endpoint: the ratio of
the medians, and the median of each round's ratio (its two runs are seconds apart: the least
moved by other work on the machine). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_script import bench_main
from impl.platform.embedded import api_role_url, pgserver_module
from impl.platform.migrate import upgrade


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="0e4d538", help="the commit without the wall")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4)
    parser.add_argument("--others", type=int, default=20, help="other users of 1,000 tasks")
    args = parser.parse_args()
    bench = bench_main()
    bench.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="task-api-rls-bench-") as tmp:
        workdir = Path(tmp)
        before_code = workdir / "before"
        before_code.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before_code)], input=archive, check=True)
        pg = pgserver_module().get_server(workdir / "pg", cleanup_mode="delete")
        servers = []
        try:
            url = pg.get_uri()
            upgrade(url)
            loaded = asyncio.run(bench.load_data(url, (), args.others))
            asyncio.run(bench.create_ceiling(url))  # bench.py's write runs put it back too
            ids_file = workdir / "ids.txt"
            ids_file.write_text("\n".join(loaded["ids"]) + "\n")
            task_api = str(Path(sys.executable).parent / "task-api")

            def start(name: str, database_url: str, extra: dict[str, str]) -> object:
                port = bench.free_port()
                env = {**bench.server_env(database_url), **extra}
                return bench.Server(
                    name, [task_api, "serve", "--host", "127.0.0.1", "--port", str(port),
                           "--workers", "1"], env, port, workdir, workdir / f"{name}.log")

            before = start("before (no RLS)", url, {"PYTHONPATH": str(before_code)})
            after = start("after (RLS, task_api)", api_role_url(url), {})
            servers = [before, after]
            for server in servers:
                server.wait_ready()
            config = bench.Config(duration=args.duration, rounds=args.rounds, warmup=2,
                                  scale_seconds=1, scale_rounds=1, sizes=(), out=workdir,
                                  quick=True)
            runner = bench.Bench(config, url, ids_file,
                                 bench.cpu_share.postmaster_pid(workdir / "pg"))
            print(f"load average at the start: {os.getloadavg()[0]:.2f}", flush=True)
            lines = []
            for load in bench.ENDPOINTS:
                print(load.name, flush=True)
                runs_before, runs_after = runner.compare(before, after, load)
                rps_before = statistics.median(r.rps for r in runs_before)
                rps_after = statistics.median(r.rps for r in runs_after)
                per_round = [a.rps / b.rps for a, b in zip(runs_after, runs_before, strict=True)]
                lines.append(
                    f"| `{load.name}` | {rps_before:,.0f} | {rps_after:,.0f} | "
                    f"{rps_after / rps_before:.2f} | {statistics.median(per_round):.2f} "
                    f"({min(per_round):.2f}-{max(per_round):.2f}) |")
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
            print("\n| endpoint | before req/s | after req/s | after / before (medians) | "
                  "median of the rounds' ratios (range) |\n|---|---:|---:|---:|---:|")
            print("\n".join(lines))
            if runner.failures:
                print("FAILED REQUESTS:\n" + "\n".join(runner.failures))
                return 1
        finally:
            for server in servers:
                server.stop()  # type: ignore[attr-defined]
            pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
