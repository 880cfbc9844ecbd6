// What went wrong, in words a person can act on. Every failure of a call becomes one
// CallError: its `kind` says which step failed (the page and the browser test both read
// it), its message says why and what to do.
import { ConnectionError, ConnectionErrorReason } from "livekit-client";

export type ProblemKind =
  | "microphone" // no permission, no device, or an insecure page
  | "session" // the page's own server did not hand out a session (token endpoint)
  | "unreachable" // the LiveKit server could not be reached at the URL the page was given
  | "token" // the LiveKit server refused the access token (expired, wrong key, ...)
  | "agent" // connected, but no agent joined the room in time
  | "disconnected"; // the call was cut after it had started

export class CallError extends Error {
  readonly kind: ProblemKind;

  constructor(kind: ProblemKind, message: string) {
    super(message);
    this.name = "CallError";
    this.kind = kind;
  }
}

/** A getUserMedia / mic publish failure. DOMException names per the Media Capture spec. */
export function microphoneProblem(err: unknown): CallError {
  const name = err instanceof DOMException || err instanceof Error ? err.name : "";
  switch (name) {
    case "NotAllowedError":
    case "SecurityError":
      return new CallError(
        "microphone",
        "Microphone access was denied. Allow the microphone for this page (the icon at the " +
          "left of the address bar, or the browser's site settings), then press Retry.",
      );
    case "NotFoundError":
    case "OverconstrainedError":
      return new CallError(
        "microphone",
        "No microphone was found. Plug one in or pick one in the system settings, then press Retry.",
      );
    case "NotReadableError":
    case "AbortError":
      return new CallError(
        "microphone",
        "The microphone is in use by another program or could not be started. Close that " +
          "program, then press Retry.",
      );
    default:
      return new CallError("microphone", `The microphone could not be opened: ${describe(err)}.`);
  }
}

/** A Room.connect failure, told apart by livekit-client's ConnectionError reason. */
export function connectProblem(err: unknown, serverUrl: string): CallError {
  if (err instanceof ConnectionError) {
    const said = err.message ? ` The server said: ${err.message}` : "";
    if (err.reason === ConnectionErrorReason.NotAllowed) {
      if (/expired/i.test(err.message)) {
        return new CallError(
          "token",
          "The LiveKit server refused the access token because it has expired (a token TTL " +
            "that is too short, or the clocks of the token server and LiveKit disagree). " +
            "Press Retry for a new one." +
            said,
        );
      }
      return new CallError(
        "token",
        "The LiveKit server refused the access token (is the page's server using this " +
          "server's API key and secret?)." +
          said,
      );
    }
    if (err.reason === ConnectionErrorReason.Cancelled) {
      return new CallError("disconnected", "Connecting was cancelled.");
    }
  }
  return new CallError(
    "unreachable",
    `Could not reach the LiveKit server at ${serverUrl}. Check that it is running and that ` +
      `the page's server gives browsers a URL they can reach (LIVEKIT_URL). (${describe(err)})`,
  );
}

export function describe(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
