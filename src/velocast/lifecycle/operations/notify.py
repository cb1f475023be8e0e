"""Notifications: a Discord/Slack-compatible JSON message to ``VELOCAST_WEBHOOK_URL``.

The payload carries ``content`` (Discord) and ``text`` (Slack) with the same message, plus a
``velocast`` object with the details. A webhook that fails is logged and never breaks the caller.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from velocast.config import Settings, get_settings, redact, redact_secrets

log = logging.getLogger(__name__)


def send(message: str, details: dict[str, Any] | None = None, settings: Settings | None = None,
         timeout: float = 5.0) -> bool:
    """Post ``message``; True when the webhook answered 2xx, False when unset or failing."""
    settings = settings or get_settings()
    if not settings.webhook_url:
        return False
    payload = {"content": message[:1900], "text": message, "velocast": details or {}}
    try:
        response = httpx.post(settings.webhook_url, json=payload, timeout=timeout)
        response.raise_for_status()
    except Exception as exc:  # a notification must never break the lifecycle
        # httpx names the URL in its errors, and a webhook URL's path is its secret token
        log.warning("webhook notification to %s failed: %s: %s", redact(settings.webhook_url, keep_path=False),
                    type(exc).__name__, redact_secrets(str(exc), settings))
        return False
    return True
