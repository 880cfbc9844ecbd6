"""Opening the websocket: connect timeout, handshake classification, cold-start backoff.

Every failure leaves as a LiveKit ``APIError`` so the framework's retry logic applies,
and none is chained to aiohttp's exception: its ``request_info`` carries our request
headers, i.e. the API key, and would surface in tracebacks and error reprs.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus

import aiohttp
from livekit.agents import APIConnectionError, APIStatusError, APITimeoutError

from .log import logger

# Cold-start backoff: 0.5 s doubling to 15 s with full jitter. 15 s keeps a parked
# deployment polled a few times a minute without hammering the gateway; jitter keeps
# many workers restarting together from retrying in lockstep.
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 15.0

_AUTH_HINTS = {
    401: "Baseten rejected the API key (401 Unauthorized); check api_key / BASETEN_API_KEY",
    403: "Baseten refused access (403 Forbidden); the API key cannot use this model or chain",
    404: "Baseten endpoint not found (404); check the model/chain id and environment in "
    "model_endpoint",
    402: "Baseten refused the request (402 Payment Required); check the account's billing",
}


def default_ssl_context() -> ssl.SSLContext:
    """Verified TLS against the system store, as ``ssl.create_default_context()``, shared.

    A context holds the parsed CA store (~850 KB measured on this image), so one per
    ``STT`` cost most of a stream's memory when every stream has its own STT (the
    benchmark, per-participant agents). Contexts are safe to share between connections.
    The store is read from ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when a context is built, so
    the cache is keyed by them: changing either still takes effect for new STTs.
    """
    return _default_ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _default_ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    return ssl.create_default_context()


def _status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _retryable_status(status: int) -> bool:
    """5xx (container starting/crashed/draining) and 429/408 are worth waiting out."""
    return status >= 500 or status in (408, 429)


async def open_websocket(
    *,
    session: aiohttp.ClientSession,
    url: str,
    api_key: str,
    ssl_context: ssl.SSLContext | None,
    connect_timeout_s: float,
    cold_start_timeout_s: float,
    on_handshake_retry: Callable[[int, float], None],
) -> aiohttp.ClientWebSocketResponse:
    """Connect, retrying 5xx/429 upgrades with jittered exponential backoff.

    Each attempt is bounded by ``connect_timeout_s``; the retries together by
    ``cold_start_timeout_s``. Non-retryable statuses raise at once with a message that
    names the cause (never the key).
    """
    headers = {"Authorization": f"Api-Key {api_key}"}
    deadline = time.monotonic() + cold_start_timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return await asyncio.wait_for(
                session.ws_connect(
                    url,
                    headers=headers,
                    ssl=(ssl_context or True) if url.startswith("wss://") else False,
                    # Transport pings catch half-open TCP on servers that predate
                    # health_check; 30 s as in LiveKit's Deepgram plugin.
                    heartbeat=30.0,
                    autoclose=False,
                    max_msg_size=16 * 1024 * 1024,
                ),
                timeout=connect_timeout_s,
            )
        except aiohttp.WSServerHandshakeError as e:
            status = e.status
            if not _retryable_status(status):
                msg = _AUTH_HINTS.get(
                    status,
                    f"Baseten refused the websocket upgrade ({status} {_status_phrase(status)})",
                )
                raise APIStatusError(msg, status_code=status, retryable=False) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise APIStatusError(
                    f"Baseten kept answering {status} {_status_phrase(status)} for "
                    f"{cold_start_timeout_s:g} s (cold_start_timeout_s); deployment unavailable",
                    status_code=status,
                    retryable=True,
                ) from None
            delay = min(
                remaining,
                random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (attempt - 1))),
            )
            logger.warning(
                "baseten upgrade answered %s, retrying in %.2f s (cold start?)",
                status,
                delay,
                extra={"status_code": status, "attempt": attempt, "retry_in_s": round(delay, 3)},
            )
            on_handshake_retry(status, delay)
            await asyncio.sleep(delay)
        except TimeoutError:
            raise APITimeoutError(
                f"Baseten websocket connect timed out after {connect_timeout_s:g} s "
                "(conn_options.timeout)"
            ) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise APIConnectionError(
                f"TLS certificate verification failed for {e.host}: {e.certificate_error}; "
                "provide the CA via SSL_CERT_FILE or ssl_context=",
                retryable=False,
            ) from None
        except aiohttp.ClientSSLError as e:
            raise APIConnectionError(
                f"TLS handshake with {e.host} failed: {e.os_error}", retryable=False
            ) from None
        except aiohttp.ClientConnectorError as e:
            raise APIConnectionError(
                f"cannot connect to Baseten at {e.host}:{e.port}: {e.os_error}"
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            raise APIConnectionError(
                f"Baseten websocket connect failed: {type(e).__name__}"
            ) from None
