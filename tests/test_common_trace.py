"""common.trace: recording from several processes at once, the layout of a known run, the drawing.

The diagram is checked as data (the arrows and marks `layout` places), not as pixels.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from common import REPO_ROOT
from common.faultproxy_demo import run_scenes
from common.trace import (
    KINDS,
    NULL_TRACER,
    Event,
    TraceError,
    Tracer,
    layout,
    open_tracer,
    read_trace,
    render,
)
from common.trace import main as trace_main


def test_tracer_writes_one_json_line_per_event(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    with Tracer(path, process="coordinator") as tracer:
        tracer.send("p1", "m1", "PREPARE")
        tracer.recv("p1", "m2", "YES")
        tracer.local("decide commit")
        tracer.timeout("p2", msg_id="m3")
        tracer.crash()
        tracer.restart()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["kind"] for line in lines] == ["send", "recv", "local", "timeout", "crash", "restart"]
    assert set(KINDS) == {line["kind"] for line in lines}
    assert lines[0] | {"wall": 0, "mono": 0, "pid": 0} == {
        "wall": 0, "mono": 0, "pid": 0, "process": "coordinator", "kind": "send", "msg": "m1",
        "peer": "p1", "label": "PREPARE"}
    assert all(a["mono"] <= b["mono"] for a, b in zip(lines, lines[1:], strict=False))
    assert lines[3]["peer"] == "p2" and lines[3]["msg"] == "m3"


def test_tracing_off_is_a_no_op_that_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracer = open_tracer(None, process="p1")
    assert tracer is NULL_TRACER and not tracer.enabled
    with tracer:
        tracer.send("p2", "m1", "hello")
        tracer.recv("p2", "m1")
        tracer.local("x")
        tracer.crash()
        tracer.restart()
        tracer.timeout()
    assert list(tmp_path.iterdir()) == []
    assert open_tracer(tmp_path / "t.jsonl", "p1").enabled


APPENDER = """
import sys
from common.trace import Tracer
tracer = Tracer(sys.argv[1], process=sys.argv[2])
for i in range(int(sys.argv[3])):
    tracer.send("peer", f"{sys.argv[2]}-{i}", "x" * (i % 300))
