"""A TCP fault-injection proxy: put it between a client and a server, then break the network on cue.

    with fault_proxy(upstream=("127.0.0.1", server_port)) as proxy:
        client = connect(proxy.address)       # the client talks to the proxy, not the server
        proxy.partition()                     # nothing gets through, either way
        proxy.heal()                          # ... and now it does again

Process faults (SIGKILL, SIGSTOP) are easy to inject; the faults that make distributed systems hard
are in the network: a partition (maybe in one direction only), a slow link, a connection reset
halfway through a reply. This proxy produces them on loopback, for tests, demos and learners, in the
spirit of Shopify's Toxiproxy (a Go binary, not installable here) and of Jepsen's iptables nemeses.

The faults, and what a client and a server see:

    partition("refuse")     new connections are refused (the proxy stops listening: connect() gets
                            ECONNREFUSED, like a REJECT firewall rule or a port nobody listens on);
                            established connections are reset (RST to both ends).
    partition("blackhole")  new connections are accepted (the kernel completes the handshake) and
                            never answered; on established connections no byte moves either way.
    one_way("upstream")     client -> server bytes stop, server -> client bytes still flow
    one_way("downstream")   server -> client bytes stop (requests arrive and run; replies never come)
    delay(ms, jitter_ms)    every chunk is delivered ms (+/- a seeded uniform jitter) late, each way
    cut_after(n)            after n bytes of the server's response, the connection is reset (RST)
    reset_all()             reset every established connection now (RST to both ends)
    heal()                  clear every fault; held bytes are delivered

Stopped bytes are *held*, not thrown away. TCP never hands an application a stream with a hole in
it: across a real partition the sender's kernel keeps retransmitting, so the bytes arrive late (when
the partition heals) or the connection dies (when someone times out and closes or resets it). The
proxy behaves the same way: it stops reading the stopped direction, the bytes wait in the kernel's
socket buffers, the sender's writes block once those fill, and on heal() everything flows in order.
A client that times out and closes its end does not take back what it sent: the proxy's kernel had
already acknowledged those bytes, so heal() still delivers them (the demo's late request). To make
held bytes disappear, call reset_all() before heal(), as when a partition outlasts TCP's retries.

Design: one asyncio event loop in one background thread per proxy; each proxied connection is two
asyncio transports (client side, server side) and two flows (one per direction). The healthy path
is one `transport.write(data)` per chunk read, so the proxy adds tens of microseconds per hop
(measured by `python -m common.faultproxy_bench`). Every fault method may be called from any thread;
it returns once the fault is in force, so a test that calls partition() and then sends knows the
send is partitioned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import random
import socket
import struct
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import cli
from .ports import LOOPBACK, port_is_open

__all__ = ["DOWNSTREAM", "UPSTREAM", "FaultProxy", "FaultProxyError", "ProxyStats", "fault_proxy"]

UPSTREAM = "upstream"        # client -> server (requests)
DOWNSTREAM = "downstream"    # server -> client (responses)
DIRECTIONS = (UPSTREAM, DOWNSTREAM)
PARTITION_MODES = ("refuse", "blackhole")

# Every read goes into one buffer this big (see _Side); 256 KiB is what asyncio itself reads at most.
RECEIVE_BUFFER_SIZE = 256 * 1024
# Back-pressure: stop reading one side while more than this waits to be written to the other.
# (asyncio's default, 64 KiB, is below one read and made the proxy stop and start on every chunk.)
WRITE_BUFFER_HIGH = 1024 * 1024
# A delayed link stores what it has read but not yet delivered; past this many bytes per direction
# it stops reading, so a fast sender meets back-pressure instead of filling the proxy's memory.
MAX_DELAYED_BYTES = 4 * 1024 * 1024
# A cut waits until the kernel has sent the last byte before the RST, or this long at most.
CUT_DRAIN_TIMEOUT = 2.0
# Linux ioctl: bytes in a socket's send queue not yet sent (SIOCOUTQNSD, linux/sockios.h).
SIOCOUTQNSD = 0x894B


class FaultProxyError(RuntimeError):
    """The proxy could not start (e.g. its listening port is taken) or was used after close()."""


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of a proxy's counters (bytes are counted when delivered, not when read)."""

    bytes_upstream: int          # client -> server
    bytes_downstream: int        # server -> client
    connections_accepted: int    # every connection the proxy accepted, ever
    connections_active: int      # open now (including ones held by a blackhole partition)
    connections_reset: int       # reset by partition("refuse"), reset_all() or a cut
    connections_cut: int         # reset by cut_after()
    upstream_failures: int       # the server refused or was unreachable; the client was reset
    faults: str                  # the faults in force, e.g. "delay 200ms +/- 50ms" or "healthy"


