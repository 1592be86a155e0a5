"""What the metrics and the traces cost: scripts/bench.py's four endpoints, each server's
requests a second over the baseline's (the benchmark's endpoint ratio), for `task-api serve`
with neither, with METRICS_PORT set (scraped every 5 s, as Prometheus would), with
OTEL_EXPORTER_OTLP_ENDPOINT set (every span exported to a local OTLP/HTTP receiver in a
process of its own, bench/otlp_sink.py), and the same with 1 % of the traces sampled
(OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.01), in one run.

    .venv/bin/python scripts/bench_observability.py [--rounds 3] [--duration 5] [--warmup 2]

One private PostgreSQL (pgserver, deleted at the end) with scripts/bench.py's bench user
(2,000 tasks); the five servers (the baseline and four `task-api serve --workers 1`) run
throughout. For each endpoint: a warm-up of each, then rounds in which every server is measured
once with wrk (-t2 -c16, as scripts/bench.py), the order rotating from round to round. Prints
each server's median req/s and p99, each ratio over the baseline (of the medians, and the
median of the rounds' ratios: a round's runs are seconds apart, so its ratio moves least with
the machine's other work) and each variant's ratio minus the ratio with neither. Figures also go
to artifacts/perf/observability.json. Also each server's CPU time a request (from /proc, over
each wrk run): on a machine shared with other work, throughput follows whoever else runs, CPU a
request much less. Nothing is asserted; exit status 1 only when requests failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import cpu_share
from bench.bench_script import bench_main as load_bench_main
from impl.platform.migrate import upgrade

bench_main = load_bench_main()
say = bench_main.say
OUT = REPO / "artifacts" / "perf" / "observability.json"
SCRAPE_EVERY_SECONDS = 5.0
# "again": a second server with nothing set (not run unless asked): how far two servers that
# do the same work land apart in one run, the noise any other difference is read against.
VARIANTS = ("off", "metrics", "tracing", "sampled", "again")
SAMPLED_RATIO = "0.01"


def start_variant(name: str, url: str, workdir: Path, extra: dict[str, str]) -> Any:
    task_api = Path(sys.executable).parent / "task-api"
    port = bench_main.free_port()
    return bench_main.Server(
        name, [str(task_api), "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"],
        {**bench_main.server_env(url), **extra}, port, workdir, workdir / f"{name}.log")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scraping(url: str, stop: threading.Event) -> threading.Thread:
    """GET the metrics every SCRAPE_EVERY_SECONDS until `stop`: their collection is paid for
    by the server's process, as it would be in production."""

    def loop() -> None:
        while not stop.wait(SCRAPE_EVERY_SECONDS):
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def measure_endpoint(bench: Any, servers: dict[str, Any], load: Any, rounds: int,
                     duration: float, warmup: float) -> dict[str, Any]:
    for server in servers.values():
        bench.measure(server, load, warmup, warmup=True)
    runs: dict[str, list[Any]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}  # microseconds a request
    names = list(servers)
    for number in range(rounds):
        order = names[number % len(names):] + names[:number % len(names)]
        for name in order:
            pid = servers[name].process.pid
            before = cpu_seconds(pid)
            result = bench.measure(servers[name], load, duration)
            used = (cpu_seconds(pid) - before) / max(result.requests, 1) * 1e6
            runs[name].append(result)
            cpu[name].append(used)
            say(f"  round {number + 1}  {name:<9} {result.rps:9.1f} req/s   "
                f"p99 {result.p99:7.2f} ms   CPU {used:6.0f} us/request")
    baseline = runs["baseline"]
    row: dict[str, Any] = {"endpoint": load.name}
    for name in names:
        rps = statistics.median(r.rps for r in runs[name])
        row[name] = {"rps": round(rps, 1),
                     "p99_ms": round(statistics.median(r.p99 for r in runs[name]), 3),
                     "cpu_us": round(statistics.median(cpu[name]), 1),
                     "runs": [r.brief() for r in runs[name]]}
        if name != "baseline":
            row[name]["ratio"] = round(rps / statistics.median(r.rps for r in baseline), 3)
            row[name]["round_ratio"] = round(statistics.median(
                mine.rps / base.rps for mine, base in zip(runs[name], baseline, strict=True)), 3)
    for name in names:
        if name in ("baseline", "off"):
            continue
        # The server's CPU a request, over off's: what the machine's other work moves least
        # (throughput on a shared machine follows whoever else is running).
        row[name]["cpu_over_off"] = round(row[name]["cpu_us"] / row["off"]["cpu_us"], 3)
        row[name]["minus_off"] = round(row[name]["ratio"] - row["off"]["ratio"], 3)
        row[name]["round_minus_off"] = round(
            row[name]["round_ratio"] - row["off"]["round_ratio"], 3)
    return row


