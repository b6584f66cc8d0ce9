"""Message diagrams from real runs: processes append events to a trace file; render() draws them.

    tracer = open_tracer(args.trace, process="coordinator")   # args.trace None: a free no-op
    tracer.send("p1", "tx7/prepare/p1", "PREPARE tx7")         # just before the bytes go out
    ...
    tracer.recv("coordinator", "tx7/prepare/p1", "PREPARE tx7")  # in p1, just after they arrive

    python -m common.trace render run.jsonl --out out/common/run.png

A log says what each process did; a Lamport diagram (Lamport 1978, the "space-time diagram"; the
way Jepsen's Maelstrom shows every run) shows the protocol: one vertical line per process, time
flowing down, an arrow for every message from its send to its receipt. Crashes (✕), restarts,
timeouts (dashed) and lost messages (an arrow that ends in nothing) are where the protocol is
tested, and they stand out at a glance.

The file is JSON lines, one event per line:

    {"wall": 1764770000.123, "mono": 5123.456789, "process": "p1", "pid": 4242, "kind": "recv",
     "msg": "tx7/prepare/p1", "peer": "coordinator", "label": "PREPARE tx7"}

kind is send | recv | local | crash | restart | timeout. A send and a recv with the same `msg` are
one message; a send nobody received is a lost message, so give every message (and every re-send)
its own id. `mono` is time.monotonic(), one clock for every process on the machine; layout()
orders events by happens-before (each process's own order, every receipt after its send) and uses
`mono` only between events that order leaves unrelated. `wall` is for people.

Several processes append to the same file at once. Each event is one os.write() of one line to a
file opened with O_APPEND: the kernel moves to the end and writes in one step, so lines never
interleave or overwrite each other. A SIGKILLed process cannot record its own crash, so whoever
killed it does: `Tracer(path, process="p1").crash("SIGKILL")`.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import cli

__all__ = ["KINDS", "NULL_TRACER", "Arrow", "Diagram", "Event", "Mark", "NullTracer", "TraceError",
           "Tracer", "add_trace_argument", "draw", "layout", "open_tracer", "read_trace", "render"]

KINDS = ("send", "recv", "local", "crash", "restart", "timeout")


# -- recording ----------------------------------------------------------------------------------

class Tracer:
    """Appends one process's events to a trace file (safe with other processes appending too)."""

    enabled = True

    def __init__(self, path: str | os.PathLike, process: str):
        self.path = Path(path)
        self.process = process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send(self, peer: str, msg_id: str, label: str = "") -> None:
        """Record a message to `peer`; call it just before sending (so the send precedes the receipt)."""
        self._event("send", msg_id, peer, label)

    def recv(self, peer: str, msg_id: str, label: str = "") -> None:
        """Record a message from `peer`, with the id its sender used; call it just after receiving."""
        self._event("recv", msg_id, peer, label)

    def local(self, label: str) -> None:
        """Something worth seeing that is not a message: "vote yes", "commit logged"."""
        self._event("local", None, None, label)

    def crash(self, label: str = "crash") -> None:
        self._event("crash", None, None, label)

    def restart(self, label: str = "restart") -> None:
        self._event("restart", None, None, label)

    def timeout(self, peer: str | None = None, label: str = "timeout", msg_id: str | None = None) -> None:
        """Gave up waiting (for `peer`, for the reply to `msg_id`)."""
        self._event("timeout", msg_id, peer, label)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Tracer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _event(self, kind: str, msg_id: str | None, peer: str | None, label: str) -> None:
        event = {"wall": round(time.time(), 6), "mono": time.monotonic(), "process": self.process,
                 "pid": os.getpid(), "kind": kind, "msg": msg_id, "peer": peer, "label": label}
        # One write of one whole line: with O_APPEND, atomic with respect to other appenders.
        os.write(self._fd, (json.dumps(event, ensure_ascii=False) + "\n").encode())


class NullTracer:
    """The tracer when tracing is off: every method does nothing (one empty call, no I/O)."""

    enabled = False
    process = ""

    def send(self, peer, msg_id, label=""):
        pass

    def recv(self, peer, msg_id, label=""):
        pass

    def local(self, label):
        pass

    def crash(self, label="crash"):
        pass

    def restart(self, label="restart"):
        pass

    def timeout(self, peer=None, label="timeout", msg_id=None):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


NULL_TRACER = NullTracer()


def open_tracer(path: str | os.PathLike | None, process: str) -> Tracer | NullTracer:
    """A Tracer writing to `path`, or the no-op NULL_TRACER when path is None (`--trace` not given)."""
    return NULL_TRACER if path is None else Tracer(path, process)