@dataclass
class _Faults:
    """The faults in force. Owned by the proxy's event-loop thread."""

    partition: str | None = None             # None, "refuse" or "blackhole"
    one_way: str | None = None               # None or the direction whose bytes are stopped
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    delay_directions: tuple[str, ...] = DIRECTIONS
    cut_after: int | None = None
    cut_once: bool = False

    def stops(self, direction: str) -> bool:
        return self.partition is not None or self.one_way == direction

    def delays(self, direction: str) -> bool:
        return (self.delay_ms > 0 or self.jitter_ms > 0) and direction in self.delay_directions

    def describe(self) -> str:
        parts = []
        if self.partition:
            parts.append(f"partition ({self.partition})")
        if self.one_way:
            parts.append(f"one-way: {self.one_way} bytes stopped")
        if self.delay_ms or self.jitter_ms:
            jitter = f" +/- {self.jitter_ms:g}ms" if self.jitter_ms else ""
            which = "each way" if len(self.delay_directions) == 2 else self.delay_directions[0]
            parts.append(f"delay {self.delay_ms:g}ms{jitter} ({which})")
        if self.cut_after is not None:
            once = ", once" if self.cut_once else ""
            parts.append(f"cut after {self.cut_after} response bytes{once}")
        return "; ".join(parts) or "healthy"


