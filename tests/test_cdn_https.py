"""An https origin: the edge verifies its certificate (a private CA via --origin-cafile) and caches
as usual; without the CA it refuses the origin (502) instead of trusting whatever answers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from common import free_port
from tests.cdn_helpers import request, start_edge


@pytest.fixture
def certificate(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_https_origin_is_verified_and_cached(spawn, certificate):
    cert, key = certificate
    port = free_port()
    spawn("SimpleCDN.origin", "--port", port, "--latency-ms", "0", "--tls-cert", cert, "--tls-key", key,
          port=port)
    origin_url = f"https://127.0.0.1:{port}"
    _, trusting = start_edge(origin_url, "--origin-cafile", str(cert), spawn=spawn)
    first, second = request(trusting, "/static/app.js"), request(trusting, "/static/app.js")
    assert (first.status, first.x_cache, second.x_cache) == (200, "MISS", "HIT")
    assert second.body == first.body and b"app v1" in second.body

    _, untrusting = start_edge(origin_url, spawn=spawn)
    refused = request(untrusting, "/static/app.js")
    assert refused.status == 502 and b"TLS" in refused.body
