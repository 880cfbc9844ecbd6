"""The voice-agent worker: configuration, logging, session factory, LiveKit wiring.

``agent.py`` at the repository root is only the entry point; everything lives here.
"""
