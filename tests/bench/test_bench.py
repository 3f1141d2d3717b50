"""The benchmark: its pure pieces called directly, then small real runs checked for correctness.

No test here asserts a speed: the runs are tiny and check counts, integrity and the report's
shape, so they hold on any machine.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner

from groupchat.bench import runner as bench
from groupchat.bench.loadgen import (
    ANSWER_NAME,
    MODE_HANDSHAKE,
    MODE_JSON,
    REFUSED,
    WAIT,
    WELCOMED,
    NcatDemux,
    SequenceChecker,
    handshake_step,
    make_line,
    scan_events,
    scan_lines,
)
from groupchat.bench.relay import NaiveRelay, RelayHandler
from groupchat.bench.runner import BenchError, make_plan, output_file, percentile, run_bench, summarize
from groupchat.cli import cli
from groupchat.jsonl import render_event

from conftest import GROUPCHAT, REPO, Peer, serve_in_thread

SMALL = dict(clients=6, senders=2, messages=200, workers=2, timeout=15)


# -- sequence checking ------------------------------------------------------------------------

def test_a_servers_output_file_keeps_each_line_however_often_the_bench_reads_it_back():
    output = output_file()
    child = os.dup(output.fileno())  # a server writes through the same open file, as after fork
    try:
        os.write(child, b"groupchat serving on 127.0.0.1:7111\n")
        output.seek(0)  # the bench reads from the start while the server goes on writing
        os.write(child, b"Waiting for clients...\n")
        output.seek(0)
        assert output.read() == "groupchat serving on 127.0.0.1:7111\nWaiting for clients...\n"
    finally:
        os.close(child)
        output.close()


def test_lines_in_order_from_every_expected_sender_make_a_complete_receiver():
    check = SequenceChecker(senders=[0, 1], count=3)
    for seq in range(3):
        assert check.record(0, seq) and check.record(1, seq)
    assert check.complete
    assert (check.expected, check.received, check.lost) == (6, 6, 0)
    assert (check.duplicated, check.out_of_order, check.unexpected) == (0, 0, 0)


def test_a_gap_never_filled_is_lost():
    check = SequenceChecker(senders=[0], count=5)
    for seq in (0, 1, 3, 4):
        check.record(0, seq)
    assert (check.received, check.lost, check.out_of_order) == (4, 1, 0)
    assert not check.complete


def test_lines_that_never_came_at_the_end_are_lost():
    check = SequenceChecker(senders=[0, 1], count=4)
    check.record(0, 0)
    assert check.lost == 7


def test_a_line_after_a_later_one_is_out_of_order_not_lost():
    check = SequenceChecker(senders=[0], count=4)
    for seq in (0, 2, 1, 3):
        check.record(0, seq)
    assert (check.received, check.out_of_order, check.lost, check.duplicated) == (4, 1, 0, 0)
    assert check.complete


@pytest.mark.parametrize("order", [(0, 0, 1), (0, 1, 0), (0, 2, 1, 1)])
def test_a_line_seen_twice_is_duplicated_and_counted_once(order):
    check = SequenceChecker(senders=[0], count=3)
    results = [check.record(0, seq) for seq in order]
    assert check.duplicated == 1
    assert results.count(False) == 1
    assert check.received == len(set(order))


@pytest.mark.parametrize("sender, seq", [(7, 0), (0, -1), (0, 3)])
def test_a_line_from_no_expected_sender_or_out_of_range_is_unexpected(sender, seq):
    check = SequenceChecker(senders=[0, 1], count=3)
    assert not check.record(sender, seq)
    assert (check.unexpected, check.received) == (1, 0)


def test_a_receiver_is_finished_once_every_senders_last_line_is_in():
    check = SequenceChecker(senders=[0, 1], count=3)
    for seq in (0, 2):
        check.record(0, seq)
    assert not check.finished
    check.record(1, 2)
    assert check.finished and check.lost == 3


def test_a_sender_never_expects_its_own_lines():
    check = SequenceChecker(senders=(s for s in [0, 1, 2] if s != 1), count=2)
    assert check.expected == 4
    assert not check.record(1, 0)


# -- the bench line and the ncat stream -------------------------------------------------------

@pytest.mark.parametrize("size", [20, 64, 200, 4096])
def test_a_bench_line_has_the_asked_size_and_scans_back(size):
    line = make_line(12, 345, 6789012345, size)
    assert len(line) == size and line.endswith(b"\n")
    assert scan_lines(b"[12:00] <c12> " + line) == [(12, 345, 6789012345)]


def test_a_bench_line_is_never_shorter_than_its_header():
    line = make_line(1, 2, 3, 1)
    assert line == b"~1:2:3:\n"


def test_lines_that_are_not_bench_lines_are_skipped():
    data = b"*** Welcome, c1! Here now: c0.\n[12:00] *** c2 joined\n" + make_line(0, 0, 5, 32)
    assert scan_lines(data) == [(0, 0, 5)]


def test_ncat_chunks_cut_mid_line_are_put_back_together_per_user():
    demux = NcatDemux()
    out = demux.feed(b"<user4> ~4:0:1:\n~4:1:")
    out += demux.feed(b"<user5> ~5:0:1:\n")
    out += demux.feed(b"<user4> 1:\n")
    assert scan_lines(out) == [(4, 0, 1), (5, 0, 1), (4, 1, 1)]


def test_an_ncat_prefix_cut_between_reads_is_recognised():
    demux = NcatDemux()
    assert demux.feed(b"<user4> ~4:0:1:\n<use") == b"~4:0:1:\n"
    assert demux.feed(b"r5> ~5:0:1:\n") == b"~5:0:1:\n"


def test_ncat_announcements_pass_through_as_lines_that_are_not_bench_lines():
    demux = NcatDemux()
    out = demux.feed(b"<announce> 127.0.0.1 is connected as <user6>.\n"
                     b"<announce> already connected: 127.0.0.1 as <user4>.\n<user4> ~4:0:9:xx\n")
    assert scan_lines(out) == [(4, 0, 9)]


def test_one_whole_ncat_chunk_takes_the_short_way():
    demux = NcatDemux()
    assert demux.feed(b"<user4> ~4:0:1:\n~4:1:1:\n") == b"~4:0:1:\n~4:1:1:\n"


# -- JSON Lines mode --------------------------------------------------------------------------

def msg_event(text: str, sender: str = "c3") -> bytes:
    return render_event("msg", id=9, room="lobby", ts="2026-12-01T18:40:12.345Z", **{"from": sender},
                        text=text)


def test_bench_lines_are_found_in_the_text_of_msg_events_only():
    line = make_line(3, 7, 1000, 64).decode().rstrip("\n")
    data = (render_event("join", id=1, room="lobby", ts="2026-12-01T18:40:12.345Z", names=["c5"], count=1)
            + msg_event(line) + msg_event("hello ~4:1:2: in passing")  # not a bench line: it does not start one
            + render_event("notice", text=line) + msg_event(make_line(5, 0, 2000, 32).decode().rstrip("\n")))
    assert scan_events(data) == ([("3", "7", "1000"), ("5", "0", "2000")], 0, 0)


def test_missed_events_are_counted_and_a_line_that_is_no_event_is_unexpected():
    data = (msg_event("~3:0:1:") + render_event("missed", count=4) + b"[12:00] <c3> ~3:1:1:\n"
            + b"42\n" + render_event("missed", count=2) + msg_event("~3:2:1:"))
    assert scan_events(data) == ([("3", "0", "1"), ("3", "2", "1")], 6, 2)
    assert scan_events(b"") == ([], 0, 0)


@pytest.mark.parametrize("line, step", [
    (b"*** What is your name?", WAIT),  # sent before the switch: the prompt comes again as an event
    (render_event("mode", mode="json"), WAIT),
    (render_event("prompt", **{"for": "name"}), ANSWER_NAME),
    (render_event("prompt", **{"for": "password"}), WAIT),
    (render_event("welcome", name="c1", room="lobby", names=[], count=0), WELCOMED),
    (render_event("error", code="NAME_TAKEN", message="taken"), REFUSED),
    (render_event("bye", code="FULL", message="the server is full"), REFUSED),
    (b'{"v":1,"type":', REFUSED),
])
def test_the_json_handshake_is_read_from_events(line, step):
    assert handshake_step(MODE_JSON, line.rstrip(b"\n"))[0] == step


def test_the_text_handshake_is_unchanged():
    assert handshake_step(MODE_HANDSHAKE, b"*** What is your name?") == (ANSWER_NAME, "")
    assert handshake_step(MODE_HANDSHAKE, b"*** Welcome, c1! Nobody else is here yet.") == (WELCOMED, "")
    assert handshake_step(MODE_HANDSHAKE, render_event("prompt", **{"for": "name"})) == (WAIT, "")


def test_json_mode_needs_groupchat_among_the_targets():
    with pytest.raises(BenchError, match="unknown mode"):
        make_plan("fanout", mode="xml")
    result = CliRunner().invoke(cli, ["bench", "fanout", "--mode", "json", "--target", "relay"])
    assert result.exit_code == 1
    assert result.output == "Error: JSON mode is groupchat's: the relay and ncat speak only text\n"


# -- statistics and the report ----------------------------------------------------------------

def test_percentile_by_nearest_rank():
    values = sorted([5, 1, 4, 2, 3])
    assert [percentile(values, q) for q in (0, 20, 50, 90, 100)] == [1, 1, 3, 5, 5]
    assert math.isnan(percentile([], 50))


def test_percentile_of_many_values():
    values = list(range(1000))
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 99.9)) == (499, 989, 998)


def _result(target: str, rate: float, p50: float = 1.0, **changes) -> bench.RoundResult:
    base = dict(target=target, round=1, ok=True, expected=10, delivered=10, lost=0, duplicated=0,
                out_of_order=0, unexpected=0, dropped_clients=0, shed=0, timed_out=False, seconds=1.0,
                deliveries_per_second=rate,
                latency_ms={"p50": p50, "p90": p50, "p99": p50, "max": p50},
                connect_seconds=0.1, settle_seconds=0.0, server_cpu=1.0, server_peak_rss_mb=20.0,
                server_peak_threads=3, loadgen_cpu=0.5, loadgen_busiest_worker=0.3, workers=2)
    return bench.RoundResult(**{**base, **changes})


def test_summary_is_per_target_medians_and_ratios_to_the_relay():
    results = [_result("groupchat", 300, p50=2), _result("relay", 100, p50=1),
               _result("groupchat", 100, p50=4), _result("relay", 200, p50=1),
               _result("groupchat", 200, p50=3), _result("relay", 300, p50=1)]
    summary = summarize(results)
    assert summary["reference"] == "relay"
    assert summary["medians"]["groupchat"]["deliveries_per_second"] == 200
    assert summary["ratios"]["groupchat"]["deliveries_per_second"] == 1.0
    assert summary["ratios"]["groupchat"]["p50"] == 3.0
    table = bench.format_table(summary)
    assert re.search(r"latency p50 \(ms\)\s+3\.00 \(x3\.00\)\s+1\.00", table)


def test_without_the_relay_there_are_no_ratios():
    summary = summarize([_result("groupchat", 100)])
    assert summary["ratios"] == {} and summary["reference"] is None
    assert "(x" not in bench.format_table(summary)


def test_a_metric_nobody_measured_is_left_out_of_the_table():
    summary = summarize([_result("groupchat", 100, server_cpu=None, server_peak_rss_mb=None,
                                 server_peak_threads=None)])
    assert "server" not in bench.format_table(summary)


def test_a_failed_round_says_what_went_wrong():
    line = bench.describe_round(_result("groupchat", 100, ok=False, lost=3, duplicated=1,
                                        errors=["c4: connection lost: closed by the server"]), 1)
    assert "FAILED: 3 lost, 1 duplicated (c4: connection lost" in line


# -- plans ------------------------------------------------------------------------------------

def test_each_scenario_has_the_issues_defaults():
    assert make_plan("fanout") == bench.LoadPlan("fanout", 50, 5, 2000, 64, 0.0, "text")
    assert make_plan("latency").connections == 50 and make_plan("latency").rate == 100
    assert make_plan("scale", clients=10_000).connections == 10_001


def test_expected_lines_are_every_senders_at_every_other_client():
    assert make_plan("fanout", clients=6, senders=2, messages=200).expected == 2 * 200 * 5


@pytest.mark.parametrize("changes, message", [
    (dict(scenario="chaos"), "unknown scenario"),
    (dict(clients=1, senders=1), "at least two clients"),
    (dict(senders=0), "at least 1"),
    (dict(size=5000), "--size"),
    (dict(rate=-1), "negative"),
])
def test_a_plan_that_makes_no_sense_is_refused(changes, message):
    scenario = changes.pop("scenario", "fanout")
    with pytest.raises(BenchError, match=message):
        make_plan(scenario, **changes)


def test_run_bench_refuses_bad_targets_and_half_addresses():
    with pytest.raises(BenchError, match='unknown target "irc"'):
        run_bench("fanout", targets=["irc"], out=io.StringIO())
    with pytest.raises(BenchError, match="both --host and --port"):
        run_bench("fanout", host="127.0.0.1", out=io.StringIO())
    with pytest.raises(BenchError, match="one target"):
        run_bench("fanout", targets=["groupchat", "relay"], host="127.0.0.1", port=1,
                  out=io.StringIO())


# -- /proc ------------------------------------------------------------------------------------

def test_proc_status_and_stat_are_read_for_this_very_process():
    import os

    monitor = bench.ServerMonitor([os.getpid()])
    try:
        assert monitor.peak_rss_bytes() > 1_000_000
        assert monitor.cpu_seconds() > 0
        assert int(monitor.status(os.getpid())["Threads"]) >= 2  # this thread and the sampler
    finally:
        monitor.close()


# -- the naive relay --------------------------------------------------------------------------

@pytest.fixture
def start_relay() -> Iterator[Callable[..., NaiveRelay]]:
    relays: list[tuple[NaiveRelay, threading.Thread]] = []

    def start(handler: type = RelayHandler) -> NaiveRelay:
        relay = NaiveRelay(("127.0.0.1", 0))
        relay.RequestHandlerClass = handler
        relays.append((relay, serve_in_thread(relay)))
        return relay

    yield start
    for relay, thread in relays:
        relay.shutdown()
        relay.server_close()
        thread.join(10)


def test_the_relay_speaks_groupchats_handshake_and_relays_to_everyone_else(start_relay):
    relay = start_relay()
    alice, bob, carol = (Peer(relay.server_address) for _ in range(3))
    try:
        assert alice.join("alice") == "*** Welcome, alice!"
        bob.join("bob")
        carol.join("carol")
        alice.say("hi all")
        assert bob.next_line() == "<alice> hi all"
        assert carol.next_line() == "<alice> hi all"
        bob.say("hi alice")
        assert alice.next_line() == "<bob> hi alice"  # not her own line first
    finally:
        for peer in (alice, bob, carol):
            peer.close()


# -- real runs --------------------------------------------------------------------------------

def child_pids() -> set[int]:
    """Processes this one started that still exist (zombies included), but multiprocessing's own
    resource tracker, which lives as long as this process."""
    found: set[int] = set()
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            found.update(int(pid) for pid in children.read_text().split())
        except FileNotFoundError:  # that thread ended between the listing and the read
            pass
    return found - {resource_tracker._resource_tracker._pid}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """Fail a test that leaves a server or a load generator worker running."""
    before = child_pids()
    yield
    assert not multiprocessing.active_children()
    assert child_pids() <= before


def run_json(scenario: str, **options) -> tuple[int, dict]:
    out = io.StringIO()
    code = run_bench(scenario, json_output=True, out=out, err=io.StringIO(), **options)
    text = out.getvalue()
    assert text.count("\n") == 1, "one JSON object on one line"
    return code, json.loads(text)


def assert_all_delivered(report: dict, targets: list[str], rounds: int = 1) -> None:
    assert report["ok"] is True
    assert [r["target"] for r in report["rounds"]] == targets * rounds
    for result in report["rounds"]:
        assert result["ok"], result
        assert result["delivered"] == result["expected"] == report["plan"]["expected"]
        assert result["lost"] == result["duplicated"] == result["out_of_order"] == 0
        assert result["unexpected"] == result["dropped_clients"] == 0
        assert set(result["latency_ms"]) == {"p50", "p90", "p99", "max"}
        assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["max"]
        assert result["deliveries_per_second"] > 0
        assert result["server_peak_threads"] >= 1 and result["server_peak_rss_mb"] > 0
        assert result["others_cpu"] >= 0 and 0 <= result["host_stolen_percent"] <= 100
        if result["server_cpu"] >= 0.1:  # (cores and seconds are rounded: a rough check of the units)
            assert result["server_us_per_line"] == pytest.approx(
                result["server_cpu"] * result["seconds"] * 1e6 / result["delivered"], rel=0.05)


def test_fanout_against_groupchat_and_the_relay_interleaved_delivers_every_line(no_leftovers):
    code, report = run_json("fanout", targets=["groupchat", "relay"], rounds=2, **SMALL)
    assert code == 0
    assert report["plan"] == {"scenario": "fanout", "connections": 6, "senders": 2,
                              "messages": 200, "size": 64, "rate": 0.0, "mode": "text", "expected": 2000}
    assert_all_delivered(report, ["groupchat", "relay"], rounds=2)
    assert report["reference"] == "relay"
    assert set(report["medians"]) == set(report["ratios"]) == {"groupchat", "relay"}
    assert report["ratios"]["relay"]["deliveries_per_second"] == 1.0
    # groupchat: 6 handler threads and the main and accept threads at least
    assert report["rounds"][0]["server_peak_threads"] >= 8


def test_fanout_with_groupchat_in_json_mode_and_the_relay_in_text_delivers_every_line(no_leftovers):
    code, report = run_json("fanout", targets=["groupchat", "relay"], mode="json", **SMALL)
    assert code == 0
    assert report["plan"]["mode"] == "json"
    assert_all_delivered(report, ["groupchat", "relay"])


def test_latency_in_json_mode_delivers_every_line(no_leftovers):
    code, report = run_json("latency", clients=5, senders=2, messages=20, rate=100, workers=2,
                            timeout=15, mode="json")
    assert code == 0
    assert_all_delivered(report, ["groupchat"])


def test_latency_at_a_fixed_rate_delivers_every_line(no_leftovers):
    code, report = run_json("latency", clients=5, senders=2, messages=20, rate=100, workers=2,
                            timeout=15)
    assert code == 0
    assert_all_delivered(report, ["groupchat"])
    assert report["rounds"][0]["seconds"] >= 0.15  # 20 lines at 100/s take 0.19s


def test_scale_connects_every_idle_client_and_each_gets_every_line(no_leftovers):
    code, report = run_json("scale", targets=["groupchat", "relay"], clients=50, messages=20,
                            workers=2, timeout=15)
    assert code == 0
    assert report["plan"]["connections"] == 51 and report["plan"]["expected"] == 50 * 20
    assert_all_delivered(report, ["groupchat", "relay"])
    assert all(r["server_peak_threads"] >= 51 for r in report["rounds"])


@pytest.mark.skipif(shutil.which("ncat") is None, reason="ncat is not installed (Debian package ncat)")
def test_fanout_against_ncat_chat_delivers_every_line(no_leftovers):
    code, report = run_json("fanout", targets=["ncat"], **SMALL)
    assert code == 0
    assert_all_delivered(report, ["ncat"])


def test_text_report_has_a_line_per_round_and_the_table(no_leftovers):
    out = io.StringIO()
    code = run_bench("fanout", targets=["groupchat", "relay"], out=out, err=io.StringIO(),
                     clients=4, senders=1, messages=50, workers=1, timeout=15)
    text = out.getvalue()
    assert code == 0
    assert re.search(r"^groupchat round 1/1: 150 lines in .* ok$", text, re.MULTILINE)
    assert re.search(r"^relay +round 1/1: 150 lines in .* ok$", text, re.MULTILINE)
    assert re.search(r"^lines delivered/s +[\d,]+ \(x[\d.]+\) +[\d,]+$", text, re.MULTILINE)
    assert re.search(r"^server CPU per line \(us\) +[\d.]+( \(x[\d.]+\))? +[\d.]+$", text, re.MULTILINE)


def test_a_running_server_given_by_address_is_benchmarked(server_process, no_leftovers):
    server = server_process("--rate", "0")
    code, report = run_json("fanout", host="127.0.0.1", port=server.port, **SMALL)
    assert code == 0
    (result,) = report["rounds"]
    assert result["ok"] and result["delivered"] == 2000
    assert result["server_cpu"] is None and result["server_peak_rss_mb"] is None
    assert result["server_us_per_line"] is None
    assert result["others_cpu"] is None  # (the server is one of them)
    server.kill()


def test_a_server_option_the_server_does_not_know_is_one_clear_error(no_leftovers):
    with pytest.raises(BenchError, match=r"groupchat server refused its options .*--no-such"):
        run_bench("fanout", server_args=["--no-such-option"], out=io.StringIO(), **SMALL)


# -- a faulty server makes the bench fail -----------------------------------------------------

class FaultyRelay(RelayHandler):
    """The relay, but its 50th line from each sender is dropped, doubled, swapped with the 51st, or
    replaced by groupchat's notice that it was dropped."""

    fault = "drop"

    def _relay(self) -> None:
        prefix = self.welcome()
        held = None
        for number, raw in enumerate(self.rfile):
            data = prefix + raw
            if number == 50:
                if self.fault in ("drop", "swap"):
                    held = data if self.fault == "swap" else None
                    continue
                if self.fault == "shed":  # as groupchat does for a reader it finds too slow
                    data = b"[12:00] *** You missed 1 messages while you were not reading; " \
                           b"/history 1 shows them.\n"
                else:
                    data *= 2
            if held and number == 51:
                data += held
            self.server.broadcast(self.request, data)


