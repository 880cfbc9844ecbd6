"""Turn whatever a user copied from the Baseten dashboard into the websocket URL.

A pure function, table-tested in ``tests/test_plugin_endpoint.py``. The rules follow
``shared/docs/baseten-protocol.md`` §2 (truss' ``ws_call_args`` rule): ``https`` becomes
``wss`` and the last path element (``predict`` for models, ``run_remote`` for chains)
becomes ``websocket``, keeping the ``environments/<env>`` / ``deployment/<id>`` /
``development`` prefix.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

_EXAMPLE = "wss://model-<id>.api.baseten.co/environments/production/websocket"
_ID_RE = re.compile(r"^[A-Za-z0-9]+$")
# Last path elements that name an invocation method, each of which maps to the
# websocket method of the same deployment.
_METHODS = {"predict", "run_remote", "websocket", "async_predict"}
_SEG = r"[A-Za-z0-9_.\-]+"
# (prefix regex, human name) of every deployment selector Baseten documents.
_PREFIXES = (
    re.compile(rf"^/environments/{_SEG}$"),
    re.compile(rf"^/deployment/{_SEG}$"),
    re.compile(r"^/development$"),
)


def _redacted(url: str) -> str:
    """The URL as safe to print: no userinfo, no query (either could hold a secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


def _bad(url: str, why: str) -> ValueError:
    return ValueError(f"invalid Baseten model_endpoint {_redacted(url)!r}: {why}; e.g. {_EXAMPLE}")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost`` (the only hosts plaintext ``ws://`` may reach)."""
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def endpoint_for_model(model_id: str, *, environment: str = "production") -> str:
    if not _ID_RE.match(model_id):
        raise ValueError(
            f"invalid Baseten model_id {model_id!r}: expected letters/digits, e.g. 'abc123xy'"
        )
    return f"wss://model-{model_id}.api.baseten.co/environments/{environment}/websocket"


def endpoint_for_chain(chain_id: str, *, environment: str = "production") -> str:
    if not _ID_RE.match(chain_id):
        raise ValueError(
            f"invalid Baseten chain_id {chain_id!r}: expected letters/digits, e.g. 'abc123xy'"
        )
    return f"wss://chain-{chain_id}.api.baseten.co/environments/{environment}/websocket"


def normalize_endpoint(url: str, *, allow_insecure: bool = False) -> str:
    """Return the ``wss://…/websocket`` URL for any documented form of ``url``.

    Accepted: a bare model id (``abc123xy``), the dashboard's
    ``https://…/environments/<env>/predict`` (``run_remote`` for chains),
    ``/deployment/<id>/…``, ``/development/…``, a bare host (production environment), the
    legacy/local-truss ``/v1/websocket``, custom-server ``…/sync/<path>`` and any of these
    already in ``wss://`` form. ``ws://`` (plaintext) only to a loopback host unless
    ``allow_insecure`` is true. Raises ``ValueError`` (one line, with an example) for
    anything else.
    """
    raw = url.strip()
    if not raw:
        raise ValueError(f"Baseten model_endpoint is empty; e.g. {_EXAMPLE}")
    if "://" not in raw:
        if _ID_RE.match(raw) and raw.lower() != "localhost":
            # A bare model id (what the dashboard shows next to the model's name); a
            # host always has a dot, so this cannot shadow one.
            return endpoint_for_model(raw)
        raw = "https://" + raw  # a bare host copied without its scheme
    try:
        parts = urlsplit(raw)
        host = parts.hostname
        port = parts.port
    except ValueError as e:
        raise _bad(raw, f"unparseable ({e})") from None
    scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}.get(parts.scheme.lower())
    if scheme is None:
        raise _bad(raw, f"unsupported scheme {parts.scheme!r}")
    if not host:
        raise _bad(raw, "no host")
    if parts.username or parts.password:
        raise _bad(raw, "credentials in the URL are not allowed (pass api_key instead)")
    if parts.query or parts.fragment:
        raise _bad(raw, "query strings are not allowed (pass api_key instead)")
    if scheme == "ws" and not allow_insecure and not is_loopback_host(host):
        raise ValueError(
            f"refusing plaintext ws:// to non-loopback host {host!r} (the API key would travel "
            "unencrypted); use wss:// or pass allow_insecure=True"
        )

    path = re.sub(r"/+", "/", parts.path).rstrip("/")
    path = _normalize_path(raw, path)
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def _normalize_path(raw: str, path: str) -> str:
    if path == "":
        return "/environments/production/websocket"
    if path == "/v1/websocket":  # legacy hosted form and the local truss server
        return path
    if "/sync/" in path + "/":
        # Custom Docker/BYOC servers expose their own websocket route under sync/.
        prefix = path.split("/sync", 1)[0]
        if prefix == "" or any(p.match(prefix) for p in _PREFIXES):
            if path.endswith("/sync"):
                raise _bad(raw, "'sync' needs the custom server's websocket path after it")
            return path
        raise _bad(raw, f"unrecognised path {path!r}")
    for prefix_re in _PREFIXES:
        if prefix_re.match(path):
            return path + "/websocket"
    head, _, last = path.rpartition("/")
    if last in _METHODS and any(p.match(head) for p in _PREFIXES):
        return head + "/websocket"
    raise _bad(raw, f"unrecognised path {path!r}")
