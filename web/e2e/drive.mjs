// Drives the web client in a real Chromium (Debian's, through playwright-core: no browser
// download) and prints what the page showed as one JSON object on stdout. The Python tests
// (tests/test_web_client.py) start the servers, run this, and judge the report.
//
//   node e2e/drive.mjs '{"page": "http://localhost:8080/", "microphone": "allow",
//                        "wav": "/tmp/turn.wav", "until": "turn", "timeoutMs": 60000,
//                        "screenshot": "artifacts/web-call.png"}'
//
// microphone: "allow" (the fake device plays `wav`, the permission prompt says yes) or "deny"
// (the prompt says no). until: "turn" (a final user transcript, a latency bar and agent
// audio) or "problem" (the page shows a problem). retry: after a problem, press Retry once
// and wait for the next outcome. turns: how many answered turns "turn" waits for (1).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2] ?? "{}");
const timeoutMs = cfg.timeoutMs ?? 60_000;

// Closed network: without these Chromium keeps dialling Google services (refused here), and
// as root it needs --no-sandbox.
const args = [
  "--no-sandbox",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--no-default-browser-check",
  "--use-fake-device-for-media-stream",
];
if (cfg.microphone === "deny") args.push("--deny-permission-prompts");
else args.push("--use-fake-ui-for-media-stream");
if (cfg.wav) args.push(`--use-file-for-fake-audio-capture=${cfg.wav}`);

const profile = mkdtempSync(join(tmpdir(), "voice-agent-chromium-"));
// phases: ms from the Connect press to the first poll that saw each page phase
const report = { console: [], pageErrors: [], snapshots: [], phases: {} };
let clickedAt = 0;
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium ?? "/usr/bin/chromium",
    headless: true,
    args,
    viewport: { width: 1280, height: 520 },
    permissions: cfg.microphone === "deny" ? [] : ["microphone"],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => report.console.push(`${m.type()}: ${m.text()}`.slice(0, 500)));
  page.on("pageerror", (e) => report.pageErrors.push(String(e).slice(0, 500)));

  await page.goto(cfg.page, { waitUntil: "load", timeout: 30_000 });
  const started = Date.now();
  clickedAt = started;
  await page.click("#connect");
  report.outcome = await waitFor(page, cfg.until ?? "turn", timeoutMs, 1);
  report.state = await readState(page);
  if (cfg.retry && report.outcome === "problem") {
    report.firstProblem = report.state.problem;
    await page.click("#retry");
    report.retryOutcome = await waitFor(page, cfg.until ?? "turn", timeoutMs, 2);
    report.state = await readState(page);
  }
  report.seconds = (Date.now() - started) / 1000;
  if (cfg.screenshot) await page.screenshot({ path: cfg.screenshot, fullPage: true });
  if (cfg.hangUp) {
    await page.click("#hangup");
    await page
      .waitForFunction(() => document.getElementById("status").dataset.phase === "ended", null, {
        timeout: 10_000,
      })
      .catch(() => undefined); // reported as it is
    report.afterHangUp = await readState(page);
  }
} catch (err) {
  report.error = String(err?.stack ?? err).slice(0, 2000);
} finally {
  await context?.close().catch(() => undefined);
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + "\n");

/** Poll the page until the wanted outcome, a problem of press number `attempt` (Connect is
 * 1, the first Retry 2), or the timeout; returns which. */
async function waitFor(page, until, ms, attempt) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const s = await readState(page);
    report.snapshots.push({ t: Date.now(), phase: s.phase, agent: s.agentState, bars: s.bars.length });
    report.phases[s.phase] ??= Date.now() - clickedAt;
    if (s.problem.visible && s.problem.attempt === attempt) return "problem";
    if (until === "turn" && reachedTurn(s)) return "turn";
    await page.waitForTimeout(250);
  }
  return "timeout";
}

function reachedTurn(s) {
  return (
    s.transcripts.filter((t) => t.role === "user" && t.final && t.text.trim()).length >= (cfg.turns ?? 1) &&
    s.bars.length >= (cfg.turns ?? 1) &&
    s.agentAudio.speechSeconds > 0.5 &&
    s.agentAudio.energy > 0
  );
}

/** What a person sees, read from the DOM. */
function readState(page) {
  return page.evaluate(() => {
    const el = (id) => document.getElementById(id);
    const problem = el("problem");
    return {
      phase: el("status").dataset.phase,
      status: el("status").textContent,
      agentState: el("agent-state").dataset.state,
      agentStatesSeen: (el("agent-state").dataset.seen ?? "").split(" ").filter(Boolean),
      problem: {
        visible: !problem.hidden,
        kind: el("problem-text").dataset.kind,
        text: el("problem-text").textContent,
        attempt: Number(el("problem-text").dataset.attempt ?? 0),
        retryVisible: !problem.hidden && !el("retry").hidden,
      },
      transcripts: [...document.querySelectorAll("#transcript li")].map((li) => ({
        role: li.classList.contains("user") ? "user" : "agent",
        final: li.classList.contains("final"),
        text: li.textContent,
      })),
      bars: [...document.querySelectorAll("#turns .latency-bar")].map((li) => ({
        turn: Number(li.dataset.turn),
        e2eMs: li.dataset.e2eMs === "" ? null : Number(li.dataset.e2eMs),
        label: li.querySelector(".label").textContent,
        stages: Object.fromEntries(
          [...li.querySelectorAll(".stage")].map((s) => [s.dataset.stage, Number(s.dataset.ms)]),
        ),
      })),
      agentAudio: {
        energy: Number(el("agent-audio").dataset.energy),
        seconds: Number(el("agent-audio").dataset.seconds),
        speechSeconds: Number(el("agent-audio").dataset.speechSeconds),
      },
      connectVisible: !el("connect").hidden,
      hangupVisible: !el("hangup").hidden,
    };
  });
}
