"""Baseten streaming-Whisper STT for LiveKit Agents (vendored, hardened)."""
