"""Module-scoped SimpleCDN fixtures shared by several test files (loaded by tests/conftest.py).

`origin`: the bundled scripted origin (`SimpleCDN.origin`); `edge`: an edge in front of it, as its
port. Module scope: one pair per test file, so files do not see each other's cached objects. A file
that needs another set-up (flags, a rogue origin) defines its own `origin`/`edge`, which wins.
"""

from __future__ import annotations

import pytest

from tests.cdn_helpers import start_edge, start_origin


@pytest.fixture(scope="module")
def origin():
    o = start_origin()
    yield o
    o.child.stop()


@pytest.fixture(scope="module")
def edge(origin):
    child, port = start_edge(origin.url)
    yield port
    child.stop()