class FaultProxy:
    """A TCP proxy from `listen` to `upstream` whose network faults you switch on and off.

    Use `fault_proxy(...)` as a context manager, or call start() and close() yourself.
    """

    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = (LOOPBACK, 0),
                 *, seed: int = 0):
        self.upstream = (upstream[0], int(upstream[1]))
        self._requested_listen = (listen[0], int(listen[1]))
        self._rng = random.Random(seed)   # jitter is seeded: a re-run sees the same delays
        self._faults = _Faults()
        self._links: set[_Link] = set()
        self._counts = dict.fromkeys(("accepted", "reset", "cut", "upstream_failures"), 0)
        self._bytes = {UPSTREAM: 0, DOWNSTREAM: 0}
        self._receive_buffer = memoryview(bytearray(RECEIVE_BUFFER_SIZE))
        self._listener: socket.socket | None = None
        self._listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind the listening port and start the proxy's thread. Raises OSError if the port is taken."""
        if self._loop is not None:
            raise FaultProxyError("the proxy is already started")
        self._listener = _bind_listener(self._requested_listen)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,),
                                        name=f"faultproxy:{self.address[1]}", daemon=True)
        self._thread.start()
        ready.wait()
        self._call(self._start_listening)
        return self

    def close(self) -> None:
        """Stop listening, close every connection and stop the thread. Safe to call twice."""
        if self._loop is None or self._closed:
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        future.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._listener.close()

    def __enter__(self) -> FaultProxy:
        return self.start() if self._loop is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) that clients connect to instead of the upstream server."""
        if self._listener is None:
            raise FaultProxyError("the proxy is not started: use `with fault_proxy(...)` or start()")
        host, port = self._listener.getsockname()[:2]
        return host, port

    # -- faults (callable from any thread; each returns once the fault is in force) -----------------

    def partition(self, mode: str = "blackhole") -> None:
        """Cut the client off from the server: "refuse" (RST, connection refused) or "blackhole" (silence)."""
        if mode not in PARTITION_MODES:
            raise ValueError(f"partition mode must be 'refuse' or 'blackhole', got {mode!r}")
        self._call(self._change, partition=mode)

    def heal(self) -> None:
        """Clear every fault. Held bytes and held connections go through, in order."""
        self._call(self._apply, _Faults())

    def one_way(self, direction: str) -> None:
        """Stop the bytes going in `direction` ("upstream" = to the server, "downstream" = to the client)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'upstream' or 'downstream', got {direction!r}")
        self._call(self._change, one_way=direction)

    def delay(self, ms: float, jitter_ms: float = 0, direction: str = "both") -> None:
        """Deliver every chunk `ms` +/- `jitter_ms` milliseconds late, in each direction by default.

        A request/response round trip therefore gains 2 x ms. Jitter is uniform in
        [-jitter_ms, +jitter_ms] from the proxy's seeded generator, and never reorders bytes: TCP
        delivers in order, so a chunk is never delivered before the one read before it.
        delay(0) removes the delay.
        """
        if ms < 0 or jitter_ms < 0:
            raise ValueError(f"delay and jitter must be >= 0 ms, got {ms} and {jitter_ms}")
        if direction not in (*DIRECTIONS, "both"):
            raise ValueError(f"direction must be 'upstream', 'downstream' or 'both', got {direction!r}")
        directions = DIRECTIONS if direction == "both" else (direction,)
        self._call(self._change, delay_ms=float(ms), jitter_ms=float(jitter_ms),
                   delay_directions=directions)

    def cut_after(self, n_bytes: int, once: bool = False) -> None:
        """Reset each connection once `n_bytes` of the server's response have reached the client.

        Counted per connection from now (or from its start, for later connections). The client
        receives exactly n_bytes and then ECONNRESET; the server gets an RST too. cut_after(0) lets
        the request through and resets the connection when the first response byte arrives: the
        server did the work, the client never hears. With once=True only the next connection to
        reach n_bytes is cut, then the fault clears itself (a retry goes through).
        """
        if n_bytes < 0:
            raise ValueError(f"n_bytes must be >= 0, got {n_bytes}")
        self._call(self._change, cut_after=int(n_bytes), cut_once=bool(once))

    def reset_all(self) -> int:
        """Reset every established connection now (RST to both ends). Returns how many."""
        return self._call(self._reset_all)

    # -- observation ------------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        return self._call(self._snapshot)

    def wait_until(self, predicate: Callable[[ProxyStats], bool], timeout: float = 5.0) -> ProxyStats:
        """Poll stats() until predicate(stats) is true, e.g. `lambda s: s.connections_cut == 1`.

        Raises TimeoutError (with the last stats) if it is still false after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not reached within {timeout}s; last stats: {stats}")
            time.sleep(0.002)

    def __repr__(self) -> str:
        where = f"{self.address[0]}:{self.address[1]}" if self._listener else "not started"
        return f"<FaultProxy {where} -> {self.upstream[0]}:{self.upstream[1]} {self._faults.describe()}>"

    # -- running on the event loop (everything below runs in the proxy's thread) --------------------

    def _run_loop(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(ready.set)
        self._loop.run_forever()

    def _call(self, function: Callable, *args, **kwargs):
        """Run function on the proxy's loop and return its result (directly if already on it)."""
        if self._loop is None or self._closed:
            raise FaultProxyError("the proxy is not running (not started, or closed)")
        if threading.current_thread() is self._thread:
            return function(*args, **kwargs)

        async def run():
            return function(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def _change(self, **changes) -> None:
        faults = _Faults(**{**self._faults.__dict__, **changes})
        self._apply(faults)

    def _apply(self, faults: _Faults) -> None:
        """Put `faults` in force: listening state, held connections, every flow."""
        # A cut counts from the moment it is armed; changing another fault must not restart it.
        cut_changed = (faults.cut_after, faults.cut_once) != (self._faults.cut_after, self._faults.cut_once)
        self._faults = faults
        if faults.partition == "refuse":
            self._stop_listening()
            for link in list(self._links):
                self._reset_link(link)
        elif not self._listening:
            self._start_listening()
        for link in list(self._links):
            if cut_changed:
                link.arm_cut(faults.cut_after)
            if faults.partition is None and not link.opened:
                link.open()       # accepted during a blackhole partition: now it may connect
            link.refresh()

    def _start_listening(self) -> None:
        # listen() again on a socket that stopped listening: on Linux the port stayed ours meanwhile.
        self._listener.listen(512)
        self._loop.add_reader(self._listener.fileno(), self._accept_ready)
        self._listening = True

    def _stop_listening(self) -> None:
        """Stop accepting: connect() now gets ECONNREFUSED; the queue of unaccepted ones gets RST.

        shutdown() on a listening socket returns it to the closed state without giving up its
        bound port (Linux, for a port bound explicitly), so heal() can listen on it again and no
        other program can take the port in between.
        """
        if self._listening:
            self._loop.remove_reader(self._listener.fileno())
            self._listener.shutdown(socket.SHUT_RD)
            self._listening = False

    def _accept_ready(self) -> None:
        for _ in range(64):   # accept a burst, then let the loop run other callbacks
            try:
                client_sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return        # e.g. ECONNABORTED: the client gave up before we accepted
            self._counts["accepted"] += 1
            client_sock.setblocking(False)
            link = _Link(self, client_sock)
            self._links.add(link)
            if self._faults.cut_after is not None:
                link.arm_cut(self._faults.cut_after)
            if self._faults.partition is None:
                link.open()
            # else: a blackhole partition: accepted, never read, never answered, until heal()

    def _reset_all(self) -> int:
        links = list(self._links)
        for link in links:
            self._reset_link(link)
        return len(links)

    def _reset_link(self, link: _Link) -> None:
        self._counts["reset"] += 1
        link.reset()

    def _link_closed(self, link: _Link) -> None:
        self._links.discard(link)

    def _link_cut(self, link: _Link) -> None:
        self._counts["cut"] += 1
        self._counts["reset"] += 1
        if self._faults.cut_once:
            self._change(cut_after=None, cut_once=False)

    def _count(self, direction: str, n: int) -> None:
        self._bytes[direction] += n

    def _snapshot(self) -> ProxyStats:
        return ProxyStats(
            bytes_upstream=self._bytes[UPSTREAM], bytes_downstream=self._bytes[DOWNSTREAM],
            connections_accepted=self._counts["accepted"], connections_active=len(self._links),
            connections_reset=self._counts["reset"], connections_cut=self._counts["cut"],
            upstream_failures=self._counts["upstream_failures"], faults=self._faults.describe(),
        )

    def _next_delay(self, direction: str) -> float:
        """Seconds to hold a chunk going in `direction` (0 when that direction is not delayed)."""
        faults = self._faults
        if not faults.delays(direction):
            return 0.0
        jitter = self._rng.uniform(-faults.jitter_ms, faults.jitter_ms) if faults.jitter_ms else 0.0
        return max(0.0, faults.delay_ms + jitter) / 1000.0

    async def _shutdown(self) -> None:
        self._stop_listening()
        for link in list(self._links):
            link.close_now()
        # Let the transports' connection_lost callbacks run so every socket is closed before the
        # loop is closed (no ResourceWarning, no leaked file descriptor).
        for _ in range(3):
            await asyncio.sleep(0)


@contextlib.contextmanager
def fault_proxy(upstream: tuple[str, int], listen: tuple[str, int] = (LOOPBACK, 0),
                *, seed: int = 0) -> Iterator[FaultProxy]:
    """`with fault_proxy(upstream=("127.0.0.1", port)) as proxy:` -> a running FaultProxy.

    Clients connect to `proxy.address`. The proxy runs in a background thread of this process and
    is closed (every connection with it) when the block ends.
    """
    proxy = FaultProxy(upstream, listen, seed=seed).start()
    try:
        yield proxy
    finally:
        proxy.close()


def _bind_listener(listen: tuple[str, int]) -> socket.socket:
    """A non-blocking socket bound to `listen`, not yet listening.

    Port 0 is resolved to a concrete free port first and then bound by number: Linux keeps an
    explicitly bound port reserved while the socket stops and restarts listening (see
    _stop_listening); a port the kernel picked at bind() time would be released.
    """
    host, port = listen
    attempts = 20 if port == 0 else 1
    for attempt in range(attempts):
        chosen = port or _kernel_free_port(host)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, chosen))
        except OSError:
            sock.close()
            if attempt == attempts - 1:
                raise
            continue
        sock.setblocking(False)
        return sock
    raise AssertionError("unreachable")


