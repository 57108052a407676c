"""GAN Lab: a 2-D GAN training live in the organiser's browser (:mod:`synthmed.experiments.ganlab` does the work).

Page ``/ganlab``; API under ``/api/ganlab`` (organiser only):

- ``GET /options``: distributions, losses (with their preset n_critic), defaults and limits;
- ``POST /sessions`` ``{"config": {...}}`` -> ``{"id", "state"}``: a new session (at most :data:`SESSION_CAP`
  are kept, the least recently used one is dropped);
- ``POST /sessions/{id}/step`` ``{"steps": 1..200}`` -> state after that many training steps;
- ``GET /sessions/{id}`` -> state; ``DELETE /sessions/{id}``.

Sessions live in memory (``app.state.ganlab_sessions``) and end with the server. Each has a lock, so two requests
never train one session at once; the torch work runs in FastAPI's threadpool, with the threads per operation that
:func:`synthmed.web.server.serve` set for the process (never changed here: set in a worker thread, they would leak
into other threads).
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from synthmed import losses
from synthmed.data import toy2d
from synthmed.errors import ConfigError, one_line
from synthmed.experiments.ganlab import LIMITS, GanLabConfig, GanLabSession
from synthmed.web.app import organiser_page, read_json_object, refuse_unknown_fields, require_organiser
from synthmed.web.security import ID_PATTERN

#: Sessions kept per server; creating one more drops the least recently used.
SESSION_CAP = 8
#: Training steps one request may ask for.
MAX_STEPS = 200


@dataclass
class _Entry:
    session: GanLabSession
    lock: threading.Lock


class SessionStore:
    """GAN Lab sessions by random id, at most ``cap``, the least recently used dropped first (thread-safe)."""

    def __init__(self, cap: int = SESSION_CAP) -> None:
        self.cap = cap
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: GanLabSession) -> str:
        session_id = secrets.token_hex(8)
        with self._lock:
            self._entries[session_id] = _Entry(session, threading.Lock())
            while len(self._entries) > self.cap:
                self._entries.popitem(last=False)
        return session_id

    def get(self, session_id: str) -> _Entry:
        """The session's entry (now the most recently used); HTTP 404 for an unknown or malformed id."""
        with self._lock:
            entry = self._entries.get(session_id) if ID_PATTERN.match(session_id) else None
            if entry is not None:
                self._entries.move_to_end(session_id)
        if entry is None:
            raise HTTPException(404, "no such GAN Lab session (it may have ended: press Reset to start a new one)")
        return entry

    def remove(self, session_id: str) -> None:
        with self._lock:
            found = ID_PATTERN.match(session_id) and self._entries.pop(session_id, None) is not None
        if not found:
            raise HTTPException(404, "no such GAN Lab session")

    def __len__(self) -> int:
        return len(self._entries)


def _store(request: Request) -> SessionStore:
    return request.app.state.ganlab_sessions


def _options() -> dict[str, Any]:
    return {
        "distributions": list(toy2d.NAMES),
        "losses": [{"name": entry.name, "n_critic": entry.preset.n_critic, "critic": entry.critic}
                   for entry in losses.ADVERSARIAL_LOSSES.values()],
        "defaults": asdict(GanLabConfig()),
        "limits": {**{key: list(value) for key, value in LIMITS.items()}, "steps": [1, MAX_STEPS]},
        "session_cap": SESSION_CAP,
    }


def _start(config: GanLabConfig, store: SessionStore) -> dict[str, Any]:
    session = GanLabSession(config)
    state = session.state()
    return {"id": store.add(session), "state": state}


def _advance(entry: _Entry, steps: int) -> dict[str, Any]:
    with entry.lock:
        entry.session.step(steps)
        return entry.session.state()


def _current(entry: _Entry) -> dict[str, Any]:
    with entry.lock:
        return entry.session.state()


def _steps(body: dict[str, Any]) -> int:
    steps = refuse_unknown_fields(body, ("steps",)).get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise HTTPException(422, f"steps must be a whole number from 1 to {MAX_STEPS} (got {steps!r})")
    return steps


def install(app: FastAPI) -> None:
    """Add the GAN Lab page and API routes to ``app``."""
    app.state.ganlab_sessions = SessionStore(SESSION_CAP)
    pages = APIRouter()
    api = APIRouter(prefix="/api/ganlab", dependencies=[Depends(require_organiser)])

    @pages.get("/ganlab", include_in_schema=False)
    def page(request: Request):  # noqa: ANN202
        return organiser_page(request, "ganlab.html", "synthmed · GAN Lab")

    # States go out as JSONResponse: already plain JSON values, so FastAPI's encoder need not walk them; its
    # json.dumps refuses NaN, which state() never holds.
    @api.get("/options")
    def options() -> JSONResponse:
        return JSONResponse(_options())

    @api.post("/sessions")
    async def create_session(request: Request) -> JSONResponse:
        body = refuse_unknown_fields(await read_json_object(request, empty_ok=True), ("config",))
        try:
            config = GanLabConfig.from_mapping(body.get("config"))
        except ConfigError as exc:
            raise HTTPException(422, one_line(exc)) from None
        return JSONResponse(await run_in_threadpool(_start, config, _store(request)))

    @api.post("/sessions/{session_id}/step")
    async def step_session(session_id: str, request: Request) -> JSONResponse:
        entry = _store(request).get(session_id)
        steps = _steps(await read_json_object(request, empty_ok=True))
        return JSONResponse(await run_in_threadpool(_advance, entry, steps))

    @api.get("/sessions/{session_id}")
    def session_state(session_id: str, request: Request) -> JSONResponse:
        return JSONResponse(_current(_store(request).get(session_id)))

    @api.delete("/sessions/{session_id}")
    def delete_session(session_id: str, request: Request) -> dict[str, Any]:
        _store(request).remove(session_id)
        return {"deleted": session_id}

    app.include_router(pages)
    app.include_router(api)
