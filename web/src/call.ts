// One call from the browser: check the microphone, get a session from the page's server,
// join the room, wait for the agent, then open the microphone. Each step that can fail has
// its own deadline and becomes a CallError, so nothing hangs silently.
import {
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  DisconnectReason,
  Room,
  RoomEvent,
  Track,
  type TextStreamReader,
} from "livekit-client";
import { CallError, connectProblem, describe, microphoneProblem } from "./errors";
import { parseTurnRecord, TURN_LATENCY_TOPIC, type TurnRecord } from "./latency";
import { requestSession, type SessionGrant } from "./session";

/** LiveKit Agents' participant attribute with the session state (livekit.agents.types). */
export const AGENT_STATE_ATTRIBUTE = "lk.agent.state";
const TRANSCRIPTION_TOPIC = "lk.transcription";
const ATTR_SEGMENT_ID = "lk.segment_id";
const ATTR_FINAL = "lk.transcription_final";

/** The wait for an agent when the server does not say: dispatch -> agent in the room is
 * ~1 s with a prewarmed worker; 20 s means no worker took the job. */
const DEFAULT_AGENT_JOIN_TIMEOUT_S = 20;
/** How often the agent's inbound audio stats are read for the level meter. */
const AUDIO_STATS_INTERVAL_MS = 250;

export type Phase =
  | "idle"
  | "checking-microphone"
  | "requesting-session"
  | "connecting"
  | "waiting-for-agent"
  | "in-call"
  | "ended"
  | "failed";

export type AgentState = "initializing" | "listening" | "thinking" | "speaking" | string;

export interface TranscriptUpdate {
  segmentId: string;
  role: "user" | "agent";
  text: string;
  final: boolean;
}

export interface AgentAudio {
  /** Cumulative `totalAudioEnergy` of the agent's inbound audio (RTCInboundRtpStreamStats). */
  energy: number;
  /** Seconds of agent audio the browser decoded (`totalSamplesDuration`). */
  seconds: number;
  /** RMS level 0..1 over the last interval. */
  level: number;
  /** Seconds of it that were not silence (the stream carries silence between replies). */
  speechSeconds: number;
}

/** RMS (0..1) above which an interval of agent audio counts as speech: digital silence is
 * 0, comfort noise ~1e-4, espeak-ng and Cartesia speech 0.05-0.3. */
const SPEECH_LEVEL = 0.01;

export interface CallListener {
  phase(phase: Phase, detail: string): void;
  agentState(state: AgentState): void;
  transcript(update: TranscriptUpdate): void;
  turn(record: TurnRecord): void;
  agentAudio(audio: AgentAudio): void;
  problem(error: CallError): void;
}

export class VoiceCall {
  private room: Room | null = null;
  private grant: SessionGrant | null = null;
  private hungUp = false;
  /** The agent this call talks to, once it listened: only its leaving ends the call (one
   * that left before, replaced by a re-dispatch, did not matter). */
  private agentIdentity: string | null = null;
  private statsTimer: number | undefined;
  /** Per segment, the newest stream seen: an older interim must not overwrite a newer one. */
  private segmentSeq = new Map<string, number>();
  private streamSeq = 0;

  constructor(
    private readonly endpoint: string,
    private readonly on: CallListener,
  ) {}

  get roomName(): string | undefined {
    return this.grant?.room_name ?? this.room?.name;
  }

  async start(): Promise<void> {
    this.hungUp = false;
    this.agentIdentity = null;
    try {
      await this.checkMicrophone();
      this.on.phase("requesting-session", "Asking the page's server for a session…");
      this.grant = await requestSession(this.endpoint);
      const room = this.newRoom();
      this.room = room;
      this.on.phase("connecting", `Connecting to ${this.grant.server_url}…`);
      try {
        await room.connect(this.grant.server_url, this.grant.participant_token);
      } catch (err) {
        throw connectProblem(err, this.grant.server_url);
      }
      if (this.hungUp) return;
      const agent = await this.waitForAgent(room);
      this.agentIdentity = agent.identity;
      this.on.phase("in-call", "Agent joined; opening the microphone…");
      try {
        await room.localParticipant.setMicrophoneEnabled(true);
      } catch (err) {
        throw microphoneProblem(err);
      }
      await room.startAudio().catch(() => undefined); // allowed: we are inside a click
      this.on.phase("in-call", `Talking to ${agent.identity}. Speak now.`);
    } catch (err) {
      const problem =
        err instanceof CallError ? err : new CallError("disconnected", `Unexpected: ${describe(err)}`);
      await this.teardown();
      if (this.hungUp) return;
      this.on.phase("failed", problem.message);
      this.on.problem(problem);
    }
  }

