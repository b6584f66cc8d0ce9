"""common.faultproxy: every fault mode against plain servers on loopback, heal, concurrency, leaks.

Two kinds of upstream: an echo server (one thread per connection), and a bare listening socket
whose accepted end the test holds itself, so a test can send either way and see exactly what
crossed the proxy. "Nothing arrives" is checked by waiting a short, fixed time for a byte that
must not come; every positive check waits for the event itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from common import REPO_ROOT
from common.faultproxy import (
    Command,
    CommandError,
    FaultProxy,
    FaultProxyError,
    fault_proxy,
    parse_command,
)

SILENCE = 0.3   # seconds we wait for a byte that a fault must stop


class EchoServer:
    """A plain echo server: one thread per connection, sends back whatever it reads."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.active = 0
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return                      # closed by stop()
            with self.changed:
                self.active += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn):
        try:
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)   # the client half-closed: so do we
        except OSError:
            pass                                 # reset by the proxy: a fault under test
        finally:
            with self.changed:
                self.active -= 1
                self.changed.notify_all()

    def wait_idle(self, timeout=10.0):
        with self.changed:
            assert self.changed.wait_for(lambda: self.active == 0, timeout), "echo connections left"

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def echo():
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def proxy(echo):
    with fault_proxy(upstream=echo.address) as running:
        yield running


@pytest.fixture
def bare():
    """An upstream that only listens: the test accepts and holds the server's end itself."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    yield listener
    listener.close()


def connect(address, timeout=5.0):
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, f"EOF after {len(data)} of {n} bytes"
        data += chunk
    return data


def echo_round_trip(sock, payload=b"ping"):
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload


def assert_silent(sock):
    """No byte arrives within SILENCE seconds (and the connection is not closed either)."""
    sock.settimeout(SILENCE)
    with pytest.raises(TimeoutError):
        data = sock.recv(1)
        pytest.fail(f"expected silence, got {data!r}")
    sock.settimeout(5)


def read_until_reset(sock):
    """Everything that arrives before the connection is reset; fails if it ends with a clean EOF."""
    data = b""
    with pytest.raises(ConnectionResetError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                pytest.fail(f"clean EOF after {len(data)} bytes, expected a reset")
            data += chunk
    return data


def pair(proxy, bare):
    """A client connected through the proxy, and the server's end of the same connection."""
    client = connect(proxy.address)
    server, _ = bare.accept()
    server.settimeout(5)
    return client, server


# -- healthy path -------------------------------------------------------------------------------


def test_healthy_proxy_passes_bytes_both_ways_and_counts_them(proxy):
    with connect(proxy.address) as client:
        for size in (1, 1000, 300_000):      # the last one spans several reads
            payload = os.urandom(size)
            client.sendall(payload)
            assert recv_exactly(client, size) == payload
        client.shutdown(socket.SHUT_WR)        # half-close passes through: the echo server ends
        assert client.recv(1) == b""
    stats = proxy.wait_until(lambda s: s.connections_active == 0)
    assert stats.bytes_upstream == stats.bytes_downstream == 301_001
    assert stats.connections_accepted == 1
    assert stats.faults == "healthy"


def test_a_slow_reader_gets_every_byte_intact(bare):
    """Bytes the kernel could not take at once wait in asyncio's buffer (since Python 3.12 as a
    reference to the proxy's receive buffer, which must then not be reused)."""
    payload = os.urandom(1 << 20) * 8
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        sender = threading.Thread(target=lambda: (server.sendall(payload), server.close()))
        sender.start()
        digest, received = hashlib.sha256(), 0
        while chunk := client.recv(4096):            # small reads: the proxy's writes back up
            digest.update(chunk)
            received += len(chunk)
        sender.join()
        client.close()
    assert received == len(payload)
    assert digest.digest() == hashlib.sha256(payload).digest()


def test_server_that_is_down_resets_the_client_and_is_counted(bare):
    port = bare.getsockname()[1]
    bare.close()                               # nothing listens upstream now
    with fault_proxy(upstream=("127.0.0.1", port)) as proxy:
        # The reset may come so fast that connect() itself reports it (it reads SO_ERROR last).
        with pytest.raises(ConnectionResetError):
            with connect(proxy.address) as client:
                client.recv(1)
        assert proxy.stats().upstream_failures == 1


# -- partitions ---------------------------------------------------------------------------------


def test_refuse_partition_refuses_new_connections_and_resets_established_ones(bare):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        proxy.partition("refuse")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=5)
        assert read_until_reset(client) == b""
        with pytest.raises(ConnectionResetError):
            server.recv(1)
        assert proxy.stats().connections_reset == 1
        proxy.heal()
        client2, server2 = pair(proxy, bare)   # the same port listens again
        client2.sendall(b"back")
        assert recv_exactly(server2, 4) == b"back"
        for sock in (client, server, client2, server2):
            sock.close()


