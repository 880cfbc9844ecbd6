"""The logging pipeline: framework and our records, same format, extras kept, no secrets."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from livekit.agents.ipc.log_queue import LogQueueListener
from livekit.agents.log import logger as lk_logger
from livekit.agents.utils.aio import duplex_unix

from agent.config import load_settings
from agent.logs import (
    RedactingFilter,
    configure_structlog,
    get_logger,
    install_livekit_logging_hook,
    install_on_root_handlers,
)
from agent.redact import REDACTED, REDACTOR
from tests.fixtures.worker import FAKE_SECRETS, job_process_logging_main, valid_env

SECRET = FAKE_SECRETS["OPENAI_API_KEY"]


@pytest.fixture
def root_stream(clean_redactor: None) -> Iterator[io.StringIO]:
    """A root StreamHandler like LiveKit's, with our JSON formatter; secrets registered."""
    load_settings(valid_env())  # registers every FAKE_SECRETS value with the redactor
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    old_level, old_lk_level = root.level, lk_logger.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    lk_logger.setLevel(logging.DEBUG)
    configure_structlog()
    install_on_root_handlers(json=True, colors=False, handlers=[handler])
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        lk_logger.setLevel(old_lk_level)
        structlog.contextvars.clear_contextvars()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in stream.getvalue().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line must be JSON


def assert_no_secret(text: str) -> None:
    for secret in FAKE_SECRETS.values():
        assert secret not in text


def test_framework_record_keeps_extra_fields(root_stream: io.StringIO) -> None:
    lk_logger.info("registered worker", extra={"id": "AW_123", "protocol": 17, "region": "eu"})
    (line,) = json_lines(root_stream)
    assert line["message"] == "registered worker"
    assert line["level"] == "INFO"
    assert line["logger"] == "livekit.agents"
    assert (line["id"], line["protocol"], line["region"]) == ("AW_123", 17, "eu")
    assert line["timestamp"].endswith("Z") and "pid" in line
    assert list(line)[:4] == ["timestamp", "level", "logger", "message"]