def report(rows: list[dict[str, Any]]) -> None:
    variants = [name for name in VARIANTS[1:] if name in rows[0]]
    say("\nendpoint ratio (ours / baseline req/s; median of the rounds' ratios in brackets) "
        "and each variant minus off")
    say(f"  {'endpoint':<24} {'off':>15}" + "".join(
        f" {name:>15} {'- off':>15}" for name in variants))
    for row in rows:
        cells = [f"{row['off']['ratio']:.3f} ({row['off']['round_ratio']:.3f})"]
        for name in variants:
            cells.append(f"{row[name]['ratio']:.3f} ({row[name]['round_ratio']:.3f})")
            cells.append(f"{row[name]['minus_off']:+.3f} ({row[name]['round_minus_off']:+.3f})")
        say(f"  {row['endpoint']:<24} " + " ".join(f"{c:>15}" for c in cells))
    say("\nserver CPU a request, us (median of the rounds), and over off")
    for row in rows:
        say(f"  {row['endpoint']:<24} baseline {row['baseline']['cpu_us']:6.0f}  "
            f"off {row['off']['cpu_us']:6.0f}  " + "  ".join(
                f"{name} {row[name]['cpu_us']:6.0f} ({row[name]['cpu_over_off']:.3f})"
                for name in variants))
    say("\np99 ms (median of the rounds)")
    for row in rows:
        say(f"  {row['endpoint']:<24} " + "  ".join(
            f"{name} {row[name]['p99_ms']:.2f}" for name in ("baseline", "off", *variants)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--variants", default="metrics,tracing,sampled",
                        help="which besides off: metrics, tracing, sampled (the default: all "
                        "three), again (a second server with nothing set; with all three, six "
                        "servers' pools exceed the embedded PostgreSQL's connections)")
    parser.add_argument("--endpoints", default="",
                        help="only the endpoints whose name contains this (e.g. 'GET')")
    args = parser.parse_args()
    bench_main.ensure_wrk()
    from impl.platform.embedded import pgserver_module

    started = time.monotonic()
    load_at_start = round(os.getloadavg()[0], 2)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="task-api-bench-observability-") as tmp:
        workdir = Path(tmp)
        pg = pgserver_module().get_server(workdir / "pg", cleanup_mode="delete")
        servers: dict[str, Any] = {}
        stop_scraping = threading.Event()
        sink_port = bench_main.free_port()
        sink = subprocess.Popen([sys.executable, "-m", "bench.otlp_sink", str(sink_port)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            url = pg.get_uri()
            upgrade(url)
            loaded = asyncio.run(bench_main.load_data(url, (), 0))
            asyncio.run(bench_main.create_ceiling(url))  # the writes' reset expects its table
            ids_file = workdir / "ids.txt"
            ids_file.write_text("\n".join(loaded["ids"]) + "\n")
            config = bench_main.Config(
                duration=args.duration, rounds=args.rounds, warmup=args.warmup,
                scale_seconds=0, scale_rounds=0, sizes=(), out=OUT.parent, quick=True)
            bench = bench_main.Bench(config, url, ids_file,
                                     cpu_share.postmaster_pid(workdir / "pg"))
            metrics_port = bench_main.free_port()
            servers["baseline"] = bench_main.start_baseline(url, workdir)
            servers["off"] = start_variant("off", url, workdir, {})
            chosen = args.variants.split(",")
            if "metrics" in chosen:
                servers["metrics"] = start_variant(
                    "metrics", url, workdir, {"METRICS_PORT": str(metrics_port)})
            if "tracing" in chosen:
                servers["tracing"] = start_variant("tracing", url, workdir, {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}"})
            if "sampled" in chosen:
                servers["sampled"] = start_variant("sampled", url, workdir, {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": SAMPLED_RATIO})
            if "again" in chosen:
                servers["again"] = start_variant("again", url, workdir, {})
            for server in servers.values():
                server.wait_ready()
            servers["baseline"].name = "baseline"
            if "metrics" in servers:
                scraping(f"http://127.0.0.1:{metrics_port}/metrics", stop_scraping)
            endpoints = [load for load in bench_main.ENDPOINTS if args.endpoints in load.name]
            say(f"bench_observability: {len(endpoints)} endpoints x {args.rounds} "
                f"rounds x {len(servers)} servers x {args.duration:g} s, wrk -t2 -c16\n")
            for load in endpoints:
                say(load.name)
                rows.append(measure_endpoint(bench, servers, load, args.rounds, args.duration,
                                             args.warmup))
        finally:
            stop_scraping.set()
            for server in servers.values():
                server.stop()
            sink.terminate()
            received = sink.communicate(timeout=30)[0].strip()
            pg.cleanup()
    report(rows)
    say(f"\nspans received by the OTLP sink: {received}")
    results = {"rows": rows, "rounds": args.rounds, "duration_s": args.duration,
               "sink": json.loads(received or "{}"), "cpus": os.cpu_count(),
               "load_average": {"start": load_at_start, "end": round(os.getloadavg()[0], 2)},
               "elapsed_s": round(time.monotonic() - started, 1)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    say(f"figures: {OUT.relative_to(REPO)}; load average {load_at_start} at start, "
        f"{results['load_average']['end']} at end")
    if bench.failures:
        say("requests failed: " + "; ".join(bench.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
