"""The HTTP API of velocast (FastAPI): ``create_app`` builds it, ``velocast serve`` runs it."""

from velocast.api.app import create_app

__all__ = ["create_app"]