def test_blackhole_accepts_new_connections_and_never_answers_until_heal(bare):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        proxy.partition("blackhole")
        client = connect(proxy.address)        # the handshake succeeds ...
        client.sendall(b"hello?")
        assert_silent(client)                  # ... and then nothing
        bare.settimeout(SILENCE)
        with pytest.raises(TimeoutError):
            bare.accept()                      # the server never even sees a connection
        assert proxy.stats().connections_active == 1
        proxy.heal()                           # like TCP retransmission after a short partition
        bare.settimeout(5)
        server, _ = bare.accept()
        server.settimeout(5)
        assert recv_exactly(server, 6) == b"hello?"
        client.close()
        server.close()


def test_blackhole_stops_established_connections_both_ways_and_heal_delivers_in_order(bare):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        client.sendall(b"before ")
        assert recv_exactly(server, 7) == b"before "
        proxy.partition("blackhole")
        client.sendall(b"during")
        server.sendall(b"reply")
        assert_silent(server)
        assert_silent(client)
        proxy.heal()
        client.sendall(b" after")
        assert recv_exactly(server, 12) == b"during after"   # held, not dropped: no hole in the stream
        assert recv_exactly(client, 5) == b"reply"
        client.close()
        server.close()


def test_partition_mode_and_direction_are_checked(proxy):
    with pytest.raises(ValueError, match="refuse"):
        proxy.partition("sideways")
    with pytest.raises(ValueError, match="upstream"):
        proxy.one_way("up")
    with pytest.raises(ValueError):
        proxy.delay(-1)
    with pytest.raises(ValueError):
        proxy.cut_after(-5)


# -- one-way ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stopped", ["upstream", "downstream"])
def test_one_way_stops_one_direction_and_delivers_the_other(bare, stopped):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        proxy.one_way(stopped)
        client.sendall(b"request")
        server.sendall(b"response")
        if stopped == "upstream":
            assert recv_exactly(client, 8) == b"response"
            assert_silent(server)
        else:
            assert recv_exactly(server, 7) == b"request"
            assert_silent(client)
        assert stopped in proxy.stats().faults
        proxy.heal()
        if stopped == "upstream":
            assert recv_exactly(server, 7) == b"request"
        else:
            assert recv_exactly(client, 8) == b"response"
        client.close()
        server.close()


# -- delay --------------------------------------------------------------------------------------


def test_delay_adds_at_least_the_delay_each_way(proxy):
    with connect(proxy.address) as client:
        echo_round_trip(client)
        proxy.delay(100)
        started = time.monotonic()
        echo_round_trip(client)
        assert time.monotonic() - started >= 0.2      # 100 ms there, 100 ms back
        proxy.heal()
        echo_round_trip(client)


def test_delay_in_one_direction_only(proxy):
    with connect(proxy.address) as client:
        proxy.delay(150, direction="downstream")
        started = time.monotonic()
        echo_round_trip(client)
        assert time.monotonic() - started >= 0.15
        assert "downstream" in proxy.stats().faults


def test_jitter_never_reorders_bytes_and_respects_the_lower_bound(proxy):
    with connect(proxy.address) as client:
        proxy.delay(40, jitter_ms=30)
        started = time.monotonic()
        chunks = [bytes([i]) * 100 for i in range(40)]
        for chunk in chunks:                   # many separate chunks, each with its own jitter
            client.sendall(chunk)
        assert recv_exactly(client, 4000) == b"".join(chunks)
        assert time.monotonic() - started >= 2 * (40 - 30) / 1000


def test_jitter_is_seeded():
    def delays(seed):
        proxy = FaultProxy(upstream=("127.0.0.1", 9), seed=seed)
        proxy._faults.delay_ms, proxy._faults.jitter_ms = 100.0, 50.0
        return [proxy._next_delay("upstream") for _ in range(20)]

    assert delays(1) == delays(1)
    assert delays(1) != delays(2)
    assert all(0.05 <= d <= 0.15 for d in delays(3))


# -- cut and reset ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 100, 300_000])
def test_cut_after_delivers_exactly_n_response_bytes_then_resets_both_ends(bare, n):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        proxy.cut_after(n)
        client.sendall(b"GET")
        assert recv_exactly(server, 3) == b"GET"     # the request gets through
        received = []
        reader = threading.Thread(target=lambda: received.append(read_until_reset(client)))
        reader.start()                               # the client reads while the server writes
        response = os.urandom(n + 50_000)
        with pytest.raises(OSError) as raised:       # ECONNRESET / EPIPE once the proxy resets it
            server.sendall(response)
            server.recv(1)
        assert raised.value.errno in (errno.ECONNRESET, errno.EPIPE)
        reader.join(5)
        assert received == [response[:n]]
        assert proxy.stats().connections_cut == 1
        client.close()
        server.close()