@pytest.mark.parametrize("fault, counted", [("drop", "lost"), ("double", "duplicated"),
                                            ("swap", "out_of_order"), ("shed", "lost")])
def test_a_line_lost_doubled_or_reordered_fails_the_bench(start_relay, no_leftovers, fault, counted):
    handler = type("Faulty", (FaultyRelay,), {"fault": fault})
    relay = start_relay(handler)
    code, report = run_json("fanout", targets=["relay"], host="127.0.0.1",
                            port=relay.server_address[1], clients=3, senders=1, messages=100,
                            workers=1, timeout=5)
    assert code == 1
    (result,) = report["rounds"]
    assert not result["ok"] and not report["ok"]
    assert result[counted] == 2  # at each of the two receivers
    others = {"lost", "duplicated", "out_of_order"} - {counted}
    assert all(result[key] == 0 for key in others)
    assert result["shed"] == (2 if fault == "shed" else 0)
    assert not result["timed_out"]  # every sender's last line came: no need to wait for more


# -- nodes sharing a Redis --------------------------------------------------------------------
# (no_leftovers comes first, so that the redis-server is stopped before it looks)

def test_latency_across_two_nodes_through_the_cli_reports_the_lines_that_crossed(no_leftovers,
                                                                                  redis_server):
    redis = redis_server()
    done = subprocess.run(GROUPCHAT + ["bench", "latency", "--nodes", "2", "--redis", redis.url,
                                       "--clients", "6", "--senders", "2", "--messages", "20",
                                       "--workers", "2", "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=50)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["targets"] == ["groupchat:2"]
    assert_all_delivered(report, ["groupchat:2"])
    (result,) = report["rounds"]
    assert result["nodes"] == 2
    # clients 0, 2, 4 on one node, 1, 3, 5 on the other; senders 0 and 1: each sender's lines
    # reach two receivers on the other node, so there are cross-node figures
    cross = result["cross_node_latency_ms"]
    assert set(cross) == {"p50", "p90", "p99", "max"}
    assert 0 < cross["p50"] <= cross["max"] <= result["latency_ms"]["max"]
    assert result["redis_cpu"] is not None and result["redis_cpu"] >= 0
    assert report["medians"]["groupchat:2"]["cross_p50"] == cross["p50"]
    assert chat_keys(redis.url) == []  # what the nodes kept in Redis went with the round


def chat_keys(url: str) -> list[str]:
    import redis

    with redis.Redis.from_url(url) as client:
        return list(client.scan_iter(match="groupchat:*"))


def test_a_redis_that_holds_a_chat_already_is_refused_in_one_line(no_leftovers, redis_server):
    redis = redis_server()
    import redis as redis_py

    with redis_py.Redis.from_url(redis.url) as client:
        client.set("groupchat:sequence", 41)
    result = CliRunner().invoke(cli, ["bench", "latency", "--nodes", "2", "--redis", redis.url])
    assert result.exit_code == 1
    assert result.output == ("Error: the Redis given by --redis holds a chat already (keys groupchat:*): give "
                             "the bench a Redis of its own, or empty this one (redis-cli -u URL flushdb)\n")
    assert chat_keys(redis.url) == [b"groupchat:sequence"]  # and it is left alone


def test_nodes_and_a_server_on_its_own_in_one_sitting(no_leftovers, redis_server):
    redis = redis_server()
    code, report = run_json("fanout", targets=["groupchat:2", "groupchat"], redis=redis.url, **SMALL)
    assert code == 0
    assert_all_delivered(report, ["groupchat:2", "groupchat"])
    nodes, alone = report["rounds"]
    assert nodes["nodes"] == 2 and nodes["cross_node_latency_ms"]["p50"] > 0
    assert alone["nodes"] == 0 and alone["cross_node_latency_ms"] == {} and alone["redis_cpu"] is None


def test_a_server_the_bench_starts_on_its_own_ignores_groupchat_redis(monkeypatch, no_leftovers):
    monkeypatch.setenv("GROUPCHAT_REDIS", "redis://127.0.0.1:1/0")  # a node would not start: nothing there
    code, report = run_json("fanout", clients=3, senders=1, messages=20, workers=1, timeout=15)
    assert code == 0
    assert_all_delivered(report, ["groupchat"])


@pytest.mark.parametrize("args, start", [
    (["--nodes", "2"], "Error: --nodes needs --redis URL"),
    (["--compare", "groupchat:3,groupchat"], "Error: groupchat:3 needs --redis URL"),
])
def test_nodes_without_a_redis_are_one_line_that_says_how_to_start_one(args, start):
    result = CliRunner().invoke(cli, ["bench", "latency", *args])
    assert result.exit_code == 1
    assert result.output.startswith(start) and result.output.count("\n") == 1
    assert "redis-server --port" in result.output and "--redis redis://127.0.0.1:" in result.output


def test_redis_without_the_redis_extra_is_one_line():
    hide_redis = "import sys; sys.modules['redis'] = None; from groupchat.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", hide_redis, "bench", "latency",
                           "--redis", "redis://127.0.0.1:1/0"], capture_output=True, text=True, cwd=REPO,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr == "Error: --redis needs the redis extra: pip install 'groupchat[redis]'\n"


def test_a_redis_nobody_answers_at_is_one_line_before_anything_starts():
    result = CliRunner().invoke(cli, ["bench", "latency", "--nodes", "2", "--redis", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the Redis given by --redis cannot be used: ")
    assert result.output.count("\n") == 1


def test_nodes_are_for_servers_the_bench_starts():
    with pytest.raises(BenchError, match="not one at --host"):
        run_bench("fanout", host="127.0.0.1", port=1, redis="redis://127.0.0.1:1/0", out=io.StringIO())


def test_a_round_says_when_the_host_or_other_processes_took_the_cpus():
    quiet = bench.describe_round(_result("groupchat", 100, host_stolen_percent=0.5, others_cpu=0.1), 1)
    assert "host" not in quiet and "other processes" not in quiet
    busy = bench.describe_round(_result("groupchat", 100, host_stolen_percent=8.0, others_cpu=0.9), 1)
    assert "the host took 8% of the CPUs' time" in busy and "other processes used 0.90 cores" in busy
    table = bench.format_table(summarize([_result("groupchat", 100, host_stolen_percent=8.0, others_cpu=0.9),
                                          _result("relay", 100, host_stolen_percent=2.0, others_cpu=0.3)]))
    assert re.search(r"CPU taken by the host \(%\)\s+8\.0\s+2\.0$", table, re.MULTILINE)  # no ratio: not the server's
