"""G.711 mu-law codec (ITU-T G.711), vectorised with numpy.

``audioop`` is deprecated and gone in Python 3.13, so the client (encode) and the
local server (decode) share this one implementation.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_BIAS = 0x84  # 132: G.711 bias added before the segment search
_CLIP14 = 8159  # clip level in the 14-bit domain the encoder works in
# Upper bounds of the eight G.711 segments (14-bit magnitudes plus bias/4).
_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def encode(pcm: npt.NDArray[np.int16]) -> bytes:
    """Encode int16 PCM samples to mu-law bytes (one byte per sample).

    Bit-exact with the reference G.711 encoder that CPython's ``audioop`` used.
    """
    x = pcm.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _CLIP14) + (_BIAS >> 2)
    seg = np.searchsorted(_SEG_END, mag, side="left").astype(np.int32)
    uval = (seg << 4) | ((mag >> np.minimum(seg + 1, 8)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)  # beyond the last segment: saturate
    return ((uval ^ mask) & 0xFF).astype(np.uint8).tobytes()


def decode(data: bytes) -> npt.NDArray[np.int16]:
    """Decode mu-law bytes to int16 PCM samples."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(sign != 0, -mag, mag).astype(np.int16)
