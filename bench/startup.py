"""Start-up: how long ``python -m chat serve`` takes to answer ``/healthz`` on a new SQLite
file, the CPU the process spent getting there and its resident memory then. Every start pays
it: the first one, each worker a supervisor replaces, each test of the suite that starts a
server of its own (most of what ``.ci/run`` spends); each command (``users``, ``tokens``,
``migrate``, ``post``) pays the imports of it.

    .venv/bin/python bench/startup.py                # 10 starts
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/startup.py

Prints the median and the best of the starts (wall seconds to /healthz, CPU seconds of the
server, RSS MiB) on stderr and one JSON line on stdout. The server is pinned to one core and
this process to the other (``support.start_server``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from support import Server, start_server, stop_server


def one_start() -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="chat-startup-") as tmp:
        began = time.monotonic()
        proc, _ = start_server(tmp)
        wall = time.monotonic() - began
        server = Server(proc.pid)
        cpu, rss_kb = server.cpu_s(), server.rss_kb()
        stop_server(proc)
        assert cpu is not None and rss_kb is not None
        return wall, cpu, rss_kb / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--starts", type=int, default=10, help="starts to measure")
    args = parser.parse_args()
    one_start()  # warm the page cache and the bytecode files
    runs = [one_start() for _ in range(args.starts)]
    report: dict[str, float] = {}
    for i, name in enumerate(("wall_s", "cpu_s", "rss_mib")):
        values = [run[i] for run in runs]
        report[f"{name}_median"] = round(statistics.median(values), 3)
        report[f"{name}_best"] = round(min(values), 3)
    print(
        f"{args.starts} starts: to /healthz {report['wall_s_median']:.2f} s median "
        f"({report['wall_s_best']:.2f} best), server CPU {report['cpu_s_median']:.2f} s "
        f"({report['cpu_s_best']:.2f}), RSS {report['rss_mib_median']:.1f} MiB",
        file=sys.stderr,
    )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
