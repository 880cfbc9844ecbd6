"""The plugin's one logger.

Plain stdlib logging with ``extra=`` fields: the worker bridges stdlib records into
structlog (``ExtraAdder``), and LiveKit's job processes pickle records to the main
process, so every ``extra`` value here is a plain str/int/float/bool.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("plugins.baseten_stt")
