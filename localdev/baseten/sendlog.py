"""When did the server send each transcription? (for client-latency measurements)

The server calls a ``TranscriptionSentHook`` right after each transcription frame has
been handed to the socket; ``JsonlSendLog`` appends one JSON line per call to a file, so
a benchmark running the server in another process can match server send times to the
``SpeechEvent``s its clients yield (by request path, then order and text).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class SentTranscription:
    """One transcription frame as it left the server."""

    #: Request path of the websocket (e.g. ``/deployment/<id>/websocket``): lets a
    #: client tell its streams apart by connecting each to a different path.
    path: str
    stream_id: str
    is_final: bool
    text: str
    #: ``time.time()`` just before / just after ``send_json`` (bytes handed to the
    #: kernel): "after" is the earliest moment a client could read the frame.
    before_send: float
    after_send: float


TranscriptionSentHook = Callable[[SentTranscription], None]


class JsonlSendLog:
    """Append-only JSONL writer; every line is flushed so another process can read it."""

    def __init__(self, *, path: str | Path) -> None:
        """Open (truncate) ``path`` for writing."""
        self._file: TextIO = Path(path).open("w", encoding="utf-8")  # noqa: SIM115

    def __call__(self, record: SentTranscription) -> None:
        self._file.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_send_log(path: str | Path) -> list[SentTranscription]:
    """All records written so far (a partially written last line is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(SentTranscription(**json.loads(line)))
        except (json.JSONDecodeError, TypeError):
            continue
    return records
