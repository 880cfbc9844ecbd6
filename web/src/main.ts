// The page: wires a VoiceCall to the DOM. Everything the call reports is drawn here; the
// state the browser test reads is what a person sees (text, and data-* attributes on it).
import { type AgentAudio, type Phase, type TranscriptUpdate, VoiceCall } from "./call";
import type { CallError } from "./errors";
import { GOAL_MS, scaleMs, STAGES, stagesOf, type TurnRecord, verdict } from "./latency";

/** The token endpoint of the page's own server (localdev/web_server.py), same origin. */
const SESSION_ENDPOINT = new URLSearchParams(location.search).get("session") ?? "/api/session";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $("status");
const connectButton = $<HTMLButtonElement>("connect");
const hangupButton = $<HTMLButtonElement>("hangup");
const retryButton = $<HTMLButtonElement>("retry");
const problemBox = $("problem");
const problemText = $("problem-text");
const agentState = $("agent-state");
const agentAudio = $("agent-audio");
const agentLevel = $("agent-level").firstElementChild as HTMLElement;
const transcript = $("transcript");
const turnsList = $("turns");

const turns = new Map<number, TurnRecord>();
/** Connect/Retry presses so far: a problem is stamped with the attempt it belongs to. */
let attempt = 0;
const segments = new Map<string, HTMLLIElement>();

const call = new VoiceCall(SESSION_ENDPOINT, {
  phase(phase: Phase, detail: string) {
    status.dataset.phase = phase;
    status.textContent = detail;
    const busy = phase !== "idle" && phase !== "ended" && phase !== "failed";
    connectButton.hidden = busy;
    connectButton.disabled = busy;
    hangupButton.hidden = !busy;
    if (phase === "ended") setAgentState("");
  },
  agentState: setAgentState,
  transcript: showTranscript,
  turn(record: TurnRecord) {
    turns.set(record.turn_index, record);
    drawTurns();
  },
  agentAudio(audio: AgentAudio) {
    agentAudio.dataset.energy = audio.energy.toFixed(6);
    agentAudio.dataset.seconds = audio.seconds.toFixed(2);
    agentAudio.dataset.speechSeconds = audio.speechSeconds.toFixed(2);
    agentAudio.textContent = `${audio.speechSeconds.toFixed(1)} s heard`;
    agentLevel.style.width = `${Math.min(100, audio.level * 400)}%`;
  },
  problem(error: CallError) {
    problemText.textContent = error.message;
    problemText.dataset.kind = error.kind;
    problemText.dataset.attempt = String(attempt);
    problemBox.hidden = false;
    setAgentState("");
  },
});

function setAgentState(state: string) {
  const seen = new Set((agentState.dataset.seen ?? "").split(" ").filter(Boolean));
  if (state) seen.add(state);
  agentState.dataset.seen = [...seen].join(" ");
  agentState.dataset.state = state;
  agentState.textContent = state ? `agent: ${state}` : "agent: not here";
}

function begin() {
  attempt += 1;
  problemBox.hidden = true;
  problemText.dataset.kind = "";
  void call.start();
}

connectButton.addEventListener("click", begin);
retryButton.addEventListener("click", begin);
hangupButton.addEventListener("click", () => void call.hangUp());

function showTranscript(u: TranscriptUpdate) {
  let li = segments.get(u.segmentId);
  if (!li) {
    li = document.createElement("li");
    li.dataset.segment = u.segmentId;
    segments.set(u.segmentId, li);
    transcript.appendChild(li);
  }
  li.className = `${u.role} ${u.final ? "final" : "interim"}`;
  li.textContent = u.text;
  li.scrollIntoView({ block: "nearest" });
}

function drawLegend() {
  const legend = $("legend");
  for (const s of STAGES) {
    const li = document.createElement("li");
    li.dataset.stage = s.key;
    li.textContent = s.label;
    legend.appendChild(li);
  }
  for (const [mark, label] of [
    ["e2e", "first agent audio (e2e)"],
    ["goal", "1 s goal"],
  ]) {
    const li = document.createElement("li");
    li.dataset.mark = mark;
    li.textContent = label;
    legend.appendChild(li);
  }
}

function drawTurns() {
  const ordered = [...turns.values()].sort((a, b) => a.turn_index - b.turn_index);
  const scale = scaleMs(ordered);
  const pct = (ms: number) => `${(100 * ms) / scale}%`;
  turnsList.replaceChildren(
    ...ordered.map((t) => {
      const li = document.createElement("li");
      li.className = "turn latency-bar";
      li.dataset.turn = String(t.turn_index);
      li.dataset.e2eMs = t.e2e_latency_ms === null ? "" : String(t.e2e_latency_ms);

      const label = document.createElement("div");
      label.className = "label";
      const name = document.createElement("span");
      name.textContent = `Turn ${t.turn_index}` + (t.outcome !== "answered" ? ` (${t.outcome})` : "");
      const e2e = document.createElement("span");
      e2e.className = "e2e";
      e2e.dataset.verdict = verdict(t.e2e_latency_ms);
      e2e.textContent =
        t.e2e_latency_ms === null ? "no agent audio measured" : `${Math.round(t.e2e_latency_ms)} ms to first audio`;
      label.append(name, e2e);

      const bar = document.createElement("div");
      bar.className = "bar";
      const stages = stagesOf(t);
      bar.title = stages.map((s) => `${s.label}: ${Math.round(s.ms)} ms`).join("\n");
      for (const s of stages) {
        const seg = document.createElement("div");
        seg.className = "stage";
        seg.dataset.stage = s.key;
        seg.dataset.ms = String(Math.round(s.ms));
        seg.style.width = pct(s.ms);
        bar.appendChild(seg);
      }
      const goal = document.createElement("div");
      goal.className = "goal";
      goal.style.left = pct(GOAL_MS);
      bar.appendChild(goal);
      if (t.e2e_latency_ms !== null) {
        const mark = document.createElement("div");
        mark.className = "mark";
        mark.style.left = pct(t.e2e_latency_ms);
        bar.appendChild(mark);
      }
      const numbers = document.createElement("div");
      numbers.className = "numbers";
      numbers.textContent = stages.map((s) => `${s.label} ${Math.round(s.ms)}`).join(" · ") + " ms";
      li.append(label, bar, numbers);
      const flagged = [...(t.missing ?? []), ...(t.implausible ?? [])].filter((f) => f.endsWith("_ms"));
      if (flagged.length) {
        const flags = document.createElement("div");
        flags.className = "flags";
        flags.textContent = `not measured: ${flagged.join(", ")}`;
        li.appendChild(flags);
      }
      return li;
    }),
  );
}

drawLegend();
