"""The latent explorer: a generative run's images along a spherical path through the latents of chosen seeds.

The latent of seed ``s`` is the noise ``torch.randn(latent_dim, generator=torch.Generator().manual_seed(s))``.
With ``k`` seeds the path has ``k - 1`` segments, each a spherical interpolation (:func:`synthmed.viz.latent.slerp`)
from one seed's noise to the next; ``t`` in [0, 1] runs along the whole path, so ``t = 0`` is the first seed's
image and ``t = 1`` the last one's. Conditional runs map the interpolated noise into the chosen class's latent
distribution (:meth:`~synthmed.recipes.base.ConditionalGenerativeRecipe.latents_from_noise`: the noise itself for
most, the class's Gaussian for BAGAN), as ``synthmed explore`` does.

Images are generated on demand on the CPU by what :func:`synthmed.load` gives, whose ``generate`` uses the EMA
generator (``G_ema``) when the run kept one. Loaded models are cached (the last :data:`MAX_MODELS` runs) and
reloaded when a newer checkpoint appears.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from synthmed.web.app import organiser_page, require_organiser
from synthmed.web.images import png_bytes
from synthmed.web.runs import Entry, RunIndex, get_index, inside_root

#: Runs whose models stay loaded.
MAX_MODELS = 3
MIN_SEEDS, MAX_SEEDS = 2, 8
#: Seeds are 0 .. 2**31 - 1 (what every seed box and random draw can hold exactly).
SEED_LIMIT = 2**31
MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES = 2, 16, 8
#: The side, in screen pixels, that images are enlarged towards (by whole pixels, so they stay sharp).
DISPLAY_SIDE, STRIP_SIDE = 256, 112


@dataclass(frozen=True)
class LatentRun:
    """What the explorer needs to know of a run without loading it."""

    entry: Entry
    recipe: str
    latent_dim: int
    conditional: bool
    class_names: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"id": self.entry.id, "name": self.entry.name, "recipe": self.recipe, "latent_dim": self.latent_dim,
                "conditional": self.conditional, "class_names": list(self.class_names)}


def latent_run(entry: Entry) -> LatentRun | None:
    """``entry`` as a run that samples from a latent space (a generative recipe with a checkpoint), else ``None``."""
    from synthmed.recipes import RECIPES, ConditionalGenerativeRecipe, GenerativeRecipe, make_config
    from synthmed.training.checkpoint import list_checkpoints

    config = entry.config or {}
    cls = RECIPES.get(str(config.get("recipe")))
    if cls is None or not issubclass(cls, GenerativeRecipe) or not list_checkpoints(entry.path / "checkpoints"):
        return None
    try:
        latent_dim = int(make_config(cls, dict(config.get("recipe_options") or {})).latent_dim)
    except Exception:  # noqa: BLE001 (a config this version cannot read is simply not offered)
        return None
    names: tuple[str, ...] = ()
    conditional = issubclass(cls, ConditionalGenerativeRecipe)
    if conditional:  # as ConditionalGenerativeRecipe.set_classes names them
        info = config.get("data_info") or {}
        count = int(info.get("num_classes") or 0)
        given = tuple(str(n) for n in info.get("class_names") or ())
        names = given if len(given) == count else tuple(str(k) for k in range(count))
    return LatentRun(entry, cls.name, latent_dim, conditional, names)


def seed_noise(seed: int, latent_dim: int) -> torch.Tensor:
    """The latent noise of ``seed``: ``torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed))``."""
    return torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed))


def path_noise(anchors: torch.Tensor, t: float) -> torch.Tensor:
    """The noise at fraction ``t`` of the path through ``anchors`` (k, D): segment ``i`` joins anchor ``i`` to
    ``i + 1`` spherically; ``t = 0`` is exactly anchor 0 and ``t = 1`` exactly the last anchor."""
    from synthmed.viz.latent import slerp

    segments = anchors.shape[0] - 1
    position = t * segments
    index = min(int(math.floor(position)), segments - 1)
    local = position - index
    return slerp(anchors[index], anchors[index + 1], torch.tensor([local], dtype=anchors.dtype))[0]


def display_scale(height: int, width: int, side: int = DISPLAY_SIDE) -> int:
    """The whole-pixel enlargement that brings an image's longer side towards ``side`` (1 to 8)."""
    return max(1, min(8, side // max(height, width)))


def displayable(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) as grey or RGB: images of another channel count show their channels side by side in grey."""
    if images.shape[1] in (1, 3):
        return images
    return torch.cat(list(images.unbind(1)), dim=-1)[:, None]


class ModelCache:
    """Loaded models of the last :data:`MAX_MODELS` runs; one lock, so one load or generation at a time."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self._models: OrderedDict[str, tuple[Any, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def images(self, run: LatentRun, anchors: torch.Tensor, fractions: list[float], label: int | None
               ) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] at ``fractions`` of the path through ``anchors``."""
        noise = torch.stack([path_noise(anchors, t) for t in fractions])
        # torch's threads are the process's, set once by synthmed.web.server.serve: set here, in a worker thread,
        # they would leak into the other threads.
        with self._lock:
            model = self._model(run)
            return generate_from_noise(model, noise, label)

    def _model(self, run: LatentRun) -> Any:
        from synthmed import api
        from synthmed.errors import SynthmedError, one_line
        from synthmed.training.checkpoint import latest_checkpoint

        folder = run.entry.path / "checkpoints"
        latest = latest_checkpoint(folder)
        if latest is None or inside_root(latest, self.root) is None:
            raise HTTPException(409, "the run has no checkpoint inside the runs folder")
        try:
            key = (latest.name, latest.stat().st_mtime_ns)
        except OSError:  # pruned by a run still training: the next request finds the newer one
            raise HTTPException(409, "the run's checkpoint changed while loading; try again") from None
        cached = self._models.get(run.entry.id)
        if cached is not None and cached[0] == key:
            self._models.move_to_end(run.entry.id)
            return cached[1]
        try:
            model = api.load(run.entry.path, device="cpu")
        except (SynthmedError, OSError, RuntimeError, ValueError, KeyError) as exc:
            raise HTTPException(409, f"cannot load the run: {one_line(exc, 300)}") from None
        self._models[run.entry.id] = (key, model)
        while len(self._models) > MAX_MODELS:
            self._models.popitem(last=False)
        return model


def generate_from_noise(model: Any, noise: torch.Tensor, label: int | None) -> torch.Tensor:
    """``model``'s images (on the CPU) for standard-normal ``noise`` (N, D): through the class's latents for a
    conditional run (``label``), as :meth:`synthmed.api.TrainedModel.explore` does."""
    from synthmed.ops import kernels

    if not model.conditional:
        return model.generate(noise)
    recipe = model.recipe
    labels = torch.full((noise.shape[0],), int(label or 0), dtype=torch.long, device=recipe.device)
    with torch.no_grad(), kernels(model.config.train.cpu_kernels):
        latents = recipe.latents_from_noise(labels, noise.to(recipe.device))
        return recipe.generate(latents, label=labels).float().cpu()


# --- requests ----------------------------------------------------------------------------------------------------


def parse_seeds(text: str | None) -> list[int]:
    """``"1,2,3"`` -> [1, 2, 3]: 2 to 8 whole numbers from 0 to 2**31 - 1, or a one-line 400."""
    problem = f"seeds must be {MIN_SEEDS} to {MAX_SEEDS} comma-separated whole numbers from 0 to {SEED_LIMIT - 1}"
    parts = [p.strip() for p in (text or "").split(",")]
    if not MIN_SEEDS <= len(parts) <= MAX_SEEDS or not all(p.isascii() and p.isdigit() and len(p) <= 10
                                                           for p in parts):
        raise HTTPException(400, problem)
    seeds = [int(p) for p in parts]
    if any(s >= SEED_LIMIT for s in seeds):
        raise HTTPException(400, problem)
    return seeds


def parse_fraction(text: str | None) -> float:
    """``t``: a finite number from 0 to 1, or a one-line 400."""
    try:
        value = float(text) if text is not None and len(text) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise HTTPException(400, "t must be a number from 0 to 1")
    return value


def parse_frames(text: str | None) -> int:
    if text is None:
        return DEFAULT_FRAMES
    if not (text.isascii() and text.isdigit() and len(text) <= 3 and MIN_FRAMES <= int(text) <= MAX_FRAMES):
        raise HTTPException(400, f"frames must be a whole number from {MIN_FRAMES} to {MAX_FRAMES}")
    return int(text)


def parse_class(text: str | None, run: LatentRun) -> int | None:
    """The class for a conditional run (index or name; default 0), ``None`` for an unconditional one."""
    given = None if text is None or text.strip() == "" else text.strip()
    if not run.conditional:
        if given is not None:
            raise HTTPException(400, "this run is not class-conditional: leave out class")
        return None
    if given is None:
        return 0
    if given in run.class_names:
        return run.class_names.index(given)
    if given.isascii() and given.isdigit() and len(given) <= 6 and int(given) < len(run.class_names):
        return int(given)
    named = ", ".join(f"{k}={name}" for k, name in enumerate(run.class_names))
    raise HTTPException(400, f"class must be one of this run's {len(run.class_names)} classes ({named})")


def find_latent_run(index: RunIndex, run_id: str) -> LatentRun:
    run = latent_run(index.run(run_id, rescan=False))
    if run is None:
        raise HTTPException(404, "no generative run with a checkpoint has this id")
    return run


def path_request(index: RunIndex, run_id: str, query: Mapping[str, str]
                 ) -> tuple[LatentRun, torch.Tensor, int | None]:
    """What an image or strip request names besides its position: the run, the seeds' latents as the path's
    anchors (k, D), and the class; each problem a one-line 4xx."""
    run = find_latent_run(index, run_id)
    seeds = parse_seeds(query.get("seeds"))
    label = parse_class(query.get("class"), run)
    return run, torch.stack([seed_noise(s, run.latent_dim) for s in seeds]), label


def _png(images: torch.Tensor, nrow: int, side: int) -> Response:
    from synthmed.viz.grid import make_grid

    images = displayable(images)
    scale = display_scale(images.shape[-2], images.shape[-1], side)
    if images.shape[0] == 1:
        return Response(png_bytes(images[0], scale=scale), media_type="image/png")
    grid = make_grid(images, nrow=nrow)
    return Response(png_bytes(np.ascontiguousarray(grid), scale=scale), media_type="image/png")


def install(app: FastAPI) -> None:
    """Add the explorer page (``/explore``) and the ``/api/latent`` routes to ``app``."""
    index = get_index(app)
    models = ModelCache(index.root)
    app.state.latent_models = models
    router = APIRouter(prefix="/api/latent", dependencies=[Depends(require_organiser)])

    @router.get("/runs")
    def runs() -> JSONResponse:
        index.scan()
        found = [latent_run(entry) for entry in index.runs.values()]
        return JSONResponse(sorted((r.describe() for r in found if r is not None), key=lambda r: r["name"]))

    @router.get("/{run_id}/image.png")
    def image(run_id: str, request: Request) -> Response:
        run, anchors, label = path_request(index, run_id, request.query_params)
        t = parse_fraction(request.query_params.get("t"))
        return _png(models.images(run, anchors, [t], label), 1, DISPLAY_SIDE)

    @router.get("/{run_id}/strip.png")
    def strip(run_id: str, request: Request) -> Response:
        run, anchors, label = path_request(index, run_id, request.query_params)
        frames = parse_frames(request.query_params.get("frames"))
        fractions = [i / (frames - 1) for i in range(frames)]
        return _png(models.images(run, anchors, fractions, label), frames, STRIP_SIDE)

    app.include_router(router)

    @app.get("/explore", include_in_schema=False)
    def page(request: Request) -> Response:
        return organiser_page(request, "explore.html", "synthmed · latent explorer")
