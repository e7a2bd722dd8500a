"""The one ``rlobs`` structlog logger. The application decides how it renders."""

from __future__ import annotations

from typing import Any

import structlog

logger: Any = structlog.get_logger("rlobs")
