"""The visual Turing test: organisers make studies of real and synthetic images; readers answer through private links.

Organiser (``require_organiser``): the page ``/studies`` and ``/api/studies`` (list, create, details with reader
links, more readers, results as JSON and CSV, any item's PNG). Reader (their token in the path): the page
``/read/{token}`` and ``/api/read/{token}/...`` (state, the image at a position, answer). A reader sees positions
and pixels only: no item ids, sources, truth, other readers or results. Answers need the reader token in the
``X-Synthmed-Token`` header too, so a cross-site form that knows a link still cannot post (the core's guard also
refuses other origins).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from synthmed.web import study_store as store
from synthmed.web.app import (
    TOKEN_HEADER,
    WebSettings,
    organiser_page,
    read_json_object,
    refuse_unknown_fields,
    render_page,
    require_organiser,
)
from synthmed.web.security import same_token

STUDY_FIELDS = ("name", "real", "synthetic", "n_per_class", "readers", "seed", "real_split")
READER_FIELDS = ("readers",)
ANSWER_FIELDS = ("position", "answer", "confidence", "response_ms")
T = TypeVar("T")

_NOT_A_LINK = ("<!doctype html><meta charset=\"utf-8\"><title>synthmed</title>"
               "<p>This link is not valid. Ask whoever sent it to you for a new one.</p>")


def _settings(request: Request) -> WebSettings:
    return request.app.state.settings


def _database(request: Request) -> Path:
    return _settings(request).database


def _call(function: Callable[..., T], *args: Any) -> T:
    """Run a store call, its refusals as HTTP errors with their one-line message (a locked database is the store's
    503, which a client may retry after a second)."""
    try:
        return function(*args)
    except store.StudyError as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        raise HTTPException(exc.status, str(exc), headers=headers) from None


def _reader_link(request: Request, token: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/read/{token}"


def _with_links(request: Request, details: dict[str, Any]) -> dict[str, Any]:
    for reader in details.get("readers", []):
        reader["link"] = _reader_link(request, reader["token"])
    return details


def _png(data: bytes) -> Response:
    return Response(data, media_type="image/png")


# --------------------------------------------------------------------------------------------------- organiser


def _create(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    settings = _settings(request)
    refuse_unknown_fields(body, STUDY_FIELDS)
    study = _call(store.create_study, settings.database, body.get("name"), body.get("real"), body.get("synthetic"),
                  body.get("n_per_class"), body.get("readers", 1), body.get("seed", 0),
                  (settings.root, *settings.source_dirs), body.get("real_split", "test"))
    return _with_links(request, _call(store.study_details, settings.database, study.id))


def _results(database: Path, study_id: str) -> dict[str, Any]:
    from synthmed.metrics.reader_study import ReaderAnswer, reader_study_summary

    rows = _call(store.answers, database, study_id)
    progress = _call(store.study_details, database, study_id)["readers"]
    readers = [{"name": r["name"], "answered": r["answered"], "total": r["total"]} for r in progress]
    if not rows:
        return {"study": study_id, "n_answers": 0, "n_readers": 0, "n_items": 0, "chance": 0.5, "pooled": None,
                "readers": [], "fleiss_kappa": None, "calibration": [], "notes": ["no answers yet"],
                "progress": readers}
    summary = reader_study_summary([ReaderAnswer(reader=r["reader"], item=r["item"], truth=r["truth"],
                                                 answer=r["answer"], confidence=r["confidence"]) for r in rows],
                                   confidence_levels=store.CONFIDENCE_LEVELS)
    return {"study": study_id, **summary, "progress": readers}


def _organiser_router() -> APIRouter:
    router = APIRouter(prefix="/api/studies", dependencies=[Depends(require_organiser)])

    @router.get("")
    def list_all(request: Request) -> dict[str, Any]:
        return {"studies": _call(store.list_studies, _database(request))}

    @router.post("")
    async def create(request: Request) -> JSONResponse:
        body = await read_json_object(request)
        details = await run_in_threadpool(_create, request, body)
        return JSONResponse(details, status_code=201)

    @router.get("/{study_id}")
    def details(request: Request, study_id: str) -> dict[str, Any]:
        return _with_links(request, _call(store.study_details, _database(request), study_id))

    @router.post("/{study_id}/readers")
    async def more_readers(request: Request, study_id: str) -> JSONResponse:
        body = await read_json_object(request)
        refuse_unknown_fields(body, READER_FIELDS)
        links = await run_in_threadpool(_call, store.add_readers, _database(request), study_id, body.get("readers"))
        return JSONResponse({"readers": [{"name": link.name, "token": link.token,
                                          "link": _reader_link(request, link.token)} for link in links]},
                            status_code=201)

    @router.get("/{study_id}/results")
    def results(request: Request, study_id: str) -> dict[str, Any]:
        return _results(_database(request), study_id)

    @router.get("/{study_id}/results.csv")
    def results_csv(request: Request, study_id: str) -> Response:
        text = _call(store.export_csv, _database(request), study_id)
        return Response(text, media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="study-{study_id}.csv"'})

    @router.get("/{study_id}/items/{item_id}.png")
    def organiser_item(request: Request, study_id: str, item_id: str) -> Response:
        return _png(_call(store.organiser_item_png, _database(request), study_id, item_id))

    return router


# ------------------------------------------------------------------------------------------------------ reader


def _reader_router() -> APIRouter:
    router = APIRouter(prefix="/api/read")

    @router.get("/{token}/state")
    def state(request: Request, token: str) -> dict[str, Any]:
        return _call(store.reader_state, _database(request), token)

    @router.get("/{token}/image/{position}")
    def image(request: Request, token: str, position: str) -> Response:
        return _png(_call(store.item_png, _database(request), token, position))  # the store checks the position

    @router.post("/{token}/answer")
    async def answer(request: Request, token: str) -> dict[str, Any]:
        # The token in the URL alone could come from a link pasted into another site's form; the header cannot.
        if not same_token(request.headers.get(TOKEN_HEADER), token):
            raise HTTPException(403, "the reader token must also be sent in the X-Synthmed-Token header")
        body = await read_json_object(request)
        refuse_unknown_fields(body, ANSWER_FIELDS)
        return await run_in_threadpool(_call, store.record_answer, _database(request), token, body.get("position"),
                                       body.get("answer"), body.get("confidence"), body.get("response_ms"))

    return router


def install(app: FastAPI) -> None:
    """Add the Turing test's pages and API routes to ``app``."""

    @app.get("/studies", include_in_schema=False)
    def studies_page(request: Request) -> Response:
        return organiser_page(request, "studies.html", "synthmed · Turing tests")

    @app.get("/read/{token}", include_in_schema=False)
    def read_page(request: Request, token: str) -> Response:
        try:
            state = store.reader_state(_database(request), token)
        except store.StudyError as exc:
            if exc.status == 404:
                return HTMLResponse(_NOT_A_LINK, status_code=404)
            raise HTTPException(exc.status, str(exc)) from None  # busy: not a reason to call the link invalid
        return render_page("read.html", token, f"{state['study']} · synthmed", stylesheet="studies.css")

    app.include_router(_organiser_router())
    app.include_router(_reader_router())