def add_trace_argument(parser: argparse.ArgumentParser) -> None:
    """The `--trace FILE` flag every traced script takes (off by default)."""
    parser.add_argument("--trace", type=cli.writable_path, default=None, metavar="FILE",
                        help="append a message trace (JSON lines) to FILE; draw it with "
                             "python -m common.trace render FILE")


# -- reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    mono: float
    process: str
    kind: str
    msg: str | None = None
    peer: str | None = None
    label: str = ""
    wall: float = 0.0
    pid: int = 0


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


def read_trace(path: str | os.PathLike) -> list[Event]:
    """The events of a trace file, in file order. Raises TraceError naming a bad line."""
    events = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            event = Event(mono=float(raw["mono"]), process=str(raw["process"]), kind=raw["kind"],
                          msg=raw.get("msg"), peer=raw.get("peer"), label=raw.get("label") or "",
                          wall=float(raw.get("wall", 0.0)), pid=int(raw.get("pid", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{path}:{number}: not a trace event ({exc})") from None
        if event.kind not in KINDS:
            raise TraceError(f"{path}:{number}: unknown kind {event.kind!r} (expected one of {KINDS})")
        events.append(event)
    return events


# -- layout (pure: events in, positions out; what the tests check) --------------------------------

@dataclass(frozen=True)
class Arrow:
    """A message: from `src` at row y_send to `dst` at row y_recv; lost: it was never received."""

    src: str
    dst: str
    y_send: float
    y_recv: float | None
    label: str
    msg: str
    lost: bool = False


@dataclass(frozen=True)
class Mark:
    """A crash, restart, timeout or local event on a process's line."""

    process: str
    y: float
    kind: str
    label: str


@dataclass
class Diagram:
    processes: list[str]                      # left to right
    arrows: list[Arrow] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    down: list[tuple[str, float, float]] = field(default_factory=list)  # (process, crash y, restart y)
    height: float = 0.0                      # the last event's y
    unit: float = 1.0                        # the y distance of one row (drawing scale)

    def count(self, kind: str) -> int:
        """Arrows ("message", "lost") or marks (a kind) in the diagram."""
        if kind == "message":
            return sum(not arrow.lost for arrow in self.arrows)
        if kind == "lost":
            return sum(arrow.lost for arrow in self.arrows)
        return sum(mark.kind == kind for mark in self.marks)


def layout(events: Iterable[Event], processes: list[str] | None = None,
           spacing: str = "order") -> Diagram:
    """Place every event: a column per process, a row per event (spacing="order") or real time.

    Rows follow the happens-before order (Lamport): each process's events in their own order, and
    every receipt after its send, even if the two processes' clocks disagree by a hair; among
    events that are not ordered that way, the earlier `mono` time goes first. With
    spacing="time", y is seconds since the first event instead (honest gaps, crowded bursts).
    """
    if spacing not in ("order", "time"):
        raise ValueError(f"spacing must be 'order' or 'time', got {spacing!r}")
    ordered = _happens_before_order(list(events))
    names = list(processes or [])
    for event in ordered:
        for name in (event.process, event.peer if event.kind in ("send", "recv") else None):
            if name and name not in names:
                names.append(name)
    t0 = ordered[0].mono if ordered else 0.0
    rows = {id(event): (float(i) if spacing == "order" else event.mono - t0)
            for i, event in enumerate(ordered)}
    diagram = Diagram(processes=names)
    sends: dict[str, list[Event]] = defaultdict(list)   # msg id -> sends not yet received
    received: set[int] = set()
    crashed_at: dict[str, float] = {}
    for event in ordered:
        y = rows[id(event)]
        if event.kind == "send":
            sends[event.msg].append(event)
        elif event.kind == "recv":
            send = sends[event.msg][0] if sends[event.msg] else None
            if send is None:   # a receipt whose send was not traced: draw it from its sender
                diagram.arrows.append(Arrow(event.peer or "?", event.process, y, y, event.label,
                                            event.msg or ""))
                continue
            received.add(id(send))
            if len(sends[event.msg]) > 1:
                sends[event.msg].pop(0)    # several sends of one id: match them first-in first-out
            diagram.arrows.append(Arrow(send.process, event.process, rows[id(send)], y,
                                        event.label or send.label, event.msg))
        else:
            diagram.marks.append(Mark(event.process, y, event.kind, event.label))
            if event.kind == "crash":
                crashed_at.setdefault(event.process, y)
            elif event.kind == "restart" and event.process in crashed_at:
                diagram.down.append((event.process, crashed_at.pop(event.process), y))
    end = max(rows.values(), default=0.0)
    diagram.height = end
    for process, y in crashed_at.items():        # crashed and never restarted
        diagram.down.append((process, y, end + (1.0 if spacing == "order" else 0.0)))
    for event in ordered:
        if event.kind == "send" and id(event) not in received:
            diagram.arrows.append(Arrow(event.process, event.peer or "?", rows[id(event)], None,
                                        event.label, event.msg or "", lost=True))
    diagram.arrows.sort(key=lambda arrow: arrow.y_send)
    for arrow in diagram.arrows:                 # e.g. a receipt from a sender that traced nothing
        for name in (arrow.src, arrow.dst):
            if name not in diagram.processes:
                diagram.processes.append(name)
    # One "row" of drawing space: a row per event, or the mean gap between events in real time.
    diagram.unit = 1.0 if spacing == "order" else max(end, 1e-6) / max(len(ordered) - 1, 1)
    return diagram


def _happens_before_order(events: list[Event]) -> list[Event]:
    """Topological order of (per-process order + send before recv), earliest `mono` first."""
    by_time = sorted(range(len(events)), key=lambda i: events[i].mono)
    successors: dict[int, list[int]] = defaultdict(list)
    waiting = [0] * len(events)
    last_of: dict[str, int] = {}
    first_send: dict[str, int] = {}
    for i in by_time:
        event = events[i]
        if event.process in last_of:
            successors[last_of[event.process]].append(i)
            waiting[i] += 1
        last_of[event.process] = i
        if event.kind == "send" and event.msg is not None:
            first_send.setdefault(event.msg, i)
    for i in by_time:
        event = events[i]
        if event.kind == "recv" and event.msg in first_send and first_send[event.msg] != i:
            successors[first_send[event.msg]].append(i)
            waiting[i] += 1
    ready = [(events[i].mono, i) for i in by_time if waiting[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in successors[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (events[j].mono, j))
    if len(order) < len(events):                  # a cycle (a receipt logged before its own send
        placed = set(order)                       # in the same process): fall back to time order
        order += [i for i in by_time if i not in placed]
    return [events[i] for i in order]


# -- drawing ------------------------------------------------------------------------------------

COLORS = {"message": "#1f5fa8", "lost": "#c0392b", "crash": "#c0392b", "restart": "#1e8449",
          "timeout": "#b9770e", "local": "#333333", "line": "#555555"}


def render(trace_path: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None,
           processes: list[str] | None = None, spacing: str = "order") -> Diagram:
    """Draw the trace as a sequence diagram into out_path (.png or .svg). Returns the layout."""
    diagram = layout(read_trace(trace_path), processes, spacing)
    draw(diagram, out_path, title=title or Path(trace_path).name, spacing=spacing)
    return diagram


def draw(diagram: Diagram, out_path: str | os.PathLike, title: str = "", spacing: str = "order") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_path)
    if out.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"the diagram is written as .png or .svg, got {out.name!r}")
    column = {name: i for i, name in enumerate(diagram.processes)}
    unit = diagram.unit
    rows = diagram.height / unit + 1
    width = max(5.0, 2.6 * len(diagram.processes) + 1.0)
    height = max(3.0, min(40.0, rows * 0.42 + 1.6))
    fig, ax = plt.subplots(figsize=(width, height))
    top, bottom = -0.8 * unit, diagram.height + 0.8 * unit

    for name, x in column.items():
        ax.plot([x, x], [top + 0.3 * unit, bottom], color=COLORS["line"], lw=1.2, zorder=1)
        ax.text(x, top, name, ha="center", va="bottom", fontsize=11, weight="bold")
    for process, start, end in diagram.down:       # while crashed: the line is a gap
        x = column[process]
        ax.plot([x, x], [start, min(end, bottom)], color="white", lw=3, zorder=2)
        ax.plot([x, x], [start, min(end, bottom)], color="#aaaaaa", lw=1, ls=":", zorder=3)

    for arrow in diagram.arrows:
        x0, x1 = column[arrow.src], column[arrow.dst]
        if arrow.lost:
            # Lost: the arrow sets off towards its receiver and ends in nothing.
            xm = x0 + (x1 - x0) * 0.55
            ym = arrow.y_send + 0.6 * unit
            ax.plot([x0, xm], [arrow.y_send, ym], color=COLORS["lost"], lw=1.4, ls="--", zorder=4)
            ax.plot([xm], [ym], marker="o", ms=5, mfc="white", mec=COLORS["lost"], zorder=5)
            _label(ax, (x0 + xm) / 2, (arrow.y_send + ym) / 2, f"{arrow.label} (lost)", COLORS["lost"])
            continue
        ax.annotate("", xy=(x1, arrow.y_recv), xytext=(x0, arrow.y_send), zorder=4,
                    arrowprops={"arrowstyle": "-|>", "color": COLORS["message"], "lw": 1.4,
                                "shrinkA": 0, "shrinkB": 0})
        _label(ax, (x0 + x1) / 2, (arrow.y_send + arrow.y_recv) / 2, arrow.label, COLORS["message"])

    for mark in diagram.marks:
        x = column[mark.process]
        if mark.kind == "crash":
            ax.plot([x], [mark.y], marker="X", ms=13, color=COLORS["crash"], zorder=6)
        elif mark.kind == "restart":
            ax.plot([x], [mark.y], marker="o", ms=9, mfc="white", mec=COLORS["restart"], mew=2, zorder=6)
        elif mark.kind == "timeout":
            ax.plot([x - 0.18, x + 0.18], [mark.y, mark.y], color=COLORS["timeout"], lw=2, ls="--",
                    zorder=6)
        else:
            ax.plot([x], [mark.y], marker="o", ms=4, color=COLORS["local"], zorder=6)
        ax.text(x + 0.2, mark.y, mark.label, ha="left", va="center", fontsize=8,
                color=COLORS.get(mark.kind, "#333333"), zorder=7)

    ax.set_xlim(-0.7, len(diagram.processes) - 0.3)
    ax.set_ylim(bottom, top - 0.4 * unit)
    ax.axis("off")
    if spacing == "time":
        ax.text(-0.65, bottom, f"time flows down ({diagram.height * 1000:.0f} ms in all)", fontsize=8,
                color="#777777", va="bottom")
    if title:
        ax.set_title(title, fontsize=12, pad=14)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130 if out.suffix.lower() == ".png" else None,
                metadata={"Software": None} if out.suffix.lower() == ".png" else {"Date": None})
    plt.close(fig)


def _label(ax, x, y, text, color) -> None:
    if text:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=8, color=color, zorder=7,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


# -- command line: python -m common.trace render TRACE --out FILE ---------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m common.trace",
                                description="Draw a message trace (JSON lines written with --trace) "
                                            "as a Lamport diagram.")
    commands = parser.add_subparsers(dest="command", metavar="render")
    render_parser = commands.add_parser("render", help="draw TRACE as a PNG or SVG diagram")
    render_parser.error = parser.error   # the same one-line errors as the main parser
    render_parser.add_argument("trace", metavar="TRACE", help="a trace file (JSON lines)")
    render_parser.add_argument("--out", type=cli.writable_path,
                               default=cli.output_path("common", "trace.png"),
                               help="the image to write, .png or .svg (default out/common/trace.png)")
    render_parser.add_argument("--title", default=None, help="the diagram's title (default: the file name)")
    render_parser.add_argument("--processes", default=None, metavar="A,B,C",
                               help="the left-to-right order of the process lines (default: first seen)")
    render_parser.add_argument("--spacing", choices=("order", "time"), default="order",
                               help="one row per event (order, default) or real time (time)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error("choose a command: render TRACE --out FILE")

    if args.out.suffix.lower() not in (".png", ".svg"):
        raise cli.UsageError(f"--out: the diagram is written as .png or .svg, got {str(args.out)!r}")
    try:
        events = read_trace(args.trace)
    except TraceError as exc:
        raise cli.UsageError(str(exc)) from None
    if not events:
        raise cli.UsageError(f"{args.trace} has no events: was the run started with --trace?")
    processes = [name.strip() for name in args.processes.split(",")] if args.processes else None
    diagram = layout(events, processes, args.spacing)
    draw(diagram, args.out, title=args.title or Path(args.trace).name, spacing=args.spacing)
    print(f"{args.out}: {_plural(len(diagram.processes), 'process', 'processes')}, "
          f"{_plural(diagram.count('message'), 'message', 'messages')}, {diagram.count('lost')} lost, "
          f"{_plural(diagram.count('crash'), 'crash', 'crashes')}, "
          f"{_plural(diagram.count('timeout'), 'timeout', 'timeouts')}")
    return 0


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


if __name__ == "__main__":
    sys.exit(cli.run(main))
