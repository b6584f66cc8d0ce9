"""RealTimeChat in a real headless Chromium: two browser contexts (two users) chat through the UI.

Marked `browser` automatically (the `chromium` fixture); skipped with a reason when Chromium is
absent. Locators wait for the DOM by themselves, so there is no sleep anywhere.
"""

from __future__ import annotations

import pytest

from tests.chat_helpers import start_chat

XSS = '<img src=x onerror="window.__xss=1">'


@pytest.fixture
def chat_url(spawn, data_dir):
    _, url = start_chat(spawn, db=str(data_dir / "chat.sqlite3"))
    return url


def open_as(chromium, url: str, nickname: str):
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.websockets = []  # URLs of the WebSockets the page opens
    page.on("websocket", lambda ws: page.websockets.append(ws.url))
    page.goto(url)
    page.fill("#nickname", nickname)
    page.fill("#room", "lobby")
    page.click("#join-button")
    page.locator("#chat").wait_for(state="visible", timeout=15_000)
    return context, page, errors


def send(page, text: str) -> None:
    page.fill("#text", text)
    page.click("#send")


def expect_text(page, selector: str, text: str) -> None:
    page.locator(selector, has_text=text).first.wait_for(timeout=15_000)


def test_two_browsers_chat_presence_and_no_html_injection(chromium, chat_url):
    from playwright.sync_api import expect

    alice_ctx, alice, alice_errors = open_as(chromium, chat_url, "alice")
    bob_ctx, bob, bob_errors = open_as(chromium, chat_url, "bob")
    try:
        # The Socket.IO client (served by our app) talks Engine.IO 4 over a real WebSocket.
        assert any("/socket.io/?EIO=4&transport=websocket" in url for url in alice.websockets)

        expect(alice.locator("#presence li")).to_have_text(["alice", "bob"], timeout=15_000)
        expect(bob.locator("#presence li")).to_have_text(["alice", "bob"], timeout=15_000)

        send(alice, "hi bob")
        expect_text(bob, "#messages li", "hi bob")

        send(bob, XSS)
        for page in (alice, bob):
            message = page.locator("#messages li .text", has_text="onerror")
            message.wait_for(timeout=15_000)
            assert message.inner_text() == XSS            # shown as text, character for character
            assert page.locator("#messages img").count() == 0
            assert page.evaluate("() => window.__xss") is None   # undefined in JS

        # Typing indicator, then a private message from the presence list.
        bob.type("#text", "x")
        expect_text(alice, "#typing", "bob is typing")
        alice.click("#presence li:has-text('bob')")
        send(alice, "a secret")
        expect_text(bob, "#conversations li", "@alice")
        bob.click("#conversations li:has-text('@alice')")
        expect_text(bob, "#messages li", "a secret")

        # Bob closes his browser: alice's presence list shrinks.
        bob_ctx.close()
        alice.click("#conversations li:has-text('#lobby')")
        expect(alice.locator("#presence li")).to_have_text(["alice"], timeout=15_000)
        assert alice_errors == [] and bob_errors == []
    finally:
        alice_ctx.close()
        if bob_ctx.pages:
            bob_ctx.close()


def test_browser_shows_server_errors(chromium, chat_url):
    from playwright.sync_api import expect

    first_ctx, _, _ = open_as(chromium, chat_url, "carol")
    second_ctx = chromium.new_context()
    try:
        page = second_ctx.new_page()
        page.goto(chat_url)
        page.fill("#nickname", "Carol")
        page.click("#join-button")
        expect(page.locator("#error")).to_contain_text("nickname_taken", timeout=15_000)
        expect(page.locator("#login")).to_be_visible()
    finally:
        first_ctx.close()
        second_ctx.close()


def test_a_message_typed_while_the_server_is_down_goes_from_sending_to_sent_once(chromium, spawn, data_dir):
    from playwright.sync_api import expect

    from common import free_port

    port = free_port()
    db = str(data_dir / "chat.sqlite3")
    server = spawn("RealTimeChat.app", "--port", port, "--db", db, port=port)
    context, page, errors = open_as(chromium, f"http://127.0.0.1:{port}", "alice")
    try:
        send(page, "before the outage")
        expect(page.locator('#messages li[data-state="sent"]', has_text="before the outage")).to_be_visible(
            timeout=15_000)
        server.stop()
        expect(page.locator("#status")).to_have_text("offline", timeout=15_000)
        send(page, "typed during the outage")
        pending = page.locator("#messages li", has_text="typed during the outage")
        expect(pending).to_have_attribute("data-state", "sending")
        expect(pending).to_contain_text("sending")
        spawn("RealTimeChat.app", "--port", port, "--db", db, port=port)   # back, same history file
        expect(pending).to_have_attribute("data-state", "sent", timeout=30_000)
        expect(pending).to_have_count(1)                                   # shown once
        expect(page.locator("#messages li", has_text="before the outage")).to_have_count(1)
        assert errors == []
    finally:
        context.close()
    # Stored once: a newcomer's history has it exactly once.
    from RealTimeChat.client import ChatClient

    bob = ChatClient(f"http://127.0.0.1:{port}", "bob").connect()
    try:
        texts = [m["text"] for m in bob.joined("lobby", "bob")]
    finally:
        bob.drop()
    assert texts == ["before the outage", "typed during the outage"]
