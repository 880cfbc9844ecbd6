// One latency bar per user turn, from the worker's own `turn_latency` record (published on
// the `agent.turn_latency` text-stream topic when PUBLISH_TURN_LATENCY is on). The stages
// are the ones scripts/plot_turn_budget.py draws from the log lines, all measured from the
// end of the user's speech:
//   STT final         transcript_latency_ms: the Baseten plugin's own end of speech -> final
//   end-of-turn wait  end_of_turn_delay_ms - transcription_delay_ms: LiveKit deciding the turn
//                     is over (both share LiveKit's anchor, so the difference is the decision)
//   LLM TTFT          llm_ttft_ms
//   TTS TTFB          tts_ttfb_ms
// and a marker at e2e_latency_ms: end of speech -> the agent's first audio, what the caller
// actually waits. A value the worker flagged (missing/implausible) is drawn as nothing and
// named, never guessed.

export const TURN_LATENCY_TOPIC = "agent.turn_latency";

export interface TurnRecord {
  turn_index: number;
  outcome: string;
  transcript_latency_ms: number | null;
  transcription_delay_ms: number | null;
  end_of_turn_delay_ms: number | null;
  llm_ttft_ms: number | null;
  tts_ttfb_ms: number | null;
  e2e_latency_ms: number | null;
  turn_ended_by?: string | null;
  missing?: string[];
  implausible?: string[];
}

export interface Stage {
  key: string;
  label: string;
  ms: number;
}

export const STAGES: ReadonlyArray<{ key: string; label: string }> = [
  { key: "stt", label: "STT final" },
  { key: "eot", label: "end-of-turn wait" },
  { key: "llm", label: "LLM TTFT" },
  { key: "tts", label: "TTS TTFB" },
];

/** The user's goal: the agent answers within a second of the last word. */
export const GOAL_MS = 1000;

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);

export function parseTurnRecord(text: string): TurnRecord | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const r = value as Record<string, unknown>;
  if (typeof r.turn_index !== "number") return null;
  return {
    turn_index: r.turn_index,
    outcome: typeof r.outcome === "string" ? r.outcome : "unknown",
    transcript_latency_ms: num(r.transcript_latency_ms),
    transcription_delay_ms: num(r.transcription_delay_ms),
    end_of_turn_delay_ms: num(r.end_of_turn_delay_ms),
    llm_ttft_ms: num(r.llm_ttft_ms),
    tts_ttfb_ms: num(r.tts_ttfb_ms),
    e2e_latency_ms: num(r.e2e_latency_ms),
    turn_ended_by: typeof r.turn_ended_by === "string" ? r.turn_ended_by : null,
    missing: Array.isArray(r.missing) ? r.missing.map(String) : [],
    implausible: Array.isArray(r.implausible) ? r.implausible.map(String) : [],
  };
}

export function stagesOf(t: TurnRecord): Stage[] {
  const eot =
    t.end_of_turn_delay_ms !== null && t.transcription_delay_ms !== null
      ? Math.max(0, t.end_of_turn_delay_ms - t.transcription_delay_ms)
      : null;
  const values: Record<string, number | null> = {
    stt: t.transcript_latency_ms,
    eot,
    llm: t.llm_ttft_ms,
    tts: t.tts_ttfb_ms,
  };
  return STAGES.map(({ key, label }) => ({ key, label, ms: values[key] ?? 0 }));
}

/** The bar's full width in ms: the goal, or the slowest turn so far with some room. */
export function scaleMs(turns: readonly TurnRecord[]): number {
  let most = GOAL_MS * 1.5;
  for (const t of turns) {
    const stacked = stagesOf(t).reduce((sum, s) => sum + s.ms, 0);
    most = Math.max(most, (t.e2e_latency_ms ?? 0) * 1.1, stacked * 1.1);
  }
  return most;
}

export function verdict(e2eMs: number | null): "good" | "slow" | "bad" | "unknown" {
  if (e2eMs === null) return "unknown";
  if (e2eMs <= GOAL_MS) return "good";
  return e2eMs <= GOAL_MS * 1.5 ? "slow" : "bad";
}
