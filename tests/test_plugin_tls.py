"""wss:// is verified: a self-signed server is refused unless its CA is trusted."""

from __future__ import annotations

import ssl

from aiohttp import WSMsgType, web
from livekit.agents import APIConnectionError

from plugins.baseten_stt import STT
from plugins.baseten_stt.protocol import EndAudioBody, EndAudioReply, TranscriptionResult
from tests.fixtures.plugin import plugin_speech, run_stt


async def tiny_server(ws: web.WebSocketResponse, request: web.Request) -> None:
    """First message, audio, then one final and ``finished`` on ``end_audio``."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and '"end_audio"' in msg.data:
            final = TranscriptionResult(
                segments=[{"start_time": 0.3, "end_time": 1.0, "text": "secure hello"}],
                is_final=True,
                audio_length_sec=1.0,
            )
            await ws.send_json(final.to_wire())
            await ws.send_json(EndAudioReply(body=EndAudioBody(status="finished")).model_dump())


async def _run(scripted_ws_server, tls, **kw):
    srv = await scripted_ws_server(tiny_server, ssl_context=tls.server_context())
    assert srv.url.startswith("wss://")
    stt = STT(api_key="tls-key", model_endpoint=srv.url, **kw)
    pcm, _ = plugin_speech(["hello how are you"])
    run = await run_stt(stt, pcm[:16000])
    await stt.aclose()
    return srv, run


async def test_self_signed_is_refused_by_default(
    scripted_ws_server, self_signed_tls, monkeypatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    srv, run = await _run(scripted_ws_server, self_signed_tls)
    assert isinstance(run.error, APIConnectionError)
    assert not run.error.retryable
    assert "certificate" in str(run.error).lower()
    assert srv.headers == []  # never got as far as the HTTP upgrade


async def test_accepted_with_ca_in_ssl_cert_file(
    scripted_ws_server, self_signed_tls, monkeypatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed_tls.ca_cert))
    srv, run = await _run(scripted_ws_server, self_signed_tls)
    assert run.error is None and run.finals == ["secure hello"]
    assert srv.headers[0]["Authorization"] == "Api-Key tls-key"


async def test_accepted_with_custom_ssl_context(
    scripted_ws_server, self_signed_tls, monkeypatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    ctx = ssl.create_default_context(cafile=str(self_signed_tls.ca_cert))
    srv, run = await _run(scripted_ws_server, self_signed_tls, ssl_context=ctx)
    assert run.error is None and run.finals == ["secure hello"]
    assert srv.closes == [1000]  # the client closed normally after "finished"


def test_wrong_hostname_is_refused(self_signed_tls) -> None:
    # The cert names 127.0.0.1/localhost only; check_hostname stays on by default.
    ctx = STT(api_key="k", model_endpoint="wss://example.invalid/v1/websocket")._ssl_context
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_default_context_is_shared_per_trust_store(self_signed_tls, monkeypatch) -> None:
    # One parsed CA store per process, not per STT; a new SSL_CERT_FILE still applies.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    url = "wss://example.invalid/v1/websocket"
    a = STT(api_key="k", model_endpoint=url)._ssl_context
    b = STT(api_key="k", model_endpoint=url)._ssl_context
    assert a is b and a.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.setenv("SSL_CERT_FILE", str(self_signed_tls.ca_cert))
    c = STT(api_key="k", model_endpoint=url)._ssl_context
    assert c is not a and c.check_hostname
