"""Telemetry statistics, drift signals and the store-and-forward spool."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest

from edge_runtime import IntentClassifier, SpoolError
from edge_runtime.telemetry import DriftMonitor, DriftThresholds, Spool, TelemetryWindow, js_distance, psi, reference_stats
from tests.conftest import REPO


def test_psi_and_js_are_zero_for_equal_distributions_and_grow_with_shift():
    same = [10, 20, 30, 40]
    assert psi(same, same) == pytest.approx(0.0, abs=1e-9) and js_distance(same, same) == pytest.approx(0.0, abs=1e-6)
    assert 0 < psi(same, [20, 20, 30, 30]) < psi(same, [40, 30, 20, 10])
    assert js_distance([1, 0], [0, 1]) > 0.99  # disjoint


def _window(clf, texts):
    w = TelemetryWindow(clf.labels)
    enc = clf.tokenizer.encode(texts)
    for pred, n, unk in zip(clf.predict_batch(texts), enc.lengths, clf.tokenizer.unknown_rate(enc)):
        w.add(pred, 1.0, int(n), float(unk))
    return w.snapshot()


def test_in_domain_traffic_raises_no_alert_and_out_of_domain_traffic_does(tiny_bundle):
    # Given the reference statistics of a bundle measured on in-domain texts
    in_domain = [f"play some jazz {w}" for w in ("album", "song", "music", "please")] * 15 + \
                [f"book a table for {n} people tonight" for n in ("two", "four", "five")] * 20
    with IntentClassifier.from_bundle(tiny_bundle[0].root, threads=1) as clf:
        reference = reference_stats(clf, in_domain)
        monitor = DriftMonitor(reference, DriftThresholds(min_requests=50))
        # When the same kind of traffic arrives, Then nothing fires
        calm = monitor.evaluate(_window(clf, in_domain[::-1]))
        # When texts from another domain arrive (unknown words, other lengths), Then drift alerts fire
        shifted = monitor.evaluate(_window(clf, ["жжж ддд ффф ююю ммм ннн ппп ггг"] * 60))
    assert calm["judged"] and calm["alerts"] == []
    assert shifted["judged"] and {a["signal"] for a in shifted["alerts"]} >= {"length_histogram", "unknown_token_rate"}


def test_small_windows_are_not_judged(tiny_bundle):
    with IntentClassifier.from_bundle(tiny_bundle[0].root, threads=1) as clf:
        reference = reference_stats(clf, ["play jazz"] * 10)
        result = DriftMonitor(reference).evaluate(_window(clf, ["жжж"] * 5))
    assert result["judged"] is False and result["alerts"] == []


def test_spool_is_fifo_bounded_and_counts_what_it_drops(tmp_path):
    with Spool(tmp_path / "spool.sqlite", max_messages=3) as spool:
        for i in range(5):
            spool.put("dt/intents/t/telemetry", f"m{i}".encode())
        assert [p for _, _, p in spool.peek(10)] == [b"m2", b"m3", b"m4"]
        assert spool.dropped == 2 and spool.pending == 3
        spool.ack([i for i, _, _ in spool.peek(2)])
        assert [p for _, _, p in spool.peek(10)] == [b"m4"]
    with pytest.raises(SpoolError, match="closed"):
        spool.put("t", b"x")


def test_stored_messages_survive_sigkill(tmp_path):
    # Given a process that stores 200 messages, reports each stored, then is killed hard
    path = tmp_path / "spool.sqlite"
    code = textwrap.dedent(f"""
        import os, signal, sys
        from edge_runtime.telemetry import Spool
        s = Spool({str(path)!r}, max_messages=1000)
        for i in range(200):
            s.put("t", str(i).encode())
            print(i, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    acknowledged = len(out.stdout.split())
    # Then every message acknowledged as stored is there after a restart
    with Spool(path) as spool:
        assert [int(p) for _, _, p in spool.peek(1000)] == list(range(acknowledged))
    assert acknowledged == 200


def test_read_only_storage_is_reported_as_such(tmp_path):
    # A connection in query-only mode fails writes the way a read-only file system does.
    spool = Spool(tmp_path / "spool.sqlite")
    spool._conn().execute("PRAGMA query_only = ON")
    with pytest.raises(SpoolError) as info:
        spool.put("t", b"x")
    assert info.value.condition == "read_only"
    spool.close()


def test_disk_full_is_reported_as_such(tmp_path, monkeypatch):
    # A spool whose database refuses to grow reports disk_full (SQLite's max_page_count simulates a full disk).
    spool = Spool(tmp_path / "spool.sqlite")
    spool._conn().execute("PRAGMA max_page_count = 8")
    with pytest.raises(SpoolError) as info:
        for _ in range(1000):
            spool.put("t", os.urandom(4096))
    assert info.value.condition == "disk_full"
    spool.close()


def test_a_spool_file_that_is_not_a_database_is_moved_aside_and_recreated(tmp_path):
    # Given a spool.sqlite that is not a database (a torn write, a disk error, a stray file)
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    # When the spool opens it, Then it is moved aside, a new one works, and the loss is counted and persists
    with Spool(path) as spool:
        assert spool.recreated == 1 and spool.durable and spool.recovered is not None
        moved = Path(spool.recovered["moved_to"])
        assert moved.read_bytes().startswith(b"this is not a database")
        assert "not a database" in spool.recovered["reason"]
        spool.put("t", b"m1")
        assert [p for _, _, p in spool.peek(10)] == [b"m1"]
    with Spool(path) as again:
        assert again.recreated == 1 and again.recovered is None and again.pending == 1
    # and without recovery the caller gets the error
    path.write_bytes(b"garbage again" * 100)
    with pytest.raises(SpoolError, match="cannot open spool"):
        Spool(path, recover=False)


def test_a_spool_that_cannot_be_made_anywhere_lives_in_memory(tmp_path):
    # Given a spool path whose parent is a file: no database can be made there
    (tmp_path / "file").write_text("x")
    with Spool(tmp_path / "file" / "spool.sqlite") as spool:
        assert not spool.durable and spool.recreated == 1
        spool.put("t", b"kept in memory")
        assert spool.pending == 1


def test_serve_with_a_corrupt_spool_serves_and_reports_the_loss(tiny_bundle, tmp_path):
    from edge_runtime.service.config import ServiceConfig
    from edge_runtime.service.protocol import Topics
    from edge_runtime.service.runner import serve
    from edge_runtime.service.transports.fake import FakeTransport

    # Given the service configured with telemetry on a spool file that is not a database
    spool = tmp_path / "spool.sqlite"
    spool.write_bytes(b"\x00garbage" * 512)
    cfg = ServiceConfig(bundle=str(tiny_bundle[0].root), thing="corrupt-spool", backend="onnxruntime", threads=1,
                        telemetry_interval=3600.0, spool_path=str(spool), status_interval_s=3600.0)
    topics = Topics.for_thing(cfg.thing)
    transport = FakeTransport(request_topic=topics.request)
    stop = threading.Event()
    codes: list = []
    server = threading.Thread(target=lambda: codes.append(serve(cfg, stop=stop, transport=transport)), daemon=True)
    server.start()
    try:
        # Then it answers requests (once it exited 2: a restart loop with no inference under Greengrass)
        transport.wait_for(1, topic=topics.status, timeout=30)
        transport.deliver({"id": "r1", "text": "play jazz"})
        assert "intent" in transport.wait_for(1, topic=topics.response, timeout=10)[0].json()
    finally:
        stop.set()
        server.join(30)
    # and the last window (spooled at the drain, for the next run to send) reports the recreated spool
    assert codes == [0]
    with Spool(spool) as after:
        bodies = [json.loads(p) for _, topic, p in after.peek(100) if topic == topics.telemetry]
    windows = [b for b in bodies if b.get("type") == "telemetry"]
    assert windows and windows[-1]["spool"]["recreated"] == 1 and windows[-1]["spool"]["durable"] is True


def test_a_spool_held_by_another_process_is_left_alone(tmp_path):
    import sqlite3

    # Given a healthy spool file that another connection holds an exclusive lock on
    path = tmp_path / "spool.sqlite"
    Spool(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # When the service opens it, Then the file is not moved aside; telemetry is kept in memory meanwhile
        with Spool(path) as spool:
            assert not spool.durable and spool.recovered["moved_to"] is None
        assert path.exists() and not list(tmp_path.glob("spool.sqlite.broken-*"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
