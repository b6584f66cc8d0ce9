"""Fixtures shared by every concept's tests, on top of `common` (real processes, real Redis).

- free_port            a free loopback TCP port
- data_dir             an empty temporary directory for databases and logs
- spawn(module, *args, port=p)  start `python -m module`, wait for its port; stopped after the test
- redis_url            a redis URL with an empty database (REDIS_URL if set, else a private server)
- redis_urls(n)        n independent redis URLs (see common.redis_servers)
- redis_process()      a RedisServer process you may kill/pause/restart (skipped when REDIS_URL is set)
- chromium             a headless Chromium browser (Playwright); the test is marked `browser` and is
                       skipped with a reason when /usr/bin/chromium is not installed
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import redis

from common import REDIS_URL_ENV, RedisServer, RedisUnavailable, check_reachable, redis_servers, spawn_module
from common import free_port as _free_port

# SimpleCDN's module-scoped origin/edge pair, shared by several of its test files.
pytest_plugins = ["tests.cdn_fixtures"]

CONCEPT_MARKERS = ("common", "blocking_queue", "threading", "ws", "chat", "twopc", "uid", "cdn",
                   "hashing", "locking")
CHROMIUM_PATH = "/usr/bin/chromium"


def pytest_sessionstart(session):
    """An unreachable REDIS_URL is one clear error for the whole run, not an error in every test."""
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        try:
            check_reachable(external)
        except RedisUnavailable as exc:
            pytest.exit(f"error: {exc}", returncode=3)


def pytest_collection_modifyitems(config, items):
    """Mark each test with its concept, taken from its path: tests/test_<marker>*.py or tests/<marker>/."""
    tests_dir = Path(__file__).parent
    for item in items:
        first = Path(item.fspath).relative_to(tests_dir).parts[0]
        name = first.removesuffix(".py").removeprefix("test_")
        for marker in CONCEPT_MARKERS:
            if name == marker or name.startswith(marker + "_"):
                item.add_marker(marker)
                break
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker("browser")


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def spawn(tmp_path: Path):
    """Factory: spawn("Concept.server", "--port", str(p), port=p) -> ChildProcess (stopped at teardown)."""
    children = []

    def _spawn(module: str, *args: str, port: int | None = None, env: dict | None = None,
               timeout: float = 20.0):
        child = spawn_module(module, *map(str, args), port=port, env=env, timeout=timeout,
                             log_dir=tmp_path)
        children.append(child)
        return child

    yield _spawn
    for child in reversed(children):
        child.stop(grace=5.0)


@pytest.fixture(scope="session")
def _session_redis_url():
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        yield external
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_url(_session_redis_url: str) -> str:
    """A redis URL whose database is empty at the start of the test."""
    client = redis.Redis.from_url(_session_redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return _session_redis_url


@pytest.fixture
def redis_urls():
    """Factory: redis_urls(n) -> n independent, empty redis URLs (servers stopped after the test)."""
    contexts = []

    def _urls(n: int) -> list[str]:
        ctx = redis_servers(n)
        urls = ctx.__enter__()
        contexts.append(ctx)
        for url in urls:
            client = redis.Redis.from_url(url)
            client.flushdb()
            client.close()
        return urls

    yield _urls
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


@pytest.fixture
def redis_process():
    """Factory: redis_process() -> a started RedisServer you may kill(), pause(), restart()."""
    if os.environ.get(REDIS_URL_ENV):
        pytest.skip("needs redis-server processes of its own to kill; REDIS_URL is set")
    servers: list[RedisServer] = []

    def _start(port: int | None = None) -> RedisServer:
        server = RedisServer(port=port).start()
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def _playwright_browser():
    if not Path(CHROMIUM_PATH).exists():
        pytest.skip(f"no Chromium at {CHROMIUM_PATH}: install Debian's `chromium` (bash .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (requirements-dev.txt)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH,
            headless=True,
            # The machine has no internet: stop Chromium from phoning home at every start.
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


@pytest.fixture
def chromium(_playwright_browser):
    """The session's headless Chromium. Open pages with chromium.new_context().new_page()."""
    return _playwright_browser


def pytest_report_header(config):
    where = os.environ.get(REDIS_URL_ENV) or "private redis-server processes started by the tests"
    browser = CHROMIUM_PATH if shutil.which(CHROMIUM_PATH) else "absent (browser tests skip)"
    return [f"redis: {where}", f"chromium: {browser}"]