  async hangUp(): Promise<void> {
    this.hungUp = true;
    await this.teardown();
    this.on.phase("ended", "Call ended.");
  }

  /** Ask for the microphone before any room or agent exists: a refusal costs nothing. The
   * probe's track is stopped at once; the call's own track is opened once the agent listens,
   * so nothing said before that is lost to an agent that is not there yet. */
  private async checkMicrophone(): Promise<void> {
    this.on.phase("checking-microphone", "Asking for the microphone: allow it in the browser's prompt…");
    if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
      throw new CallError(
        "microphone",
        "This page cannot use a microphone: browsers allow it only on https:// or " +
          "http://localhost pages. Open it through localhost or behind https.",
      );
    }
    let stream: MediaStream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      throw microphoneProblem(err);
    }
    for (const t of stream.getTracks()) t.stop();
  }

  private newRoom(): Room {
    const room = new Room({ adaptiveStream: false, dynacast: false });
    room
      .on(RoomEvent.ParticipantAttributesChanged, (_changed, p: Participant) => this.onAttributes(p))
      .on(RoomEvent.ParticipantConnected, (p: RemoteParticipant) => this.onAttributes(p))
      .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub, p: RemoteParticipant) => {
        if (track.kind !== Track.Kind.Audio || !p.isAgent) return;
        const el = track.attach();
        el.dataset.agentAudio = p.identity;
        document.body.appendChild(el);
        this.watchAudio(track);
      })
      .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack) => {
        for (const el of track.detach()) el.remove();
      })
      .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => {
        if (p.identity === this.agentIdentity && !this.hungUp && this.room === room) {
          this.fail(new CallError("disconnected", `The agent (${p.identity}) left the call.`));
        }
      })
      .on(RoomEvent.Disconnected, (reason?: DisconnectReason) => {
        if (!this.hungUp && this.room === room) {
          this.fail(
            new CallError(
              "disconnected",
              `The call was disconnected by the LiveKit server (${disconnectName(reason)}).`,
            ),
          );
        }
      });
    room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, info) => {
      void this.readTranscription(reader, info.identity, room);
    });
    room.registerTextStreamHandler(TURN_LATENCY_TOPIC, (reader) => {
      void reader.readAll().then((text) => {
        const record = parseTurnRecord(text);
        if (record) this.on.turn(record);
      });
    });
    return room;
  }

  private async waitForAgent(room: Room): Promise<RemoteParticipant> {
    const timeoutS = this.grant?.agent_join_timeout_s ?? DEFAULT_AGENT_JOIN_TIMEOUT_S;
    const name = this.grant?.agent_name ? ` "${this.grant.agent_name}"` : "";
    this.on.phase("waiting-for-agent", `Connected to room ${room.name}; waiting for the agent${name}…`);
    const listening = (p: RemoteParticipant) =>
      p.isAgent && p.attributes[AGENT_STATE_ATTRIBUTE] === "listening";
    const found = () => [...room.remoteParticipants.values()].find(listening);
    return new Promise<RemoteParticipant>((resolve, reject) => {
      const check = () => {
        const agent = found();
        if (agent) done(() => resolve(agent));
      };
      const timer = window.setTimeout(() => {
        const present = [...room.remoteParticipants.values()].find((p) => p.isAgent);
        done(() =>
          reject(
            new CallError(
              "agent",
              present
                ? `The agent ${present.identity} joined but was not listening within ${timeoutS} s ` +
                    `(state: ${present.attributes[AGENT_STATE_ATTRIBUTE] ?? "none"}). See the worker's log.`
                : `No agent${name} joined room ${room.name} within ${timeoutS} s. Is the worker ` +
                    `running (python agent.py dev) and registered with this LiveKit server` +
                    (name ? ` under that agent name?` : "?"),
            ),
          ),
        );
      }, timeoutS * 1000);
      const onDisconnect = () => done(() => reject(new CallError("disconnected", "Disconnected while waiting for the agent.")));
      const done = (settle: () => void) => {
        window.clearTimeout(timer);
        room.off(RoomEvent.ParticipantAttributesChanged, check);
        room.off(RoomEvent.ParticipantConnected, check);
        room.off(RoomEvent.Disconnected, onDisconnect);
        settle();
      };
      room.on(RoomEvent.ParticipantAttributesChanged, check);
      room.on(RoomEvent.ParticipantConnected, check);
      room.on(RoomEvent.Disconnected, onDisconnect);
      check();
    });
  }

  private onAttributes(p: Participant): void {
    if (!p.isAgent) return;
    const state = p.attributes[AGENT_STATE_ATTRIBUTE];
    if (state) this.on.agentState(state);
  }

  /** User segments come as one stream per update (full text, final on the header); the
   * agent's as one stream of deltas per segment, final when it ends. */
  private async readTranscription(reader: TextStreamReader, sender: string, room: Room) {
    const attrs = reader.info.attributes ?? {};
    const segmentId = attrs[ATTR_SEGMENT_ID] ?? reader.info.id;
    const role = sender === room.localParticipant.identity ? "user" : "agent";
    const seq = ++this.streamSeq;
    this.segmentSeq.set(segmentId, seq);
    const headerFinal = attrs[ATTR_FINAL] === "true";
    let text = "";
    const emit = (final: boolean) => {
      if ((this.segmentSeq.get(segmentId) ?? 0) > seq) return;
      this.on.transcript({ segmentId, role, text, final });
    };
    try {
      for await (const chunk of reader) {
        text += chunk;
        emit(false);
      }
    } catch {
      // the stream was cut (agent left): keep what arrived
    }
    emit(role === "agent" || headerFinal);
  }

  private watchAudio(track: RemoteTrack): void {
    window.clearInterval(this.statsTimer);
    let last = { energy: 0, seconds: 0 };
    let speechSeconds = 0;
    this.statsTimer = window.setInterval(async () => {
      const report = await track.getRTCStatsReport().catch(() => undefined);
      if (!report) return;
      report.forEach((s: Record<string, unknown>) => {
        if (s.type !== "inbound-rtp" || s.kind !== "audio") return;
        const energy = Number(s.totalAudioEnergy ?? 0);
        const seconds = Number(s.totalSamplesDuration ?? 0);
        const dt = seconds - last.seconds;
        const level = dt > 0 ? Math.sqrt(Math.max(0, energy - last.energy) / dt) : 0;
        last = { energy, seconds };
        if (level > SPEECH_LEVEL) speechSeconds += dt;
        this.on.agentAudio({ energy, seconds, level, speechSeconds });
      });
    }, AUDIO_STATS_INTERVAL_MS);
  }

  private fail(error: CallError): void {
    void this.teardown().then(() => {
      this.on.phase("failed", error.message);
      this.on.problem(error);
    });
  }

  private async teardown(): Promise<void> {
    window.clearInterval(this.statsTimer);
    this.statsTimer = undefined;
    const room = this.room;
    this.room = null;
    if (room) {
      room.unregisterTextStreamHandler(TRANSCRIPTION_TOPIC);
      room.unregisterTextStreamHandler(TURN_LATENCY_TOPIC);
      await room.disconnect().catch(() => undefined);
    }
    for (const el of document.querySelectorAll("[data-agent-audio]")) el.remove();
  }
}

function disconnectName(reason?: DisconnectReason): string {
  return reason === undefined ? "no reason given" : (DisconnectReason[reason] ?? String(reason));
}
