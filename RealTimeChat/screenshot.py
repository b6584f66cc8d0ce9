"""Take the README screenshot: a real server, two headless Chromium users, a short conversation.

    python -m RealTimeChat.screenshot [--out out/RealTimeChat/chat.png] [--chromium /usr/bin/chromium]

Uses Debian's Chromium through Playwright (never downloads a browser). Writes under `out/` by
default; `make figures-RealTimeChat` passes `--out RealTimeChat/images/chat.png`, the guide's picture.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import cli, free_port, spawn_module

CONVERSATION = [
    ("alice", "Morning! Is the deploy still on for 10:00?"),
    ("bob", "Yes - staging is green, I'm watching the dashboards."),
    ("carol", "I'll take the rollback plan if we need one."),
    ("bob", '<img src=x onerror="alert(1)"> <- shown as text, not run'),
    ("alice", "Great, thanks both. Ship it!"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.screenshot",
                                description="Screenshot the chat UI with a short conversation.")
    parser.add_argument("--out", type=cli.writable_path, default=cli.output_path("RealTimeChat", "chat.png"),
                        help="PNG to write (default out/RealTimeChat/chat.png)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        raise cli.UsageError(f"no Chromium at {args.chromium}: install Debian's `chromium` "
                             f"or pass --chromium PATH")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, \
            spawn_module("RealTimeChat.app", "--port", str(port), "--db", f"{tmp}/chat.sqlite3",
                         port=port), \
            sync_playwright() as playwright:
        url = f"http://127.0.0.1:{port}"
        print(f"server on {url}; starting Chromium")
        browser = playwright.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        pages = {}
        for name in ("alice", "bob", "carol"):
            page = browser.new_context(viewport={"width": 980, "height": 560}).new_page()
            page.goto(url)
            page.fill("#nickname", name)
            page.click("#join-button")
            page.locator("#chat").wait_for(state="visible")
            pages[name] = page
        viewer = pages["alice"]
        for name, text in CONVERSATION:
            pages[name].fill("#text", text)
            pages[name].click("#send")
            viewer.locator("#messages li .text", has_text=text[:20]).wait_for()
        carol = pages["carol"]                          # a private message: "@carol" turns bold
        carol.click("#presence li:has-text('alice')")
        carol.fill("#text", "psst - coffee after the deploy?")
        carol.click("#send")
        viewer.locator("#conversations li.unread", has_text="@carol").wait_for()
        pages["bob"].fill("#text", "one more thing")   # leaves "bob is typing…" on alice's screen
        expect(viewer.locator("#typing")).to_contain_text("bob")
        viewer.screenshot(path=str(cli.ensure_parent(args.out)))
        browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