def test_our_structlog_event_same_format_with_context(root_stream: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(job_id="AJ_1", room="lobby")
    get_logger("agent.worker").info("starting session", llm_model="gpt-4.1-mini", name="n")
    (line,) = json_lines(root_stream)
    assert line["message"] == "starting session"
    assert line["logger"] == "agent.worker"
    assert (line["job_id"], line["room"], line["llm_model"]) == ("AJ_1", "lobby", "gpt-4.1-mini")
    # a key that would shadow a LogRecord attribute is kept, renamed, not a crash
    assert line["name_"] == "n"


def test_secrets_are_redacted_in_framework_and_our_records(root_stream: io.StringIO) -> None:
    lk_logger.warning(
        "connect failed for key %s",
        SECRET,
        extra={
            "api_key": "anything-at-all",
            "headers": {"Authorization": f"Api-Key {FAKE_SECRETS['BASETEN_API_KEY']}"},
            "url": "wss://x.livekit.cloud/rtc?access_token=eyJhbGciOiJI.eyJzdWIiOiJh.c2ln",
            "prompt_tokens": 12,
        },
    )
    get_logger("agent.x").error("oops", secret=FAKE_SECRETS["LIVEKIT_API_SECRET"], raw=SECRET)
    text = root_stream.getvalue()
    assert_no_secret(text)
    assert "eyJhbGciOiJI.eyJzdWIiOiJh.c2ln" not in text
    first, second = json_lines(root_stream)
    assert first["message"] == f"connect failed for key {REDACTED}"
    assert first["api_key"] == REDACTED
    assert first["headers"] == {"Authorization": REDACTED}
    assert first["prompt_tokens"] == 12  # usage counters are not mistaken for tokens
    assert second["secret"] == REDACTED and second["raw"] == REDACTED


def test_exception_text_is_redacted(root_stream: io.StringIO) -> None:
    try:
        raise ValueError(f"bad key {SECRET}")
    except ValueError:
        get_logger("agent.x").exception("failed")
    (line,) = json_lines(root_stream)
    assert "ValueError: bad key [REDACTED]" in line["exception"]
    assert_no_secret(json.dumps(line))


def test_job_process_records_pickled_to_main_keep_extras_and_context(
    root_stream: io.StringIO,
) -> None:
    """A real child process logs through LiveKit's LogQueueHandler; the parent's real
    LogQueueListener re-emits the unpickled records into our root handler."""
    parent_sock, child_sock = socket.socketpair()

    def add_proc_ctx(record: logging.LogRecord) -> None:
        # what SupervisedProc/JobProcExecutor add in the main process
        record.pid = 4242
        record.job_id = "AJ_main"
        record.room = "room-main"

    listener = LogQueueListener(duplex_unix._Duplex.open(parent_sock), add_proc_ctx)
    listener.start()
    proc = multiprocessing.get_context("spawn").Process(
        target=job_process_logging_main, args=(child_sock, SECRET)
    )
    proc.start()
    child_sock.close()
    proc.join(timeout=60)
    listener.stop()
    assert proc.exitcode == 0

    lines = json_lines(root_stream)
    by_message = {line["message"]: line for line in lines}
    assert set(by_message) == {"framework line", "our line", "our failure"}, lines

    framework = by_message["framework line"]
    assert framework["logger"] == "livekit.agents"
    assert framework["attempt"] == 2
    assert framework["api_key"] == REDACTED
    assert (framework["job_id"], framework["room"], framework["pid"]) == (
        "AJ_main",
        "room-main",
        4242,
    )

    ours = by_message["our line"]
    assert ours["logger"] == "agent.child" and ours["turn"] == 3
    assert ours["job_id"] == "AJ_main"  # the main process's job fields win, as in LiveKit

    failure = by_message["our failure"]
    assert failure["level"] == "ERROR"
    assert "RuntimeError: boom with [REDACTED]" in failure["exception"]
    assert "Traceback" not in failure["message"]  # traceback split out of the message
    assert_no_secret(root_stream.getvalue())


def test_livekit_setup_logging_hook_gives_one_line_in_our_format(
    capsys: pytest.CaptureFixture[str], clean_redactor: None
) -> None:
    from livekit.agents.cli import cli as lk_cli

    original = lk_cli.setup_logging  # type: ignore[attr-defined]
    root = logging.getLogger()
    before = list(root.handlers)
    old_level = root.level
    try:
        install_livekit_logging_hook(json=True)
        install_livekit_logging_hook(json=True)  # idempotent: still one handler, one line
        lk_cli.setup_logging("INFO", devmode=False, console=False)  # type: ignore[attr-defined]
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        lk_logger.info("starting worker", extra={"version": "1.8.9"})
        out = capsys.readouterr().out.strip().splitlines()
        assert len(out) == 1
        line = json.loads(out[0])
        assert (line["message"], line["version"], line["level"]) == (
            "starting worker",
            "1.8.9",
            "INFO",
        )
    finally:
        for h in root.handlers[:]:
            if h not in before:
                root.removeHandler(h)
        root.setLevel(old_level)
        lk_cli.setup_logging = getattr(original, "__wrapped__", original)  # type: ignore[attr-defined]


def test_dev_format_is_readable_not_json(clean_redactor: None) -> None:
    load_settings(valid_env())
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_on_root_handlers(json=False, colors=False, handlers=[handler])
    record = lk_logger.makeRecord(
        "livekit.agents", logging.INFO, __file__, 1, "process initialized", (), None,
        extra={"elapsed_time": 1.92, "api_secret": "x"},
    )  # fmt: skip
    handler.emit(record)
    text = stream.getvalue()
    assert "process initialized" in text and "elapsed_time=1.92" in text
    assert "livekit.agents" in text and "[REDACTED]" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_redacting_filter_for_foreign_handlers(clean_redactor: None) -> None:
    load_settings(valid_env())
    record = lk_logger.makeRecord(
        "livekit.agents", logging.INFO, __file__, 1, "key=%s", (SECRET,), None,
        extra={"token": "abc", "nested": {"password": "p", "ok": SECRET}},
    )  # fmt: skip
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == f"key={REDACTED}"
    assert record.token == REDACTED  # type: ignore[attr-defined]
    assert record.nested == {"password": REDACTED, "ok": REDACTED}  # type: ignore[attr-defined]


def test_shape_rules_without_registered_values(clean_redactor: None) -> None:
    assert REDACTOR.text("Authorization: Bearer abcdefghijklmnop") == (
        f"Authorization: Bearer {REDACTED}"
    )
    assert REDACTOR.text("key sk-proj-abcdefghijklmnopqrstu used") == f"key {REDACTED} used"
    assert REDACTOR.text("tokens_per_second=12") == "tokens_per_second=12"
