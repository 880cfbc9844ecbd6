// The page's server hands out one session per call: a short-lived access token for one
// room, with the agent already dispatched to it. The API secret never leaves that server.
import { CallError, describe } from "./errors";

/** The token endpoint's answer. The first two keys are LiveKit's standard token-endpoint
 * shape (`server_url`, `participant_token`), so the page also works with any endpoint that
 * speaks it; the rest is optional. */
export interface SessionGrant {
  server_url: string;
  participant_token: string;
  room_name?: string;
  participant_identity?: string;
  agent_name?: string;
  expires_at?: string;
  agent_join_timeout_s?: number;
}

/** Failing fast beats a spinner: the endpoint answers in milliseconds when it is up. */
const SESSION_TIMEOUT_MS = 15_000;

export async function requestSession(endpoint: string): Promise<SessionGrant> {
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
      signal: AbortSignal.timeout(SESSION_TIMEOUT_MS),
    });
  } catch (err) {
    throw new CallError(
      "session",
      `The page's server did not answer at ${endpoint} (${describe(err)}). Is it still running?`,
    );
  }
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // a proxy's HTML error page, say: reported below with the status
  }
  const record = (body ?? {}) as Record<string, unknown>;
  if (!response.ok) {
    const cause = typeof record.error === "string" ? record.error : response.statusText;
    throw new CallError("session", `The page's server could not start a call: ${cause}`);
  }
  if (typeof record.server_url !== "string" || typeof record.participant_token !== "string") {
    throw new CallError("session", `The page's server answered ${endpoint} without a token.`);
  }
  return record as unknown as SessionGrant;
}
