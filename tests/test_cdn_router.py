"""The router sends clients to the nearest healthy edge, and away from an edge that was SIGKILLed."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

import pytest

from common import free_port
from SimpleCDN.router import EdgeInfo, HealthChecker, NoHealthyEdge, choose_edge, parse_edge
from tests.cdn_helpers import request, start_edge, start_origin


def test_choose_edge_prefers_the_nearest_healthy_one():
    edges = [EdgeInfo("far", "http://f", 80), EdgeInfo("near", "http://n", 5),
             EdgeInfo("mid", "http://m", 30)]
    assert choose_edge(edges).name == "near"
    edges[1].healthy = False
    assert choose_edge(edges).name == "mid"
    for edge in edges:
        edge.healthy = False
    with pytest.raises(NoHealthyEdge):
        choose_edge(edges)


def test_parse_edge_spec():
    assert parse_edge("tokyo=http://127.0.0.1:8001/@5") == EdgeInfo("tokyo", "http://127.0.0.1:8001", 5.0)
    for bad in ("tokyo=127.0.0.1:8001@5", "tokyo=foo@5", "=http://x@5", "tokyo=http://x@far"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_edge(bad)


def test_an_edge_that_does_not_speak_http_is_unhealthy_and_the_checker_survives():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_garbage():
            for _ in range(2):
                connection, _ = server.accept()
                with connection:
                    connection.recv(65536)
                    connection.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        edge = EdgeInfo("odd", f"http://127.0.0.1:{port}", 5)
        checker = HealthChecker([edge], timeout=10)
        checker.check_once()  # used to raise http.client.BadStatusLine and end the checker thread
        checker.check_once()
        thread.join(timeout=30)
    assert not edge.healthy


def wait_for_route(port: int, expected: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = request(port, "/__route")
        route = json.loads(reply.body) if reply.status == 200 else {"edge": None, "status": reply.status}
        if route.get("edge") == expected or time.monotonic() > deadline:
            return route
        time.sleep(0.05)


def test_router_fails_over_when_the_nearest_edge_dies(spawn):
    origin = start_origin(spawn)
    origin.script("/page", [("Cache-Control", "max-age=100")], body="page")
    near, near_port = start_edge(origin.url, "--name", "near", spawn=spawn)
    _, far_port = start_edge(origin.url, "--name", "far", spawn=spawn)
    router_port = free_port()
    spawn("SimpleCDN.router", "--port", router_port, "--check-interval", "0.1",
          "--edge", f"far=http://127.0.0.1:{far_port}@80", "--edge", f"near=http://127.0.0.1:{near_port}@5",
          port=router_port)
    assert wait_for_route(router_port, "near")["edge"] == "near"
    redirect = request(router_port, "/page")
    assert redirect.status == 307 and redirect.headers["location"] == f"http://127.0.0.1:{near_port}/page"
    near.kill()
    assert wait_for_route(router_port, "far")["edge"] == "far"
    assert request(router_port, "/page").headers["location"] == f"http://127.0.0.1:{far_port}/page"
    assert request(far_port, "/page").body == b"page"
