"""core.logs: records carry the request's id inside its scope, in threads that enter it, in both formats."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from core.logs import NO_REQUEST, LogSettings, configure_logging, current_request_id, request_scope


@pytest.fixture
def json_lines(tmp_path):
    """Configures JSON logs into tmp_path; returns a reader of the lines written so far."""
    handler = configure_logging(LogSettings(format="json", dir=str(tmp_path)), component="test", replica="r1")
    yield lambda: [json.loads(line) for f in sorted(tmp_path.glob("test-*.log")) for line in f.read_text().splitlines()]
    for name in ("specroute", "router", "drafter_service", "verifier_service", "core"):
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).propagate = True
    handler.close()


def test_scope_sets_and_restores_the_id():
    assert current_request_id() == NO_REQUEST
    with request_scope("abc"):
        assert current_request_id() == "abc"
        with request_scope("inner"):
            assert current_request_id() == "inner"
        assert current_request_id() == "abc"
    assert current_request_id() == NO_REQUEST


def test_json_lines_carry_the_id_component_and_replica(json_lines):
    log = logging.getLogger("router.test")
    log.info("outside")
    with request_scope("req-1"):
        log.info("inside %d", 1)
    lines = json_lines()
    assert [(r["message"], r["request_id"]) for r in lines] == [("outside", NO_REQUEST), ("inside 1", "req-1")]
    assert {r["component"] for r in lines} == {"test"} and {r["replica"] for r in lines} == {"r1"}
    assert {"time", "level", "pid", "logger"} <= set(lines[0])


def test_asyncio_tasks_keep_their_own_ids_and_threads_enter_their_own_scope(json_lines):
    log = logging.getLogger("verifier_service.test")

    async def session(rid: str) -> None:
        with request_scope(rid):
            await asyncio.sleep(0.01)
            log.info("session")

    async def both() -> None:
        await asyncio.gather(session("a"), session("b"))

    asyncio.run(both())

    def worker() -> None:
        log.info("thread without scope")
        with request_scope("t"):
            log.info("thread with scope")

    with request_scope("caller"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    got = sorted((r["message"], r["request_id"]) for r in json_lines())
    assert got == [("session", "a"), ("session", "b"), ("thread with scope", "t"),
                   ("thread without scope", NO_REQUEST)]


def test_text_format_and_reconfiguring_replaces_the_handler(tmp_path):
    first = configure_logging(LogSettings(dir=str(tmp_path)), component="one")
    second = configure_logging(LogSettings(dir=str(tmp_path)), component="two")
    try:
        assert [h for h in logging.getLogger("core").handlers if h.get_name() == "specroute"] == [second]
        with request_scope("xyz"):
            logging.getLogger("core.test").warning("hello")
        text = "".join(f.read_text() for f in tmp_path.glob("two-*.log"))
        assert " WARNING two xyz core.test: hello" in text
    finally:
        for name in ("specroute", "router", "drafter_service", "verifier_service", "core"):
            logging.getLogger(name).removeHandler(second)
            logging.getLogger(name).propagate = True
        first.close()
        second.close()


def test_settings_refuse_unknown_formats():
    with pytest.raises(ValueError):
        LogSettings(format="xml")