def test_cut_counts_from_the_moment_it_is_armed(bare):
    with fault_proxy(upstream=bare.getsockname()) as proxy:
        client, server = pair(proxy, bare)
        server.sendall(b"x" * 10)
        assert recv_exactly(client, 10) == b"x" * 10
        proxy.cut_after(5)
        server.sendall(b"abc")
        assert recv_exactly(client, 3) == b"abc"
        proxy.delay(1)                               # another fault does not restart the count
        server.sendall(b"defgh")
        assert read_until_reset(client) == b"de"
        client.close()
        server.close()


def test_cut_once_lets_the_retry_through(proxy):
    proxy.cut_after(0, once=True)
    with connect(proxy.address) as first:
        first.sendall(b"commit")
        assert read_until_reset(first) == b""        # the server echoed; the reply was lost
    with connect(proxy.address) as retry:
        echo_round_trip(retry, b"commit")
    stats = proxy.stats()
    assert stats.connections_cut == 1
    assert stats.faults == "healthy"


def test_reset_all_resets_every_connection_and_keeps_serving(proxy, echo):
    clients = [connect(proxy.address) for _ in range(3)]
    for client in clients:
        echo_round_trip(client)
    assert proxy.reset_all() == 3
    for client in clients:
        assert read_until_reset(client) == b""
        client.close()
    echo.wait_idle()                                   # the server's ends were reset as well
    with connect(proxy.address) as fresh:
        echo_round_trip(fresh)


# -- concurrency and resources ------------------------------------------------------------------


def test_concurrent_connections_each_get_their_own_bytes(proxy):
    errors = []

    def worker(k):
        try:
            with connect(proxy.address) as client:
                for i in range(20):
                    echo_round_trip(client, f"{k}:{i}:".encode() * (k + 1))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = proxy.wait_until(lambda s: s.connections_active == 0)
    assert stats.connections_accepted == 40
    assert stats.bytes_upstream == stats.bytes_downstream


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_no_thread_or_fd_leak_after_1000_connections(echo):
    with fault_proxy(upstream=echo.address) as proxy:
        with connect(proxy.address) as warm_up:
            echo_round_trip(warm_up)
        proxy.wait_until(lambda s: s.connections_active == 0)
        echo.wait_idle()
        fds, threads = _open_fds(), threading.active_count()
        for i in range(1000):
            with connect(proxy.address) as client:
                echo_round_trip(client, b"%d" % i)
                if i % 3 == 0:
                    client.shutdown(socket.SHUT_WR)        # some close cleanly ...
                    assert client.recv(1) == b""
                # ... the rest just close with the echo server's reply read: FIN from our side
        proxy.wait_until(lambda s: s.connections_active == 0, timeout=10)
        echo.wait_idle()
        assert proxy.stats().connections_accepted == 1001
        assert _open_fds() == fds
        assert threading.active_count() == threads
    fds_without_proxy = _open_fds()
    assert fds_without_proxy < fds           # the proxy's own listener and loop are gone too


def test_no_fd_leak_through_the_fault_paths(echo):
    with fault_proxy(upstream=echo.address) as proxy:
        with connect(proxy.address) as warm_up:
            echo_round_trip(warm_up)
        proxy.wait_until(lambda s: s.connections_active == 0)
        echo.wait_idle()
        fds, threads = _open_fds(), threading.active_count()

        proxy.partition("blackhole")                   # held before they ever reach the server
        held = [connect(proxy.address) for _ in range(20)]
        for client in held:
            client.sendall(b"late")
        proxy.partition("refuse")                      # ... and reset from the hold
        for client in held:
            assert read_until_reset(client) == b""
            client.close()
        proxy.heal()

        proxy.cut_after(2)                             # cut mid-reply
        for _ in range(20):
            with connect(proxy.address) as client:
                client.sendall(b"hello")
                assert read_until_reset(client) == b"he"
        proxy.heal()

        opened = [connect(proxy.address) for _ in range(20)]
        for client in opened:
            echo_round_trip(client)
        proxy.delay(5)
        assert proxy.reset_all() == 20                 # reset while delayed
        for client in opened:
            client.close()

        proxy.wait_until(lambda s: s.connections_active == 0)
        echo.wait_idle()
        assert proxy.stats().connections_reset == 60
        assert _open_fds() == fds
        assert threading.active_count() == threads