def _kernel_free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _reset_on_close(sock) -> None:
    """SO_LINGER {on, 0}: the next close() discards unsent data and sends RST instead of FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _unsent_bytes(sock) -> int:
    """Bytes still waiting in the kernel send queue (not yet on the wire), or 0 if unknown."""
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, struct.pack("i", 0))
    except OSError:
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
        except OSError:
            return 0
    return struct.unpack("i", raw)[0]


class _Side(asyncio.BufferedProtocol):
    """One of a link's two TCP connections: the client's (accepted) or the server's (dialled).

    A buffered protocol: the transport reads straight into the proxy's one receive buffer
    (recv_into), instead of allocating a new bytes object per read; large fresh allocations cost
    page faults, and that halved the throughput. Sharing one buffer is safe because the loop is
    single-threaded and a flow is done with what it is given before it returns: the kernel took
    it, or the flow copied it, or the transport kept it and the proxy moved on to a fresh buffer
    (see _Flow._write_through).
    """

    def __init__(self, link: _Link, name: str):
        self.link = link
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.inbound: _Flow | None = None    # the flow that carries bytes read from this side
        self.outbound: _Flow | None = None   # the flow that writes to this side
        self.lost = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        transport.pause_reading()   # the link resumes reading once both sides are connected

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link.proxy._receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.inbound.receive(self.link.proxy._receive_buffer[:nbytes])

    def eof_received(self) -> bool:
        self.inbound.receive_eof()
        return True                  # keep the other half open: TCP half-close passes through

    def pause_writing(self) -> None:      # our send buffer is full: stop reading the other side
        self.outbound.hold_reading("backpressure", True)

    def resume_writing(self) -> None:
        self.outbound.hold_reading("backpressure", False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.side_lost(self, exc)

    def rst(self) -> None:
        if self.transport is not None and not self.lost:
            _reset_on_close(self.transport.get_extra_info("socket"))
            self.transport.abort()


class _Flow:
    """The bytes going one way through a link: read from `src`, delivered to `dst`.

    Healthy: each chunk read is written straight to dst. Otherwise chunks wait in `queue` with a
    delivery time (delay), and nothing is read or delivered while the direction is stopped
    (partition, one-way).
    """

    def __init__(self, link: _Link, direction: str, src: _Side, dst: _Side):
        self.link = link
        self.proxy = link.proxy
        self.direction = direction
        self.src = src
        self.dst = dst
        self.direct = False                  # the fast path: no fault, nothing queued
        self.stopped = False
        self.queue: deque[tuple[float, bytes | None]] = deque()   # (deliver at, data or None = EOF)
        self.queued_bytes = 0
        self.timer: asyncio.TimerHandle | None = None
        self.read_holds: set[str] = {"opening"}
        self.eof_delivered = False
        self.cut_remaining: int | None = None   # downstream only: response bytes left before a cut

    def receive(self, data: memoryview) -> None:
        """Called with a view of the shared receive buffer, valid only during this call."""
        if self.direct:
            self._write_through(data)
            self.proxy._bytes[self.direction] += len(data)
            return
        self._enqueue(bytes(data))

    def _write_through(self, data: memoryview) -> None:
        """The fast path: hand the view to the transport, which usually sends it at once.

        What the kernel does not take at once stays in the transport's buffer, and since Python
        3.12 that buffer keeps a *reference* to the memoryview instead of a copy. So: behind bytes
        already queued, hand over a copy; and if a view of ours was kept, give it to the transport
        for good and read into a fresh buffer from now on.
        """
        transport = self.dst.transport
        if transport.get_write_buffer_size():
            transport.write(bytes(data))
        else:
            transport.write(data)
            if transport.get_write_buffer_size():
                self.proxy._receive_buffer = memoryview(bytearray(RECEIVE_BUFFER_SIZE))

    def receive_eof(self) -> None:
        self._enqueue(None)

    def _enqueue(self, data: bytes | None) -> None:
        # Never before the previous chunk: jitter may vary the delay, but TCP does not reorder.
        deliver_at = self.proxy._loop.time() + self.proxy._next_delay(self.direction)
        if self.queue:
            deliver_at = max(deliver_at, self.queue[-1][0])
        self.queue.append((deliver_at, data))
        if data:
            self.queued_bytes += len(data)
            self.hold_reading("delay", self.queued_bytes > MAX_DELAYED_BYTES)
        self.direct = False
        self.pump()

    def pump(self) -> None:
        """Deliver every queued chunk that is due, unless the direction is stopped."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.stopped or self.link.finished:
            return
        now = self.proxy._loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            if data is None:
                self._deliver_eof()
                continue
            self.queued_bytes -= len(data)
            if not self._deliver(data):
                return                       # the link was cut
        self.hold_reading("delay", self.queued_bytes > MAX_DELAYED_BYTES)
        if self.queue:
            self.timer = self.proxy._loop.call_at(self.queue[0][0], self.pump)
        else:
            self.direct = self._can_go_direct()

    def _deliver(self, data: bytes) -> bool:
        if self.cut_remaining is not None and len(data) >= self.cut_remaining:
            head = data[: self.cut_remaining]
            if head:
                self.dst.transport.write(head)
                self.proxy._count(self.direction, len(head))
            self.link.cut()
            return False
        if self.cut_remaining is not None:
            self.cut_remaining -= len(data)
        self.dst.transport.write(data)
        self.proxy._count(self.direction, len(data))
        return True

    def _deliver_eof(self) -> None:
        self.eof_delivered = True
        transport = self.dst.transport
        if not transport.is_closing() and transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                pass     # the other side is already gone (e.g. reset by a cut): nothing to half-close
        self.link.maybe_finished()

    def refresh(self) -> None:
        """Re-read the proxy's faults: stop or restart this direction, re-choose the fast path."""
        self.stopped = self.proxy._faults.stops(self.direction)
        self.hold_reading("stopped", self.stopped)
        self.pump()

    def _can_go_direct(self) -> bool:
        return (not self.queue and not self.stopped and self.cut_remaining is None
                and not self.proxy._faults.delays(self.direction) and not self.read_holds)

    def hold_reading(self, reason: str, on: bool) -> None:
        """Pause reading src while any reason holds (opening, stopped, delay buffer full, backpressure)."""
        before = bool(self.read_holds)
        if on:
            self.read_holds.add(reason)
        else:
            self.read_holds.discard(reason)
        after = bool(self.read_holds)
        transport = self.src.transport
        if transport is None or self.src.lost or before == after:
            if not after and not self.queue:
                self.direct = self._can_go_direct()
            return
        if after:
            self.direct = False
            transport.pause_reading()
        else:
            transport.resume_reading()
            self.direct = self._can_go_direct()


