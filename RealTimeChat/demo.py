"""The headline demo: a real chat server and two scripted users talking through it.

    python -m RealTimeChat.demo [--keep-open]

Starts `python -m RealTimeChat.app` on a free port with a throw-away SQLite file, connects alice
and bob (python-socketio clients, the same protocol the browser speaks), and prints what each of
them receives: history, presence, room messages, a private message, an error. Then it restarts the
server to show the history survived. The last line is a one-line result for the tour.
"""

from __future__ import annotations

import sys
import tempfile
from contextlib import ExitStack
from typing import Any

from common import cli, free_port, spawn_module

from .client import ChatClient, disconnect_all

ROOM = "design-review"


def show(who: str, event: str, data: Any) -> None:
    if event == "message":
        detail = f"#{data['room']} [{data['id']}] {data['username']}: {data['text']}"
    elif event == "private_message":
        detail = f"(private #{data['id']}) {data['from']} -> {data['to']}: {data['text']}"
    elif event == "presence":
        detail = f"#{data['room']} online: {', '.join(data['users'])}"
    elif event == "history":
        detail = f"#{data['room']}: {len(data['messages'])} earlier message(s)"
    elif event == "error":
        detail = f"{data['code']}: {data['message']}"
    else:
        detail = str(data)
    print(f"  {who:>8} <- {event:<15} {detail}")


def start_server(db: str):
    port = free_port()
    child = spawn_module("RealTimeChat.app", "--port", str(port), "--db", db, port=port)
    return child, f"http://127.0.0.1:{port}"


def converse(url: str) -> dict[str, Any]:
    """Alice and bob join, talk, whisper, trip over a rule. Returns what the result line needs."""
    alice = ChatClient(url, "alice").connect()
    bob = ChatClient(url, "bob").connect()
    try:
        print(f"alice and bob connect over {alice.transport}")
        show("alice", "history", {"room": ROOM, "messages": alice.joined(ROOM, "alice")})
        show("alice", "presence", alice.wait_for("presence"))
        show("bob", "history", {"room": ROOM, "messages": bob.joined(ROOM, "bob")})
        show("alice", "presence", alice.wait_for("presence", lambda p: "bob" in p["users"]))

        print("alice and bob talk in the room:")
        lines = [(alice, "Shall we shard the orders table by customer id?"),
                 (bob, "Yes, with consistent hashing so adding a shard moves ~1/n of the keys."),
                 (alice, "Agreed. I'll write it up.")]
        for speaker, text in lines:
            speaker.say(ROOM, text)
            show("bob", "message", bob.wait_for("message", lambda m, t=text: m["text"] == t))

        print("alice sends bob a private message (only bob gets it; alice gets the echo):")
        alice.whisper("bob", "Lunch after the review?")
        show("bob", "private_message", bob.wait_for("private_message"))
        show("alice", "private_message", alice.wait_for("private_message"))

        print("bob breaks a rule, an intruder breaks two; each gets an error and stays connected:")
        bob.say(ROOM, "x" * 2001)
        show("bob", "error", bob.wait_for("error"))
        intruder = ChatClient(url, "intruder").connect()
        intruder.join(ROOM, "Alice")                 # nicknames are unique, ignoring case
        show("intruder", "error", intruder.wait_for("error"))
        intruder.emit("connect")                     # the server's own lifecycle event: refused
        show("intruder", "error", intruder.wait_for("error"))
        violations = len(bob.received("error")) + len(intruder.received("error"))
        intruder.drop()
        bob.say(ROOM, "Sorry, still here.")
        show("alice", "message", alice.wait_for("message", lambda m: m["text"].startswith("Sorry")))
        return {"messages": len(lines) + 1, "private": len(bob.received("private_message")),
                "bob_still_connected": bob.connected, "violations": violations}
    finally:
        disconnect_all([alice, bob])


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m RealTimeChat.demo",
                                description="Two scripted users chat through a real server.")
    parser.add_argument("--keep-open", action="store_true",
                        help="leave the server running at the end so you can open the UI")
    args = parser.parse_args(argv)
    # The servers are stopped (ExitStack) before the folder holding their SQLite file is removed,
    # on every exit path, Ctrl-C included: nothing is left in /tmp.
    with tempfile.TemporaryDirectory(prefix="chat-demo-") as tmp, ExitStack() as servers:
        db = f"{tmp}/chat.sqlite3"
        server, url = start_server(db)
        servers.callback(server.stop)
        print(f"chat server on {url} (history in {db})")
        outcome = converse(url)
        print("restarting the server: the room's history is on disk")
        server.stop()
        server, url = start_server(db)
        servers.callback(server.stop)
        carol = ChatClient(url, "carol").connect()
        history = carol.joined(ROOM, "carol")
        show("carol", "history", {"room": ROOM, "messages": history})
        carol.drop()
        if args.keep_open:
            input(f"\nthe UI is at {url}/ -- open it in a browser; press Enter to stop ")
        else:
            print("\nTo try the UI: python -m RealTimeChat.app, then open http://127.0.0.1:5000/ "
                  "(or run this demo with --keep-open).")
    sent = outcome["messages"]
    ok = (outcome["bob_still_connected"] and outcome["violations"] == 3 and outcome["private"] == 1
          and len(history) == sent)
    print(f"result: {sent} room messages + {outcome['private']} private delivered, "
          f"{outcome['violations']} rule violations answered with errors, history {len(history)}/{sent} "
          f"after restart{'' if ok else ' -- UNEXPECTED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
