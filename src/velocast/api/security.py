"""The ``X-API-Key`` dependency of every mutating route.

The key is ``VELOCAST_API_KEY`` (``Settings.api_key``), compared in constant time. Without a
configured key the mutating routes are disabled (503) and the server says so at startup; the
read-only routes keep working.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

API_KEY_HEADER = "X-API-Key"
DISABLED = "mutating routes are disabled: set VELOCAST_API_KEY"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="Required by every mutating route (VELOCAST_API_KEY on the server).")


def key_configured(expected: str | None) -> bool:
    return bool(expected and expected.strip())


def require_api_key(request: Request, given: str | None = Security(api_key_header)) -> None:
    expected = request.app.state.settings.api_key
    if not key_configured(expected):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, DISABLED)
    if not given:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": API_KEY_HEADER})
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid {API_KEY_HEADER}",
                            headers={"WWW-Authenticate": API_KEY_HEADER})
