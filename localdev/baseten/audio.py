"""Binary frame decoding exactly as strict as the real server's audio path."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from plugins.baseten_stt import mulaw
from plugins.baseten_stt.protocol import Encoding


class FrameDecoder:
    """Decode one stream's binary frames to 16 kHz int16 (one 512-sample VAD window).

    Raises ``ValueError`` with the message of Silero's size check (what the real server
    reports in its fatal ``AUDIO_PROCESSING_ERROR``) for any frame of the wrong length,
    and for an encoding the server cannot decode.
    """

    def __init__(self, *, encoding: str) -> None:
        """``encoding`` is the client's raw ``streaming_params.encoding`` string."""
        self._encoding_name = encoding
        try:
            self.encoding: Encoding | None = Encoding(encoding)
        except ValueError:
            self.encoding = None
        # Last sample of the previous mu-law frame, for seamless interpolation.
        self._prev = 0

    def decode(self, data: bytes) -> npt.NDArray[np.int16]:
        if self.encoding is None:
            raise ValueError(f"Unsupported encoding: {self._encoding_name}")
        if self.encoding is Encoding.PCM_S16LE:
            if len(data) % 2:
                raise ValueError("buffer size must be a multiple of element size")
            pcm = np.frombuffer(data, dtype="<i2").astype(np.int16)
        else:
            pcm = self._upsample(mulaw.decode(data))
        if len(pcm) != 512:
            raise ValueError(
                f"Provided number of samples is {len(pcm)} "
                "(Supported values: 256 for 8000 sample rate, 512 for 16000)"
            )
        return pcm

    def _upsample(self, pcm8k: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """8 kHz -> 16 kHz by linear interpolation (the content is 4 kHz band-limited
        anyway; a half-sample delay is irrelevant to VAD and recognition)."""
        if pcm8k.size == 0:
            return pcm8k
        x = pcm8k.astype(np.int32)
        prev = np.concatenate(([self._prev], x[:-1]))
        out = np.empty(2 * len(x), dtype=np.int32)
        out[0::2] = (prev + x) // 2
        out[1::2] = x
        self._prev = int(x[-1])
        return out.astype(np.int16)
