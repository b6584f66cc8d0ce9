"""A real browser talks to our server: headless Chromium loads a page served by this test, whose
JavaScript opens a WebSocket to our server, sends a message and displays the echo; and Chromium
negotiates permessage-deflate with our server (the page reads `ws.extensions`)."""

from __future__ import annotations

import http.server
import threading

import pytest

from common import free_port

PAGE = """<!doctype html>
<html><body>
<p id="status">connecting</p><p id="echo"></p><p id="extensions"></p><p id="big"></p>
<script>
  const port = new URLSearchParams(location.search).get("ws");
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  const big = "compress me, please ✓ ".repeat(3000);  // ~66 KB that DEFLATE shrinks a lot
  let echoes = 0;
  ws.onopen = () => {
    show("status", "open");
    show("extensions", ws.extensions);
    ws.send("héllo from Chromium ✓");
  };
  ws.onmessage = (event) => {
    echoes += 1;
    if (echoes === 1) { show("echo", event.data); ws.send(big); ws.send(big); return; }
    if (event.data !== big) { show("big", "wrong echo"); return; }
    if (echoes === 3) { show("big", "two big echoes ok"); ws.close(1000, "done"); }
  };
  ws.onclose = (event) => { show("status", "closed " + event.code); };
  ws.onerror = () => { show("status", "error"); };
</script>
</body></html>
"""


class PageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server expects
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def page_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_chromium_echo_through_our_server(chromium, spawn, page_server):
    ws_port = free_port()
    server = spawn("WebSockets.server", "--port", ws_port, port=ws_port)
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{page_server}/?ws={ws_port}")
        page.wait_for_function("document.getElementById('echo').textContent !== ''", timeout=30_000)
        assert page.text_content("#echo") == "héllo from Chromium ✓"
        # RFC 7692: Chromium offers permessage-deflate and our server accepted it.
        assert page.text_content("#extensions") == ("permessage-deflate; server_max_window_bits=12; "
                                                    "client_max_window_bits=12")
        page.wait_for_function("document.getElementById('big').textContent !== ''", timeout=30_000)
        assert page.text_content("#big") == "two big echoes ok"
        page.wait_for_function("document.getElementById('status').textContent.startsWith('closed')",
                               timeout=30_000)
        assert page.text_content("#status") == "closed 1000"
    finally:
        context.close()
    assert "closed: code 1000 'done'" in server.output()
    assert "permessage-deflate" in server.output()  # logged on connect
