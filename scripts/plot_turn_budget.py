"""Draw the per-turn latency budget from captured ``turn_latency`` JSON log lines.

    python scripts/plot_turn_budget.py LOG.jsonl -o docs/turn-budget.png

Reads JSON lines as the worker prints them (event name under ``message``) or as plain
structlog renders them (under ``event``); other lines are skipped, so a whole worker log
can be fed in. One stacked bar per user turn, from the end of the user's speech:

* STT final: ``transcript_latency_ms`` (the Baseten plugin's own measurement)
* end-of-turn wait: ``end_of_turn_delay_ms - transcription_delay_ms``, LiveKit's own
  time from receiving the final to committing the turn (both share LiveKit's anchor, so
  the difference is the endpointing decision alone)
* LLM TTFT: ``llm_ttft_ms``
* TTS TTFB: ``tts_ttfb_ms``

and a marker at ``e2e_latency_ms``, the end of speech -> first agent audio that the user
actually experiences. The gap between the stack and the marker is what no stage accounts
for (scheduling, sentence splitting, playout). A marker slightly *below* the stack is
expected: the plugin dates the end of speech from the last word's audio, LiveKit from its
VAD (back-dated by the silence it waited for), and the two can differ by ~100 ms; far
below means stages overlapped (preemptive generation). A value the collector flagged
(missing/implausible) is drawn as 0 and named under its bar, never guessed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt

TURN_EVENT = "turn_latency"

# (label, colour) of each stacked stage, bottom to top
STAGES: tuple[tuple[str, str], ...] = (
    ("STT final (transcript_latency)", "#4C72B0"),
    ("end-of-turn wait", "#DD8452"),
    ("LLM TTFT", "#55A868"),
    ("TTS TTFB", "#C44E52"),
)


def read_turns(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The ``turn_latency`` events among JSON log lines (anything else is skipped)."""
    turns: list[dict[str, Any]] = []
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and TURN_EVENT in (record.get("event"), record.get("message")):
            turns.append(record)
    return turns


def _ms(turn: dict[str, Any], key: str) -> float:
    value = turn.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def stage_values(turn: dict[str, Any]) -> list[float]:
    """Milliseconds per stage, bottom to top (flagged values count as 0)."""
    transcript = _ms(turn, "transcript_latency_ms")
    # end_of_turn_delay already contains LiveKit's wait for the final; subtracting LiveKit's
    # transcription_delay (same anchor) leaves the endpointing decision itself
    eot_extra = max(_ms(turn, "end_of_turn_delay_ms") - _ms(turn, "transcription_delay_ms"), 0.0)
    return [transcript, eot_extra, _ms(turn, "llm_ttft_ms"), _ms(turn, "tts_ttfb_ms")]


def turn_label(turn: dict[str, Any], position: int, session: int | None = None) -> str:
    label = f"#{turn.get('turn_index', position + 1)}"
    if session is not None:
        label = f"s{session} {label}"
    if turn.get("outcome") not in (None, "answered"):
        label += f"\n{turn['outcome']}"
    flagged = [*(turn.get("missing") or ()), *(turn.get("implausible") or ())]
    flagged = [f.removesuffix("_ms") for f in flagged if f != "stt_reconnects"]
    if flagged:
        label += "\nn/a: " + ", ".join(flagged)
    return label


def session_numbers(turns: Sequence[dict[str, Any]]) -> list[int]:
    """1-based session number per turn: a new session starts when room/job changes or the
    turn index does not increase (one log may hold several sessions of one room)."""
    numbers: list[int] = []
    prev: dict[str, Any] | None = None
    for t in turns:
        new = prev is None or (
            (t.get("room"), t.get("job_id")) != (prev.get("room"), prev.get("job_id"))
            or not (t.get("turn_index") or 0) > (prev.get("turn_index") or 0)
        )
        numbers.append((numbers[-1] if numbers else 0) + (1 if new else 0))
        prev = t
    return numbers


def plot(turns: Sequence[dict[str, Any]], output: Path, *, title: str) -> None:
    width = max(8.0, 0.9 * len(turns) + 5.0)  # room for the legend on the right
    fig, ax = plt.subplots(figsize=(width, 5.0), dpi=120)
    xs = list(range(len(turns)))
    bottoms = [0.0] * len(turns)
    for i, (label, colour) in enumerate(STAGES):
        heights = [stage_values(t)[i] for t in turns]
        ax.bar(xs, heights, bottom=bottoms, color=colour, label=label, width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]

    e2e = [(x, t["e2e_latency_ms"]) for x, t in zip(xs, turns, strict=True)
           if isinstance(t.get("e2e_latency_ms"), int | float)]  # fmt: skip
    if e2e:
        ax.scatter(
            [x for x, _ in e2e],
            [v for _, v in e2e],
            marker="_",
            s=900,
            linewidths=3,
            color="black",
            zorder=3,
            label="e2e (end of speech -> first audio)",
        )
        for x, v in e2e:
            ax.annotate(f"{v:.0f}", (x, v), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=8)  # fmt: skip

    session_of = session_numbers(turns)
    many = len(set(session_of)) > 1
    labels = [turn_label(t, i, session_of[i] if many else None) for i, t in enumerate(turns)]
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_xlabel("user turn")
    ax.set_ylabel("milliseconds after the user stopped speaking")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9)
    top = max([*bottoms, *(v for _, v in e2e), 1.0])
    ax.set_ylim(0, top * 1.25)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="JSON-lines log containing turn_latency events")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/turn-budget.png"))
    parser.add_argument("--title", default="Voice turn latency budget")
    args = parser.parse_args(argv)

    with args.log.open(encoding="utf-8", errors="replace") as fh:
        turns = read_turns(fh)
    if not turns:
        print(f"no {TURN_EVENT} events in {args.log}", file=sys.stderr)
        return 1
    plot(turns, args.output, title=args.title)
    print(f"{len(turns)} turns -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
