"""Draw responsiveness against patience per turn-detection mode from ``bench.turn_bench``.

    uv run python -m bench.turn_bench --json turns.json
    python scripts/plot_turn_tradeoff.py turns.json [more.json ...] -o docs/turn-tradeoff.png

One point per mode and value of its patience knob (``SWEPT``; runs setting anything else
are left out): x = user turns committed inside the 28.9 s read sentence (1 is right: fewer is
more patient), y = caller-side voice-to-voice p50 net of the stand-in's CPU decode, with a bar
up to the p95. A mode's points, joined in knob order, are its trade-off curve. The goal box
(p50 <= 1000 ms, at most 2 turns) is shaded: a setting is only good inside it, on both axes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display

import matplotlib.pyplot as plt
import numpy as np

GOAL_P50_MS = 1000
GOAL_TURNS = 2
#: The knob swept per mode (bench.turn_bench --env), and its default when a run sets none.
SWEPT = {
    "signals": "TURN_STATEMENT_SILENCE_MS",
    "model": "MIN_ENDPOINTING_DELAY",
    "vad": "MIN_ENDPOINTING_DELAY",
    "stt": "MIN_ENDPOINTING_DELAY",
}
DEFAULTS = {"signals": 900.0, "model": 0.3, "vad": 0.5, "stt": 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench.turn_bench --json outputs")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/turn-tradeoff.png"))
    args = parser.parse_args(argv)
    results = [r for path in args.results for r in json.loads(path.read_text())]

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.fill_between([0.5, GOAL_TURNS + 0.25], 0, GOAL_P50_MS, color="#d9f0d9", label="goal")
    by_mode: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in results:
        net = r.get("v2v_net_ms") or []
        env = r.get("env") or {}
        knob = SWEPT.get(r["mode"])
        if not net or r.get("passage_turns") is None or set(env) - {knob}:
            continue  # only the swept knob makes a mode's curve
        value = float(env[knob]) if knob in env else DEFAULTS[r["mode"]]
        p50, p95 = float(np.percentile(net, 50)), float(np.percentile(net, 95))
        by_mode.setdefault(r["mode"], []).append((value, float(r["passage_turns"]), p50, p95))
    for mode, points in by_mode.items():
        points.sort()
        unit = "ms" if SWEPT[mode].endswith("_MS") else "s"
        line = ax.plot(
            [p[1] for p in points],
            [p[2] for p in points],
            "-o",
            markersize=6,
            label=f"{mode} ({SWEPT[mode]})",
        )[0]
        for value, x, p50, p95 in points:
            ax.errorbar(
                [x],
                [p50],
                yerr=np.array([[0.0], [p95 - p50]]),
                fmt="none",
                capsize=3,
                color=line.get_color(),
            )
            ax.annotate(
                f"{value:g} {unit}",
                (x, p50),
                textcoords="offset points",
                xytext=(5, 3),
                fontsize=7,
                color=line.get_color(),
            )
    ax.set_xlabel("user turns committed inside one read sentence (1 is right)")
    ax.set_ylabel("voice-to-voice p50 (bar: p95), ms,\nnet of the stand-in's CPU decode")
    ax.set_xlim(0.5, max(7.5, ax.get_xlim()[1]))
    ax.set_ylim(800, max(3000, ax.get_ylim()[1]))
    ax.set_title("Turn-taking on human speech: responsiveness vs. patience")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