"""


def test_several_processes_append_to_one_file_without_mixing_lines(tmp_path):
    path = tmp_path / "shared.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(path), f"w{k}", "2000"],
                                cwd=REPO_ROOT) for k in range(4)]
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    events = read_trace(path)             # every line parses: no torn or interleaved writes
    assert len(events) == 8000
    for k in range(4):
        ids = [e.msg for e in events if e.process == f"w{k}"]
        assert ids == [f"w{k}-{i}" for i in range(2000)]   # each writer's lines in its own order


def ev(mono, process, kind, msg=None, peer=None, label=""):
    return Event(mono=mono, process=process, kind=kind, msg=msg, peer=peer, label=label)


def test_layout_of_a_known_trace():
    events = [
        ev(1.0, "coordinator", "send", "m1", "p1", "PREPARE"),
        ev(1.1, "p1", "recv", "m1", "coordinator", "PREPARE"),
        ev(1.2, "p1", "send", "m2", "coordinator", "YES"),
        ev(1.3, "coordinator", "send", "m3", "p2", "PREPARE"),     # never received: lost
        ev(1.4, "coordinator", "recv", "m2", "p1", "YES"),
        ev(1.5, "p2", "crash", label="SIGKILL"),
        ev(2.5, "coordinator", "timeout", "m3", "p2", "no vote"),
        ev(2.6, "p2", "restart"),
        ev(2.7, "coordinator", "local", label="abort"),
        ev(2.8, "coordinator", "send", "m4", "p1", "ABORT"),
        ev(2.9, "p1", "recv", "m4", "coordinator", "ABORT"),
        ev(3.0, "p1", "recv", "m4", "coordinator", "ABORT"),     # delivered twice: two arrows
    ]
    diagram = layout(events)
    assert diagram.processes == ["coordinator", "p1", "p2"]
    messages = [(a.src, a.dst, a.label) for a in diagram.arrows if not a.lost]
    assert messages == [("coordinator", "p1", "PREPARE"), ("p1", "coordinator", "YES"),
                        ("coordinator", "p1", "ABORT"), ("coordinator", "p1", "ABORT")]
    assert [(a.src, a.dst, a.label, a.y_recv) for a in diagram.arrows if a.lost] == [
        ("coordinator", "p2", "PREPARE", None)]
    assert (diagram.count("message"), diagram.count("lost"), diagram.count("crash"),
            diagram.count("restart"), diagram.count("timeout"), diagram.count("local")) == (4, 1, 1, 1, 1, 1)
    assert diagram.down == [("p2", 5.0, 7.0)]              # rows of the crash and the restart
    assert all(a.y_recv > a.y_send for a in diagram.arrows if not a.lost)


def test_two_sends_with_one_id_are_matched_first_in_first_out():
    events = [ev(1.0, "a", "send", "m", "b", "first"), ev(1.1, "a", "send", "m", "b", "again"),
              ev(1.2, "b", "recv", "m", "a"), ev(1.3, "b", "recv", "m", "a")]
    arrows = layout(events).arrows
    assert [(a.y_send, a.y_recv, a.label, a.lost) for a in arrows] == [
        (0.0, 2.0, "first", False), (1.0, 3.0, "again", False)]


def test_a_receipt_stamped_before_its_send_is_still_drawn_after_it():
    # p1 stamps its receipt a hair before the coordinator's send (tracer called late by the sender);
    # the happens-before order puts it after the send, and keeps p1's own order intact.
    events = [
        ev(1.00, "p1", "local", label="start"),
        ev(1.20, "coordinator", "send", "m1", "p1", "PREPARE"),
        ev(1.19, "p1", "recv", "m1", "coordinator", "PREPARE"),
        ev(1.21, "p1", "send", "m2", "coordinator", "YES"),
        ev(1.30, "coordinator", "recv", "m2", "p1", "YES"),
    ]
    diagram = layout(events)
    assert [(a.y_send, a.y_recv) for a in diagram.arrows] == [(1.0, 2.0), (3.0, 4.0)]
    assert diagram.marks[0].y == 0.0


def test_layout_with_real_time_spacing():
    events = [ev(10.0, "a", "send", "m", "b", "hi"), ev(10.5, "b", "recv", "m", "a", "hi")]
    diagram = layout(events, spacing="time")
    assert [(a.y_send, a.y_recv) for a in diagram.arrows] == [(0.0, 0.5)]
    with pytest.raises(ValueError, match="spacing"):
        layout(events, spacing="log")


def test_a_known_real_run_draws_the_expected_arrows(tmp_path, capsys):
    """The faultproxy demo: real processes, real proxy; its diagram, counted."""
    trace = tmp_path / "run.jsonl"
    run_scenes(trace)
    diagram = layout(read_trace(trace), processes=["client", "faultproxy", "server"])
    messages = [(a.src, a.label) for a in diagram.arrows if not a.lost]
    assert messages == [
        ("client", "PUT x=1"), ("server", "OK"),
        ("client", "PUT x=2"),                                   # held by the partition, late
        ("client", "PUT x=2 (retry)"), ("server", "OK"),
        ("client", "GET x"),
        ("client", "GET x (retry)"), ("server", "OK"),
        ("client", "PUT y=1 (retry)"), ("server", "OK"),
    ]
    lost = [(a.src, a.label) for a in diagram.arrows if a.lost]
    assert lost == [("server", "OK"),           # the late PUT's reply: the client had moved on
                    ("server", "OK"),           # the reply cut by the proxy
                    ("client", "PUT y=1")]      # sent into the connection the crash reset
    assert [(m.process, m.kind) for m in diagram.marks if m.process != "faultproxy"] == [
        ("client", "timeout"), ("client", "local"), ("server", "crash"), ("client", "local"),
        ("server", "restart")]
    assert diagram.count("local") == 5          # 3 faults switched on/off + 2 ECONNRESET


def test_render_writes_png_and_svg(tmp_path):
    trace = tmp_path / "t.jsonl"
    with Tracer(trace, "a") as a, Tracer(trace, "b") as b:
        a.send("b", "m1", "hello")
        b.recv("a", "m1", "hello")
        a.send("b", "m2", "lost one")
        b.crash()
    png = render(trace, tmp_path / "d.png", title="t")
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    render(trace, tmp_path / "d.svg")
    assert "<svg" in (tmp_path / "d.svg").read_text()
    assert (png.count("message"), png.count("lost"), png.count("crash")) == (1, 1, 1)


def test_render_cli(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    with Tracer(trace, "a") as a:
        a.send("b", "m1", "hello")
    out = tmp_path / "d.svg"
    assert trace_main(["render", str(trace), "--out", str(out), "--title", "x"]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 2 processes, 0 messages, 1 lost, 0 crashes, 0 timeouts"
    assert out.exists()
    with Tracer(trace, "b") as b:
        b.recv("a", "m1", "hello")
        b.crash()
        b.timeout("a")
    assert trace_main(["render", str(trace), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: 2 processes, 1 message, 0 lost, 1 crash, 1 timeout"


def test_a_bad_trace_line_is_named(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"mono": 1, "process": "a", "kind": "send"}\n'
                     '{"mono": 2, "process": "a", "kind": "boom"}\n')
    with pytest.raises(TraceError, match=r"t.jsonl:2: unknown kind 'boom'"):
        read_trace(trace)
