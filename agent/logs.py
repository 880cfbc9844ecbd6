"""One logging pipeline for our structlog events and LiveKit's own stdlib records.

How lines reach stdout (see shared/docs/livekit-agents-notes.md §5):

* **Our code** logs with structlog (:func:`get_logger`). structlog never renders: its
  last processor, ``render_to_log_kwargs``, hands the event to stdlib ``logging`` with
  every key as a record attribute (``extra=``). Structure thus survives the job-process
  pipe, which pickles records, and lands in the same handler as framework records.
* **Job processes** have only LiveKit's ``LogQueueHandler`` on the root logger: it pickles
  each record to the main process, whose listener adds ``pid``/``job_id``/``room`` and calls
  the root handlers there. So every line, from any process, is rendered once, in the main
  process.
* **The main process** root handler is LiveKit's own (added by ``cli.log.setup_logging``;
  we do not add another, which would duplicate lines). :func:`install_livekit_logging_hook`
  lets LiveKit set it up (levels, noisy-logger silencing, region field) and then swaps its
  formatter for a structlog ``ProcessorFormatter``: JSON lines in ``start``, readable lines
  in ``dev``. The formatter collects the record's extra attributes (framework ``extra=``
  fields, our structlog keys, the job's ``log_context_fields``), and redacts secrets last.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from agent.redact import REDACTOR, is_secret_key

#: Attributes every LogRecord has (plus ones formatters/LogQueueHandler set): not "extra".
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def get_logger(name: str = "agent") -> Any:
    """A structlog logger backed by the stdlib logger ``name`` (level filtering included)."""
    return structlog.get_logger(name)


# --------------------------------------------------------------------------- structlog side
def _rename_reserved(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``extra`` keys may not shadow LogRecord attributes (``makeRecord`` raises KeyError)."""
    keep = {"event", *structlog.stdlib.LOG_KWARG_NAMES}  # exc_info etc. are real kwargs
    for key in [k for k in event_dict if k in _RECORD_ATTRS and k not in keep]:
        event_dict[f"{key}_"] = event_dict.pop(key)
    return event_dict


def _redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return REDACTOR.mapping(event_dict)


def configure_structlog() -> None:
    """Route structlog into stdlib logging. Same in the main and in job processes.

    Idempotent. Level and time are left to the main process's formatter (the record's own
    ``levelname``/``created``), so nothing is computed twice.
    """
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            # redact before the event leaves the process: job-process extras are pickled
            _redact_event,
            _rename_reserved,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


# --------------------------------------------------------------------------- formatter side
def _add_level(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    record: logging.LogRecord = event_dict["_record"]
    event_dict["level"] = record.levelname
    return event_dict


def _add_logger_name(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict["logger"] = event_dict["_record"].name
    return event_dict


def _timestamp(*, iso: bool) -> Processor:
    def add(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        # the record's creation time, not render time: job records are rendered later
        created = datetime.fromtimestamp(event_dict["_record"].created, tz=UTC)
        event_dict["timestamp"] = (
            created.isoformat(timespec="microseconds").replace("+00:00", "Z")
            if iso
            else created.astimezone().strftime("%H:%M:%S.%f")[:-3]
        )
        return event_dict

    return add


def _add_extras(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Every non-standard record attribute: ``extra=`` fields, job context, our keys."""
    record: logging.LogRecord = event_dict["_record"]
    for key, value in record.__dict__.items():
        if key in _RECORD_ATTRS or key.startswith("_") or key in event_dict:
            continue
        event_dict[key] = value
    return event_dict


def _add_pid(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # job records already carry the job process's pid (set by LiveKit's log listener)
    event_dict.setdefault("pid", event_dict["_record"].process)
    return event_dict


def _split_forwarded_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Records pickled by a job process carry the traceback as text appended to the message."""
    record: logging.LogRecord = event_dict["_record"]
    exc_text = record.exc_text
    if exc_text and not record.exc_info:
        event = event_dict.get("event")
        if isinstance(event, str) and event.endswith(exc_text):
            event_dict["event"] = event[: -len(exc_text)].rstrip("\n")
        event_dict["exception"] = exc_text
    return event_dict


def _redact_final(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    return REDACTOR.mapping(event_dict)


def build_formatter(*, json: bool, colors: bool = False) -> structlog.stdlib.ProcessorFormatter:
    """The root-handler formatter: JSON lines (``start``) or readable lines (``dev``)."""
    pre_chain: list[Processor] = [
        _add_logger_name,
        _add_level,
        _timestamp(iso=json),
        _add_extras,
        _split_forwarded_exception,
    ]
    if json:
        pre_chain.append(_add_pid)
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if json:
        final += [
            structlog.processors.format_exc_info,
            _redact_final,
            structlog.processors.EventRenamer("message"),
            _order_for_json,
            structlog.processors.JSONRenderer(default=_json_default, sort_keys=False),
        ]
    else:
        final += [
            structlog.processors.format_exc_info,
            _redact_final,
            structlog.dev.ConsoleRenderer(
                colors=colors,
                exception_formatter=structlog.dev.plain_traceback,
                sort_keys=False,
            ),
        ]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=pre_chain, processors=final, use_get_message=True
    )


_HEAD = ("timestamp", "level", "logger", "message")


def _order_for_json(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Fixed leading keys so lines scan well; the remaining fields keep their order."""
    head = {k: event_dict.pop(k) for k in _HEAD if k in event_dict}
    return {**head, **event_dict}


def _json_default(obj: object) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(map(str, obj))
    return REDACTOR.text(str(obj))


class RedactingFilter(logging.Filter):
    """Redacts a record in place; for handlers whose formatter is not ours (console)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed %-format must not kill the line
            message = str(record.msg)
        redacted = REDACTOR.text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, ()
        if record.exc_text:
            record.exc_text = REDACTOR.text(record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            record.__dict__[key] = "[REDACTED]" if is_secret_key(key) else REDACTOR.value(value)
        return True


def _handler_is_ours(handler: logging.Handler) -> bool:
    return isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)


def install_on_root_handlers(
    *, json: bool, colors: bool, handlers: Iterable[logging.Handler] | None = None
) -> int:
    """Give the root logger's stream handlers our formatter. Returns how many changed."""
    formatter = build_formatter(json=json, colors=colors)
    count = 0
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not _handler_is_ours(handler):
            handler.setFormatter(formatter)
            count += 1
    return count


def install_livekit_logging_hook(*, json: bool) -> None:
    """Make LiveKit's ``setup_logging`` leave its root handler with our formatter.

    ``setup_logging`` is what ``start``/``dev`` call before anything is logged; wrapping it
    (rather than reformatting on ``worker_started``) means the very first framework line
    already comes out in our format.
    """
    from livekit.agents.cli import cli as lk_cli

    current: Callable[..., None] = lk_cli.setup_logging  # type: ignore[attr-defined]
    original: Callable[..., None] = getattr(current, "__wrapped__", current)
    colors = not json and sys.stdout.isatty()

    def setup_logging(log_level: str, devmode: bool, console: bool, compact: bool = False) -> None:
        original(log_level, devmode, console, compact)
        install_on_root_handlers(json=json, colors=colors)
        # Python warnings (e.g. PyJWT's short-key warning) become log records in the same
        # format instead of raw multi-line text on stderr that breaks JSON log parsing.
        logging.captureWarnings(True)

    setup_logging.__wrapped__ = original  # type: ignore[attr-defined]
    lk_cli.setup_logging = setup_logging  # type: ignore[attr-defined]
