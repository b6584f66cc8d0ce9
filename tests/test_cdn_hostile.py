"""Bad and hostile input: the edge answers 400/431/505 (or passes the origin's own answer), never
crashes, never reads or writes a file, and cannot be steered to another origin or poisoned."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from tests.cdn_helpers import raw_exchange, request, start_edge


@pytest.fixture(scope="module")
def edge(origin):
    child, port = start_edge(origin.url)
    yield child, port
    child.stop()


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:80]
    return int(raw.split(b" ", 2)[1])


def assert_still_serving(port: int) -> None:
    assert request(port, "/__stats").status == 200


@pytest.mark.parametrize("wire, expected", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),                                      # HTTP/0.9-style, no version
    (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 400),
    (b"G\x00T / HTTP/1.1\r\n\r\n", 400),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\xab" * 40 + b"\r\n\r\n", 400),  # TLS hello
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET http://[bad/ HTTP/1.1\r\nConnection: close\r\n\r\n", 400),
    (b"GET /a#frag HTTP/1.1\r\n\r\n", 400),
    (b"TRACE /pot HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405),
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),                # HTTP/1.1 without Host
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),    # no chunked in 1.0
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n", 400),  # two Hosts
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\nab", 400),  # "\xb2".isdigit() is True
    # A declared 4 GB chunk is refused before it is read (413), not buffered first:
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\nabc", 413),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + b"a" * 40_000, 400),
    # Line ends other than CRLF (RFC 9112 §2.2), answered at once, not after the idle timeout:
    (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\n\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    # Controls in a field value (RFC 9110 §5.5), and only SP/HTAB are optional whitespace (§5.6.3):
    # "0\x0b" is not a Content-Length, "\x0bchunked" is not chunked.
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\x0b\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \x0c5\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\x0c\r\n\r\n0\r\n\r\n", 400),
    # A bare LF inside a chunk extension or a trailer field (RFC 9112 §7.1.1, §7.1.2):
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nc\r\nhello\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\nb\r\n\r\n", 400),
])
def test_malformed_requests_get_a_specific_error_and_the_edge_keeps_serving(edge, wire, expected):
    _, port = edge
    # Prompt: the edge answers and closes well before its 60 s idle timeout would.
    assert status_of(raw_exchange(port, wire, timeout=10)) == expected
    assert_still_serving(port)


def test_a_chunked_body_cut_off_in_its_trailer_section_gets_400(edge):
    _, port = edge
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: y")
        sock.shutdown(socket.SHUT_WR)  # the client stops sending in the middle of a trailer field
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert status_of(reply) == 400
    assert_still_serving(port)


def test_oversized_headers_get_431(edge):
    _, port = edge
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n"
    assert status_of(raw_exchange(port, huge)) == 431
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    assert status_of(raw_exchange(port, many)) == 431
    assert_still_serving(port)


def test_raw_crlf_in_the_url_cannot_inject_a_header(edge, origin):
    _, port = edge
    origin.script("/inject", [("Cache-Control", "no-store")], echo_headers=True)
    wire = b"GET /inject\r\nX-Injected: yes HTTP/1.1\r\nHost: x\r\n\r\n"
    assert status_of(raw_exchange(port, wire)) == 400
    assert origin.count("/inject") == 0


def test_encoded_crlf_stays_encoded_and_reaches_the_origin_as_data(edge, origin):
    _, port = edge
    target = "/inject%0d%0aX-Injected:%20yes"
    origin.script(target.replace("%0d%0a", "%0D%0A"), [("Cache-Control", "no-store")], echo_headers=True)
    reply = request(port, target)
    assert reply.status == 200
    seen = json.loads(reply.body)
    assert seen["target"] == "/inject%0D%0AX-Injected:%20yes"
    assert all(name.lower() != "x-injected" for name, _ in seen["headers"])


@pytest.mark.parametrize("target, origin_sees", [
    ("/../../etc/passwd", "/etc/passwd"),
    ("/static/../../../../etc/passwd", "/etc/passwd"),
    ("/%2e%2e/%2E%2E/etc/passwd", "/etc/passwd"),
    ("/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"),
    ("/static/..%2f..%2fetc%2fpasswd", "/static/..%2F..%2Fetc%2Fpasswd"),
    ("/./static/./app.js/..", "/static/"),
])
def test_traversal_never_climbs_above_the_origin_root(edge, origin, target, origin_sees):
    _, port = edge
    wire = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    raw = raw_exchange(port, wire)
    assert status_of(raw) == 404  # the origin's own answer for a path it does not have
    assert b"root:" not in raw
    assert origin.stats()["methods"].get(f"GET {origin_sees}", 0) >= 1


def test_edge_writes_no_files_at_all(edge):
    """The store is memory-only: after hostile requests the edge holds no regular file open except
    the log it was started with, so no URL can make it read or write the filesystem."""
    child, port = edge
    for target in ("/../../etc/passwd", "/%2e%2e/tmp/x", "/..%2f..%2ftmp%2fpwned"):
        raw_exchange(port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    fd_dir = f"/proc/{child.pid}/fd"
    if not os.path.isdir(fd_dir):
        pytest.skip("no /proc on this system")
    regular = []
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if stat.S_ISREG(os.stat(f"{fd_dir}/{fd}").st_mode):
                regular.append(target)
        except OSError:
            continue
    allowed = {str(child.log_path)}
    assert [path for path in regular if path not in allowed and not path.endswith(".py")] == []
    assert not os.path.exists("/tmp/pwned")


def test_host_header_cannot_choose_the_origin_or_poison_the_cache(edge, origin):
    _, port = edge
    origin.script("/poison", [("Cache-Control", "max-age=100")], echo_headers=True)
    attack = request(port, "/poison", headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example",
                                               "Forwarded": "host=evil.example"})
    assert attack.status == 200
    seen = json.loads(attack.body)
    received = {name.lower(): value for name, value in seen["headers"]}
    assert received["host"] == f"127.0.0.1:{origin.port}"  # the configured origin's authority
    assert "x-forwarded-host" not in received and "forwarded" not in received
    assert b"evil.example" not in attack.body
    # The normal user gets the same cached object: the attack neither created a separate
    # entry nor stored anything the attacker controls.
    normal = request(port, "/poison")
    assert normal.x_cache == "HIT" and b"evil.example" not in normal.body
    assert origin.count("/poison") == 1


def test_absolute_form_target_cannot_choose_the_origin(edge, origin):
    _, port = edge
    origin.script("/absolute", [("Cache-Control", "max-age=100")], body="from the real origin")
    wire = (b"GET http://evil.example:6666/absolute HTTP/1.1\r\n"
            b"Host: evil.example\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(port, wire)
    assert status_of(raw) == 200 and raw.endswith(b"from the real origin")
    assert origin.count("/absolute") == 1
    assert request(port, "/absolute").x_cache == "HIT"


def test_keep_alive_serves_many_requests_on_one_connection(edge, origin):
    _, port = edge
    origin.script("/ka", [("Cache-Control", "max-age=100")], body="k")
    wire = (b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n" * 5
            + b"GET /ka HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = raw_exchange(port, wire)
    assert raw.count(b"HTTP/1.1 200 OK") == 6
    assert origin.count("/ka") == 1
