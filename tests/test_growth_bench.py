"""The growth benchmark and its data generator as a smoke test (issue 17): CI runs
bench/growth.py at 10^4 and 10^5 events; the 10^7 run lives in bench/ (bench/README.md). And
bench/search_pg.py, searches on PostgreSQL, at 20,000 events. And bench/fanout.py's streams
over HTTP/2, many on each connection (how one process holds 20,000 streams: bench/README.md).

What is asserted is what a person running it sees: it exits 0, fills the store at the sizes
asked, and reports every path at each size with the generator's rate. Its figures are not
judged here (tests never time the service); the benchmark's own checks (full pages, the rare
word's matches, every resume's marker) are, through its exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import need, need_program
from tests.postgres_server import bindir

BENCH = Path(__file__).resolve().parent.parent / "bench"
PATHS = {
    "history_newest",
    "history_old",
    "room",
    "rooms_first",
    "rooms_deep",
    "unread_1000_rooms",
    "search_common",
    "search_rare",
    "search_one_letter",
    "resume_room_100",
    "resume_all_100",
    "resume_mentions_10000",
    "post",
    "batch_500",
    "startup",
    "bytes_per_event",
}


def run_bench(script: str, *args: str, timeout_s: float) -> tuple[dict[str, Any], str]:
    """Run a benchmark of bench/ with ``--timeout timeout_s``; its JSON line and its report
    (stderr), once it has exited 0 (its own checks passed)."""
    done = subprocess.run(
        [sys.executable, script, *args, "--timeout", str(timeout_s)],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=timeout_s + 60,
    )
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out, done.stderr


def test_growth_runs_at_ten_thousand_and_a_hundred_thousand_events() -> None:
    out, report = run_bench("growth.py", "--sizes", "10000,100000", "--reps", "2", timeout_s=420)
    assert out["failures"] == [] and "error" not in out
    assert list(out["sizes"]) == ["10000", "100000"]
    for size, figures in out["sizes"].items():
        assert set(figures) == PATHS, size
        assert all(value > 0 for value in figures.values()), (size, figures)
    made = out["generator"]
    assert made[0]["first_id"] == 1 and made[0]["last_id"] == 10_000
    # the measured writes add events, and a fill appends whole blocks of 20
    assert 100_000 <= made[-1]["last_id"] < 100_020
    assert all(m["events_per_s"] > 0 for m in made)
    assert set(out["ratios"]) == PATHS
    assert "| search_rare |" in report  # the table a person reads


def test_the_postgresql_search_benchmark_runs() -> None:
    """bench/search_pg.py on a small store: it exits 0 (its checks: the rare word found in its
    room alone, the absent word nowhere, the common word's page all matches) and reports each
    search in both rooms."""
    need(bindir() is not None, "PostgreSQL is not installed (Debian's postgresql package)")
    out, report = run_bench("search_pg.py", "--events", "20000", "--reps", "2", timeout_s=200)
    assert out["failures"] == [] and "error" not in out
    assert out["fill"]["last_id"] == 20_000
    found = {(s["q"], s["room"]): s["found"] for s in out["searches"]}
    assert len(found) == 12
    assert sorted(n for (q, _), n in found.items() if q == "quokka") == [0, 1]
    assert all(s["median_ms"] > 0 for s in out["searches"])
    assert "| the rare word (`quokka`) |" in report  # the table a person reads


def test_the_fanout_benchmark_multiplexes_its_streams_over_http2() -> None:
    """``fanout.py --http2``: 250 streams on three TLS connections that chose h2 (100, 100,
    50), each gets every message once, in order, none ended by the server; the server's memory
    per stream and its open files are reported. 20 messages of 4,000 characters (API.md's
    most): more than HTTP/2's default window of 64 KiB go through each stream."""
    need_program("openssl")  # the benchmark's self-signed certificate
    out, report = run_bench(
        "fanout.py", "--http2", "-S", "250", "-M", "20", "--h2-streams", "100",
        "--text-bytes", "4000", timeout_s=120,
    )  # fmt: skip
    assert out["http2"] is True and out["url"].startswith("https://127.0.0.1:")
    assert (out["connected"], out["h2_connections"], out["connect_errors"]) == (250, 3, 0)
    assert out["published"] == 20 and out["publish_errors"] == 0
    assert (out["expected_deliveries"], out["received"]) == (5000, 5000)
    counts = ("lost", "duplicates", "out_of_order", "unexpected", "bad_frames", "disconnects")
    assert {k: out[k] for k in counts} == dict.fromkeys(counts, 0)
    assert out["server"]["rss_per_conn_kb"] > 0
    assert 3 <= out["server_fds_connected"] < 250  # the streams share three sockets
    assert "250 subscribers, 20 messages" in report and "lost 0" in report
