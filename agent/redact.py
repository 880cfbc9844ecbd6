"""Secret redaction shared by every log path (our structlog events and framework records).

One process-wide :data:`REDACTOR` knows the secret *values* loaded from the environment
(registered by :mod:`agent.config`) and also recognises secrets by *shape*: key-like field
names (``api_key``, ``authorization``, ``*_token`` ...), ``Api-Key``/``Bearer`` header
values, OpenAI-style ``sk-`` keys and JWTs (LiveKit access tokens are JWTs and appear in
join URLs). Redaction is applied last, just before rendering, so nothing that reaches a
log sink can carry a secret, whichever library produced the line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

#: Values shorter than this are not value-redacted: real provider keys are 20+ chars,
#: while short values are dev placeholders (LiveKit's ``devkey``/``secret``) whose
#: substring replacement would mangle ordinary words in every line.
MIN_SECRET_LEN = 8

#: Field names that always hold credentials. ``*_tokens`` (LLM usage counters) and
#: ``tokens_per_second`` deliberately do not match: only a trailing singular ``token``.
_SECRET_KEY_RE = re.compile(
    r"^(?:.*[_\-.])?(?:api[_\-]?key|api[_\-]?secret|secret|secret[_\-]?key|password|passwd"
    r"|authorization|token|credentials?|bearer|cookie)$",
    re.IGNORECASE,
)

_SHAPE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # "Api-Key abc...", "Bearer abc...", "Token abc..." (HTTP Authorization values)
    (
        re.compile(r"(?i)\b(api-key|bearer|token)(\s+|[=:]\s*)[A-Za-z0-9._~+/=\-]{8,}"),
        r"\1\2" + REDACTED,
    ),
    # OpenAI-style keys (sk-..., sk-proj-...)
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    # JWTs: LiveKit access tokens, e.g. in ``?access_token=`` join URLs
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"), REDACTED),
)


def is_secret_key(key: object) -> bool:
    """True if a mapping key / record attribute name denotes a credential."""
    return isinstance(key, str) and bool(_SECRET_KEY_RE.match(key))


class Redactor:
    """Replaces secret values and secret-shaped substrings in text and nested data."""

    def __init__(self) -> None:
        """Start with no known secret values (shape-based rules always apply)."""
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add_secret(self, value: str | None) -> None:
        """Register a secret value; it will be replaced wherever it appears."""
        if not value or len(value) < MIN_SECRET_LEN:
            return
        with self._lock:
            if value not in self._values:
                # longest first so a secret containing another is replaced whole
                self._values = tuple(sorted((*self._values, value), key=len, reverse=True))

    def clear(self) -> None:
        """Forget registered values (tests)."""
        with self._lock:
            self._values = ()

    def text(self, s: str) -> str:
        """Redact one string."""
        for value in self._values:
            if value in s:
                s = s.replace(value, REDACTED)
        for pattern, repl in _SHAPE_PATTERNS:
            s = pattern.sub(repl, s)
        return s

    def value(self, obj: Any, *, _depth: int = 0) -> Any:
        """Redact strings inside ``obj`` (str, mapping, list/tuple/set), recursively."""
        if isinstance(obj, str):
            return self.text(obj)
        if _depth > 8:  # defensive: framework extras are shallow; never recurse unboundedly
            return obj
        if isinstance(obj, Mapping):
            return {
                k: (REDACTED if is_secret_key(k) and v else self.value(v, _depth=_depth + 1))
                for k, v in obj.items()
            }
        if isinstance(obj, list | tuple | set | frozenset):
            return type(obj)(self.value(v, _depth=_depth + 1) for v in obj)
        if isinstance(obj, bytes | int | float | bool) or obj is None:
            return obj
        # unknown objects are rendered with str() by the JSON renderer: redact that text
        rendered = str(obj)
        redacted = self.text(rendered)
        return obj if redacted == rendered else redacted

    def mapping(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Redact a flat event dict (top-level keys checked by name, values recursively)."""
        return self.value(data)  # type: ignore[no-any-return]


#: The process-wide redactor used by every log path.
REDACTOR = Redactor()