class _Link:
    """One proxied connection: the client's socket, the server's socket, a flow each way."""

    def __init__(self, proxy: FaultProxy, client_sock: socket.socket):
        self.proxy = proxy
        self.client_sock = client_sock
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.up = _Flow(self, UPSTREAM, self.client, self.server)
        self.down = _Flow(self, DOWNSTREAM, self.server, self.client)
        self.client.inbound, self.client.outbound = self.up, self.down
        self.server.inbound, self.server.outbound = self.down, self.up
        self.opened = False
        self.connected = False
        self.finished = False
        self.client_sock_handed_over = False   # True once an asyncio transport owns client_sock
        self.task: asyncio.Task | None = None

    def open(self) -> None:
        self.opened = True
        self.task = self.proxy._loop.create_task(self._connect())

    async def _connect(self) -> None:
        loop = self.proxy._loop
        try:
            await loop.create_connection(lambda: self.server, *self.proxy.upstream)
        except OSError:
            # The server is down: tell the client the way a real connection would, with a reset.
            self.proxy._counts["upstream_failures"] += 1
            self.finished = True
            self._rst_client_socket()
            self._done()
            return
        except asyncio.CancelledError:       # the proxy is shutting down
            self.server.rst()
            return
        if self.finished:                     # reset while we were dialling
            self.server.rst()
            return
        self.client_sock_handed_over = True
        try:
            await loop.connect_accepted_socket(lambda: self.client, self.client_sock)
        except (OSError, asyncio.CancelledError):
            self.server.rst()
            self.finished = True
            self._done()
            return
        if self.finished:
            self.client.rst()
            self.server.rst()
            return
        self.connected = True
        self.up.hold_reading("opening", False)
        self.down.hold_reading("opening", False)
        self.refresh()

    def refresh(self) -> None:
        if self.connected and not self.finished:
            self.up.refresh()
            self.down.refresh()

    def arm_cut(self, n_bytes: int | None) -> None:
        """Reset after n_bytes more response bytes (None: never). refresh() re-picks the fast path."""
        self.down.cut_remaining = n_bytes
        self.down.direct = False

    def cut(self) -> None:
        """The cut fired: stop both flows, let the last allowed byte leave the kernel, then RST."""
        self.finished = True
        for flow in (self.up, self.down):
            flow.hold_reading("cut", True)
            if flow.timer is not None:
                flow.timer.cancel()
        self.proxy._link_cut(self)
        self._rst_when_drained(time.monotonic() + CUT_DRAIN_TIMEOUT)

    def _rst_when_drained(self, give_up_at: float) -> None:
        # An RST discards whatever is still in our send queue, so wait until the n-th byte has
        # left: asyncio's buffer empty and the kernel's unsent count zero. A client that stopped
        # reading could keep it there for ever, hence the deadline.
        transport = self.client.transport
        drained = (self.client.lost or transport.get_write_buffer_size() == 0
                   and _unsent_bytes(transport.get_extra_info("socket")) == 0)
        if drained or time.monotonic() >= give_up_at:
            self.client.rst()
            self.server.rst()
            self._done()
        else:
            self.proxy._loop.call_later(0.001, self._rst_when_drained, give_up_at)

    def reset(self) -> None:
        """RST both ends now (partition refuse, reset_all)."""
        self.finished = True
        self._rst_client_socket()
        self.client.rst()
        self.server.rst()
        self._done()

    def close_now(self) -> None:
        """The proxy is shutting down: drop both connections."""
        self.finished = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.abort()
        if not self.client_sock_handed_over:
            self.client_sock.close()
        self._done()

    def _rst_client_socket(self) -> None:
        """Reset the client's socket while no transport owns it yet (held, or dialling upstream).

        Once handed to connect_accepted_socket the transport owns it, and _connect resets it.
        """
        if not self.client_sock_handed_over:
            self.client_sock_handed_over = True    # closed: nobody may hand it over now
            _reset_on_close(self.client_sock)
            self.client_sock.close()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        """One socket closed. An error there (a reset) is passed on to the other end as a reset."""
        if self.finished:
            return
        other = self.server if side is self.client else self.client
        if exc is not None:
            other.rst()
        elif other.transport is not None and not other.lost:
            other.transport.close()
        self.finished = True
        self._done()

    def maybe_finished(self) -> None:
        """Both directions delivered their EOF: a clean close at both ends."""
        if self.up.eof_delivered and self.down.eof_delivered and not self.finished:
            self.finished = True
            for side in (self.client, self.server):
                side.transport.close()
            self._done()

    def _done(self) -> None:
        for flow in (self.up, self.down):
            if flow.timer is not None:
                flow.timer.cancel()
                flow.timer = None
        self.proxy._link_closed(self)


