"""(placeholder: being written)"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's pages and API routes to ``app``."""