def test_closed_proxy_refuses_calls_and_frees_its_port(echo):
    proxy = FaultProxy(upstream=echo.address).start()
    port = proxy.address[1]
    proxy.close()
    proxy.close()                                      # twice is fine
    with pytest.raises(FaultProxyError):
        proxy.partition()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))                # the port is free again


# -- the command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("line,expected", [
    ("partition", Command("partition", ("blackhole",))),
    ("partition refuse", Command("partition", ("refuse",))),
    ("  HEAL  ", Command("heal")),
    ("one-way up", Command("one-way", ("upstream",))),
    ("one-way down", Command("one-way", ("downstream",))),
    ("delay 200", Command("delay", (200.0,))),
    ("delay 200 50", Command("delay", (200.0, 50.0))),
    ("cut 100", Command("cut", (100, False))),
    ("cut 0 once", Command("cut", (0, True))),
    ("reset", Command("reset")),
    ("stats", Command("stats")),
    ("exit", Command("quit")),
    ("", None),
    ("# a comment in a piped script", None),
])
def test_parse_command(line, expected):
    assert parse_command(line) == expected


@pytest.mark.parametrize("line,says", [
    ("partition sideways", "refuse or blackhole"),
    ("one-way left", "up or down"),
    ("delay", "MS"),
    ("delay abc", "milliseconds"),
    ("delay -5", "milliseconds"),
    ("cut", "N bytes"),
    ("cut ten", "whole number"),
    ("cut 5 twice", "once"),
    ("heal now", "no arguments"),
    ("frobnicate", "unknown command"),
])
def test_parse_command_rejects_bad_lines_with_a_reason(line, says):
    with pytest.raises(CommandError, match=says):
        parse_command(line)


class ProxyCli:
    """`python -m common.faultproxy` as a child process, fed commands through a pipe."""

    def __init__(self, listen_port, upstream):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "common.faultproxy", "--listen", f"127.0.0.1:{listen_port}",
             "--to", f"{upstream[0]}:{upstream[1]}"],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1)
        self.banner = self.process.stdout.readline()

    def command(self, line):
        """Send one line; return the reply line from stdout."""
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def error_line(self, line):
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stderr.readline().strip()


def test_cli_commands_through_a_pipe(echo, free_port):
    cli = ProxyCli(free_port, echo.address)
    try:
        assert f"127.0.0.1:{free_port} -> 127.0.0.1:{echo.address[1]}" in cli.banner
        address = ("127.0.0.1", free_port)
        with connect(address) as client:
            echo_round_trip(client)
        assert cli.command("partition refuse") == "ok: partition (refuse)"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5)
        assert cli.error_line("partition sideways").startswith("error: partition takes")
        assert cli.command("heal") == "ok: healthy"       # still serving after the bad line
        assert cli.command("delay 100") == "ok: delay 100ms (each way)"
        with connect(address) as client:
            started = time.monotonic()
            echo_round_trip(client)
            assert time.monotonic() - started >= 0.2
        assert cli.command("cut 2 once").startswith("ok: delay 100ms (each way); cut after 2")
        with connect(address) as client:
            client.sendall(b"hello")
            assert read_until_reset(client) == b"he"
        assert cli.command("stats").startswith("faults: delay 100ms (each way) | connections: 3 accepted")
        assert cli.command("help").startswith("commands")
        cli.process.stdin.write("quit\n")
        cli.process.stdin.flush()
        assert cli.process.wait(timeout=10) == 0
        assert cli.process.stderr.read() == ""
    finally:
        if cli.process.poll() is None:
            cli.process.kill()
            cli.process.wait()
        for stream in (cli.process.stdin, cli.process.stdout, cli.process.stderr):
            stream.close()



@pytest.mark.parametrize("listen", ["192.0.2.1:7001", "taken"])
def test_cli_bind_errors_name_the_flag_it_has(listen):
    """The proxy takes --listen, not --host/--port: a bind error must send the user to --listen."""
    with socket.create_server(("127.0.0.1", 0)) as occupant:
        if listen == "taken":
            listen = f"127.0.0.1:{occupant.getsockname()[1]}"
        result = subprocess.run([sys.executable, "-m", "common.faultproxy", "--listen", listen],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "--listen" in result.stderr and "--host" not in result.stderr and "--port" not in result.stderr


def test_bench_runs_and_prints_one_row_per_path():
    result = subprocess.run(
        [sys.executable, "-m", "common.faultproxy_bench", "--repeats", "1", "--round-trips", "20",
         "--size", "256KiB"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    table = result.stdout.splitlines()
    assert table[1].split()[:3] == ["path", "p50", "ms"]
    assert [line[:16].strip() for line in table[2:5]] == ["direct", "proxy process", "proxy thread"]
    assert table[-1].startswith("trace event (common.trace): ")