# -- the command line: `python -m common.faultproxy --listen ... --to ...` ---------------------------

HELP = """\
commands (one per line; also read from a pipe):
  partition [refuse|blackhole]  cut the link: refuse = connections refused/reset,
                                blackhole (default) = accepted, never answered, nothing moves
  heal                          clear every fault; held bytes are delivered
  one-way up|down               stop one direction (up = to the server, down = to the client)
  delay MS [JITTER]             deliver every chunk MS (+/- JITTER) milliseconds late, each way
  cut N [once]                  reset connections after N bytes of the server's response
  reset                         reset every open connection now
  stats                         faults in force, connections and bytes so far
  help                          this list
  quit                          stop the proxy"""


class CommandError(ValueError):
    """A line at the prompt that is not a command; the message says what was expected."""


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple = ()


def parse_command(line: str) -> Command | None:
    """Parse one prompt line: a Command, or None for a blank line or a # comment."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    name, rest = words[0].lower(), words[1:]
    if name in ("help", "?", "heal", "reset", "stats", "quit", "exit"):
        _no_arguments(name, rest)
        return Command("quit" if name == "exit" else "help" if name == "?" else name)
    if name == "partition":
        mode = rest[0].lower() if rest else "blackhole"
        if mode not in PARTITION_MODES or len(rest) > 1:
            raise CommandError(f"partition takes refuse or blackhole, got {' '.join(rest)!r}")
        return Command("partition", (mode,))
    if name in ("one-way", "oneway", "one_way"):
        aliases = {"up": UPSTREAM, "upstream": UPSTREAM, "down": DOWNSTREAM, "downstream": DOWNSTREAM}
        if len(rest) != 1 or rest[0].lower() not in aliases:
            raise CommandError(f"one-way takes up or down, got {' '.join(rest)!r}")
        return Command("one-way", (aliases[rest[0].lower()],))
    if name == "delay":
        if not 1 <= len(rest) <= 2:
            raise CommandError("delay takes MS and an optional JITTER, e.g. 'delay 200' or 'delay 200 50'")
        return Command("delay", tuple(_milliseconds(word) for word in rest))
    if name == "cut":
        if not rest or len(rest) > 2 or (len(rest) == 2 and rest[1].lower() != "once"):
            raise CommandError("cut takes N bytes and an optional 'once', e.g. 'cut 100' or 'cut 0 once'")
        if not rest[0].isdigit():
            raise CommandError(f"cut: expected a whole number of bytes >= 0, got {rest[0]!r}")
        return Command("cut", (int(rest[0]), len(rest) == 2))
    raise CommandError(f"unknown command {words[0]!r}; type help for the list")


def _no_arguments(name: str, rest: list[str]) -> None:
    if rest:
        raise CommandError(f"{name} takes no arguments, got {' '.join(rest)!r}")


def _milliseconds(word: str) -> float:
    try:
        value = float(word.removesuffix("ms"))
    except ValueError:
        raise CommandError(f"delay: expected milliseconds >= 0, got {word!r}") from None
    if not 0 <= value < 3_600_000:
        raise CommandError(f"delay: expected milliseconds from 0 to 3600000, got {word!r}")
    return value


def execute(proxy: FaultProxy, command: Command) -> str:
    """Carry out one command on the proxy; return the line to print."""
    name, args = command.name, command.args
    if name == "help":
        return HELP
    if name == "stats":
        return format_stats(proxy.stats())
    if name == "partition":
        proxy.partition(args[0])
    elif name == "heal":
        proxy.heal()
    elif name == "one-way":
        proxy.one_way(args[0])
    elif name == "delay":
        proxy.delay(*args)
    elif name == "cut":
        proxy.cut_after(args[0], once=args[1])
    elif name == "reset":
        return f"ok: reset {proxy.reset_all()} connection(s)"
    return f"ok: {proxy.stats().faults}"


def format_stats(stats: ProxyStats) -> str:
    return (f"faults: {stats.faults} | connections: {stats.connections_accepted} accepted, "
            f"{stats.connections_active} open, {stats.connections_reset} reset "
            f"({stats.connections_cut} by a cut), {stats.upstream_failures} upstream failures | "
            f"bytes: {stats.bytes_upstream:,} up, {stats.bytes_downstream:,} down")


def _read_commands(interactive: bool) -> Iterator[str]:
    """Lines typed at a prompt (a terminal) or read from a pipe."""
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history at the prompt
        while True:
            try:
                yield input("faultproxy> ")
            except EOFError:
                print()
                return
    else:
        yield from sys.stdin


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(
        prog="python -m common.faultproxy",
        description="A TCP proxy that injects network faults on command: clients connect to "
                    "--listen, the proxy forwards to --to. Type commands at the prompt (or pipe "
                    "them in); after the input ends the proxy keeps running until Ctrl-C.",
        epilog=HELP, formatter_class=_RawEpilog)
    parser.add_argument("--listen", type=cli.host_port, default=(LOOPBACK, 7001), metavar="HOST:PORT",
                        help="where clients connect (default 127.0.0.1:7001)")
    parser.add_argument("--to", type=cli.host_port, default=(LOOPBACK, 6379), metavar="HOST:PORT",
                        help="the server to forward to (default 127.0.0.1:6379, a local Redis)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the delay jitter (default 0)")
    args = parser.parse_args(argv)

    proxy = FaultProxy(upstream=args.to, listen=args.listen, seed=args.seed)
    try:
        proxy.start()
    except OSError as exc:
        raise cli.bind_error(exc, *args.listen, port_flag="--listen", host_flag="--listen") from None
    try:
        host, port = proxy.address
        print(f"faultproxy: {host}:{port} -> {args.to[0]}:{args.to[1]}  (type help for commands)",
              flush=True)
        if not port_is_open(args.to[1], args.to[0]):
            print(f"note: nothing listens on {args.to[0]}:{args.to[1]} yet; "
                  f"clients are reset until something does", flush=True)
        interactive = sys.stdin.isatty()
        for line in _read_commands(interactive):
            try:
                command = parse_command(line)
            except CommandError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                continue
            if command is None:
                continue
            if command.name == "quit":
                return 0
            print(execute(proxy, command), flush=True)
        if not interactive:
            print("(end of input: still proxying; Ctrl-C to stop)", flush=True)
            threading.Event().wait()   # until Ctrl-C or SIGTERM
        return 0
    finally:
        proxy.close()


class _RawEpilog(argparse.RawDescriptionHelpFormatter):
    """Keep the command list's line breaks in --help."""


if __name__ == "__main__":
    sys.exit(cli.run(main))
