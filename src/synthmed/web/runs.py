"""The runs dashboard: every run and evaluation report under the root, their losses, samples and pictures.

A *run* is a folder holding ``config.yaml``; an *evaluation report* is a folder whose ``metrics.json`` has ``sets``
and ``extractors`` (``synthmed evaluate --out DIR``). Both are found by walking the root a few levels deep without
following symbolic links (a linked folder is either outside the root or a second name for one already listed).
Each gets an opaque id (a hash of its path relative to the root) and an index of the pictures it may serve; a
picture is served only by (id, file id) from that index, and only while its real path still lies inside the root.

The index is rebuilt on each list request: the walk reads directory entries and, per folder, only files whose
modification time or size changed since the last walk (no image is decoded).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from synthmed.errors import one_line
from synthmed.web.app import organiser_page, require_organiser
from synthmed.web.security import ID_PATTERN

#: Folder levels below the root that are searched for runs and reports.
MAX_DEPTH = 4
#: Folders visited per walk at most: a root pointed at a huge tree stays cheap to list.
MAX_FOLDERS = 20_000
#: Points per loss series sent to the chart.
MAX_SERIES_POINTS = 2_000
#: The report text sent with a report's detail, at most (characters).
MAX_REPORT_TEXT = 200_000
#: Folders never searched: checkpoints hold weights, samples the grids already indexed with their run.
SKIPPED_FOLDERS = frozenset({"checkpoints", "samples", "__pycache__", "node_modules"})
#: yaml.safe_load's loader, in C where PyYAML has it (the Python one takes ~0.1 s per config: seconds per walk).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SAMPLE_NAME = re.compile(r"^step_(\d+)\.png$")
#: Metrics of an evaluation report shown as its headline numbers, in this order.
HEADLINE_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage", "ms_ssim_fake", "ms_ssim_real")


@dataclass
class ServedFile:
    """A picture a run or report may serve: its id, its name relative to the run or report, and where it is."""

    file_id: str
    name: str
    path: Path
    step: int | None = None


@dataclass
class Entry:
    """A run or an evaluation report as the last walk saw it."""

    id: str
    name: str
    path: Path
    modified: float
    files: dict[str, ServedFile] = field(default_factory=dict)
    document: dict[str, Any] | None = None  # a report's metrics.json
    config: dict[str, Any] | None = None  # a run's config.yaml
    metrics: dict[str, Any] | None = None  # a run's metrics.json
    last_logged_step: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def samples(self) -> list[ServedFile]:
        return sorted((f for f in self.files.values() if f.step is not None), key=lambda f: f.step or 0)

    def images(self) -> list[ServedFile]:
        return sorted((f for f in self.files.values() if f.step is None), key=lambda f: f.name)


def entry_id(kind: str, relative: str) -> str:
    """The opaque, stable id of a run or report: 12 hex digits of the SHA-256 of its kind and relative path."""
    return hashlib.sha256(f"{kind}:{relative}".encode()).hexdigest()[:12]


def file_id(relative: str) -> str:
    return hashlib.sha256(relative.encode()).hexdigest()[:16]


def jsonable(value: Any) -> Any:
    """``value`` with what JSON cannot carry replaced: NaN and infinities become null, other objects text."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat(follow_symlinks=False)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _regular_file(path: Path) -> bool:
    """A file that is no symbolic link (a link could name something outside the root)."""
    return path.is_file() and not path.is_symlink()


def _read_yaml(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, f"config.yaml cannot be read: {one_line(exc, 300)}"
    if not isinstance(loaded, dict):
        return None, "config.yaml is not a mapping"
    return loaded, None


def _read_json(path: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{name} cannot be read: {one_line(exc, 300)}"
    if not isinstance(loaded, dict):
        return None, f"{name} is not a JSON object"
    return loaded, None


def last_logged_step(path: Path) -> int | None:
    """The step of the last complete row of ``losses.csv``, reading only the file's end."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 4096))
            tail = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = tail.split("\n")
    lines = lines[1:] if size > 4096 else lines  # the first may be cut by the seek
    for line in reversed(lines[:-1]):  # only lines ended by a newline: the last may be half written
        first = line.split(",", 1)[0].strip()
        if first.isdigit():
            return int(first)
    return None


def _image_files(folder: Path, prefix: str = "") -> list[ServedFile]:
    """The pictures directly inside ``folder`` (no links), each named ``prefix + file name``."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for item in entries:
        suffix = os.path.splitext(item.name)[1].lower()
        if suffix not in IMAGE_TYPES or item.name.startswith(".") or not item.is_file(follow_symlinks=False):
            continue
        match = SAMPLE_NAME.match(item.name) if prefix == "samples/" else None
        if prefix == "samples/" and match is None:
            continue
        name = prefix + item.name
        found.append(ServedFile(file_id(name), name, Path(item.path), int(match.group(1)) if match else None))
    return found


def _modified(*paths: Path) -> float:
    times = [s[0] for s in (_stat(p) for p in paths) if s is not None]
    return max(times) / 1e9 if times else 0.0


def _iso(timestamp: float) -> str | None:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds") if timestamp else None


def _run_signature(folder: Path) -> tuple[Any, ...]:
    """What a run's summary depends on: its folder, its samples folder and its three record files."""
    return tuple(_stat(folder / name) for name in (".", "samples", "config.yaml", "metrics.json", "losses.csv"))


def _read_run(folder: Path, run_id: str, name: str) -> Entry:
    entry = Entry(run_id, name, folder, _modified(folder, folder / "samples", folder / "config.yaml",
                                                  folder / "metrics.json", folder / "losses.csv"))
    entry.config, problem = _read_yaml(folder / "config.yaml")
    entry.errors += [problem] if problem else []
    if _regular_file(folder / "metrics.json"):
        entry.metrics, problem = _read_json(folder / "metrics.json", "metrics.json")
        entry.errors += [problem] if problem else []
    if _regular_file(folder / "losses.csv"):
        entry.last_logged_step = last_logged_step(folder / "losses.csv")
    samples_dir = folder / "samples"
    pictures = _image_files(folder)
    if samples_dir.is_dir() and not samples_dir.is_symlink():
        pictures += _image_files(samples_dir, "samples/")
    entry.files = {f.file_id: f for f in pictures}
    return entry


def _read_report(folder: Path, report_id: str, name: str, document: dict[str, Any]) -> Entry:
    entry = Entry(report_id, name, folder, _modified(folder, folder / "metrics.json"), document=document)
    entry.files = {f.file_id: f for f in _image_files(folder)}
    if not isinstance(document.get("sets"), dict) or not isinstance(document.get("metrics", []), list):
        entry.errors.append("metrics.json: 'sets' or 'metrics' has an unexpected shape")
    return entry


def _walk(root: Path) -> list[tuple[Path, int]]:
    """Folders under ``root`` (itself included) down to :data:`MAX_DEPTH`, without links or hidden folders."""
    found, stack = [], [(root, 0)]
    while stack and len(found) < MAX_FOLDERS:
        folder, depth = stack.pop()
        found.append((folder, depth))
        if depth >= MAX_DEPTH:
            continue
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for item in entries:
            if item.name.startswith(".") or item.name in SKIPPED_FOLDERS:
                continue
            if item.is_dir(follow_symlinks=False):
                stack.append((Path(item.path), depth + 1))
    return found


class RunIndex:
    """The runs and evaluation reports under ``root``, rebuilt by :meth:`scan`; per-folder reads are cached on
    the files' modification times and sizes, so a walk re-reads only what changed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.runs: dict[str, Entry] = {}
        self.reports: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._run_cache: dict[Path, tuple[tuple[Any, ...], Entry]] = {}
        self._report_cache: dict[Path, tuple[tuple[Any, ...], Entry | None]] = {}
        self._losses_cache: OrderedDict[Path, tuple[tuple[Any, ...] | None, dict[str, Any]]] = OrderedDict()

    def relative(self, folder: Path) -> str:
        return folder.relative_to(self.root).as_posix()

    def scan(self) -> None:
        """Walk the root again: new, changed and removed runs and reports."""
        with self._lock:
            runs, reports = {}, {}
            run_cache, report_cache = {}, {}
            for folder, _depth in _walk(self.root):
                if _regular_file(folder / "config.yaml"):
                    entry = self._cached_run(folder)
                    run_cache[folder] = self._run_cache[folder]
                    runs[entry.id] = entry
                elif _regular_file(folder / "metrics.json"):
                    report = self._cached_report(folder)
                    report_cache[folder] = self._report_cache[folder]
                    if report is not None:
                        reports[report.id] = report
            self._run_cache, self._report_cache = run_cache, report_cache
            self.runs, self.reports = runs, reports

    def _cached_run(self, folder: Path) -> Entry:
        signature = _run_signature(folder)
        cached = self._run_cache.get(folder)
        if cached is None or cached[0] != signature:
            name = self.relative(folder)
            cached = (signature, _read_run(folder, entry_id("run", name), name))
            self._run_cache[folder] = cached
        return cached[1]

    def _cached_report(self, folder: Path) -> Entry | None:
        signature = (_stat(folder), _stat(folder / "metrics.json"))
        cached = self._report_cache.get(folder)
        if cached is None or cached[0] != signature:
            document, _problem = _read_json(folder / "metrics.json", "metrics.json")
            report = None
            if document is not None and "sets" in document and "extractors" in document:
                name = self.relative(folder)
                report = _read_report(folder, entry_id("report", name), name, document)
            cached = (signature, report)
            self._report_cache[folder] = cached
        return cached[1]

    def run(self, run_id: str, rescan: bool = True) -> Entry:
        """The run with this id, 404 when there is none; ``rescan``: walk first, so the run is as it is now."""
        return self._find(run_id, "runs", "no such run", rescan)

    def report(self, report_id: str, rescan: bool = True) -> Entry:
        return self._find(report_id, "reports", "no such evaluation report", rescan)

    def _find(self, wanted: str, kind: str, missing: str, rescan: bool) -> Entry:
        if not ID_PATTERN.match(wanted):
            raise HTTPException(404, missing)
        if rescan or wanted not in getattr(self, kind):
            self.scan()
        entry = getattr(self, kind).get(wanted)
        if entry is None:
            raise HTTPException(404, missing)
        return entry

    def loss_series(self, entry: Entry) -> dict[str, Any] | None:
        """``losses.csv`` as chart series (cached on the file's time and size); ``None`` when the run has none."""
        path = entry.path / "losses.csv"
        if not _regular_file(path):
            return None
        signature = _stat(path)
        with self._lock:
            cached = self._losses_cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            series = read_loss_series(path)
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            series = {"error": f"losses.csv cannot be read: {one_line(exc, 300)}", "columns": [], "phases": []}
        with self._lock:
            self._losses_cache[path] = (signature, series)
            while len(self._losses_cache) > 8:
                self._losses_cache.popitem(last=False)
        return series


def downsample(points: list[list[float]], limit: int = MAX_SERIES_POINTS) -> list[list[float]]:
    """At most ``limit`` of ``points``, evenly spaced, the first and last kept; values are never altered."""
    if len(points) <= limit:
        return points
    last = len(points) - 1
    picks = sorted({round(i * last / (limit - 1)) for i in range(limit)})
    return [points[i] for i in picks]


def read_loss_series(path: Path, limit: int = MAX_SERIES_POINTS) -> dict[str, Any]:
    """The numeric columns of a ``losses.csv`` as ``[[step, value], ...]`` series grouped by phase.

    Empty cells (a column another phase logs) and non-finite values are left out; a column with any text that is
    not a number is not a loss and is dropped. Each series is thinned to ``limit`` points (:func:`downsample`).

    Args:
        path: The ``losses.csv`` file.
        limit: The most points a series keeps.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        table = _LossTable.from_header(next(reader, None))
        for row in reader:
            table.add_row(row)
    phases = [_phase_series(table, phase, limit) for phase in table.phases]
    return {"columns": [table.header[i] for i in table.numeric_columns()], "phases": phases,
            "downsampled": any(len(s["points"]) < s["total"] for p in phases for s in p["series"])}


@dataclass
class _LossTable:
    """What one pass over ``losses.csv`` gathers: per phase and column, the finite ``[step, value]`` points."""

    header: list[str]
    step_at: int
    phase_at: int | None
    value_columns: list[int] = field(init=False)
    phases: dict[str, dict[int, list[list[float]]]] = field(default_factory=dict)
    not_numbers: set[int] = field(default_factory=set)
    non_finite: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.value_columns = [i for i in range(len(self.header)) if i not in (self.step_at, self.phase_at)]

    @classmethod
    def from_header(cls, header: list[str] | None) -> _LossTable:
        if not header or "step" not in header:
            raise ValueError("no header with a 'step' column")
        return cls(header, header.index("step"), header.index("phase") if "phase" in header else None)

    def add_row(self, row: list[str]) -> None:
        if len(row) != len(self.header) or not row[self.step_at].strip().isdigit():
            return  # a row being written, or damage: skip it rather than fail the page
        step = int(row[self.step_at])
        phase = row[self.phase_at] if self.phase_at is not None else ""
        columns = self.phases.setdefault(phase, {})
        for i in self.value_columns:
            cell = row[i].strip()
            if cell:  # empty: a column another phase logs
                self._add_cell(phase, columns, i, step, cell)

    def _add_cell(self, phase: str, columns: dict[int, list[list[float]]], column: int, step: int, cell: str
                  ) -> None:
        try:
            value = float(cell)
        except ValueError:
            self.not_numbers.add(column)
            return
        if math.isfinite(value):
            columns.setdefault(column, []).append([step, value])
        else:
            self.non_finite[(phase, column)] = self.non_finite.get((phase, column), 0) + 1

    def numeric_columns(self) -> list[int]:
        """The value columns with no text that is not a number (those are notes, not losses)."""
        return [i for i in self.value_columns if i not in self.not_numbers]


def _phase_series(table: _LossTable, phase: str, limit: int) -> dict[str, Any]:
    """One phase's numeric series, each thinned to ``limit`` points, and the steps they span."""
    columns = table.phases[phase]
    series = [{"name": table.header[i], "points": downsample(points, limit), "total": len(points),
               "non_finite": table.non_finite.get((phase, i), 0)}
              for i in table.numeric_columns() if (points := columns.get(i))]
    steps = [p[0] for s in series for p in (s["points"][0], s["points"][-1])]
    return {"name": phase, "series": series, "steps": [min(steps), max(steps)] if steps else None}


# --- summaries ---------------------------------------------------------------------------------------------------


def _get(document: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value) else None


def report_headline(document: dict[str, Any]) -> list[dict[str, Any]]:
    """An evaluation's headline numbers: each metric of :data:`HEADLINE_METRICS` per feature space."""
    rows = [m for m in document.get("metrics") or [] if isinstance(m, dict) and m.get("name") in HEADLINE_METRICS]
    rows.sort(key=lambda m: (HEADLINE_METRICS.index(m["name"]), str(m.get("extractor"))))
    return [{"name": m["name"], "extractor": m.get("extractor"), "value": _number(m.get("value")),
             "interval": jsonable(m.get("interval")), "std": _number(m.get("std"))} for m in rows]


def _fids(document: dict[str, Any] | None, label: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    return [{"name": f"FID ({m['extractor']}{label})", "value": m["value"]}
            for m in report_headline(document) if m["name"] == "fid" and m["value"] is not None]


def run_headline(entry: Entry, linked_reports: list[Entry]) -> list[dict[str, Any]]:
    """A run's headline numbers: the best score kept during training, then the FIDs of its evaluation (recorded
    in its metrics.json, else the newest report that evaluated it)."""
    headline = []
    during = _get(entry.metrics, "training_evaluation")
    if isinstance(during, dict) and _number(during.get("best_value")) is not None:
        headline.append({"name": f"best {during.get('metric', 'score')} in training "
                                 f"(step {during.get('best_step')})", "value": _number(during["best_value"])})
    own = _fids(_get(entry.metrics, "evaluation"), "")
    if own:
        return headline + own
    for report in sorted(linked_reports, key=lambda r: r.modified, reverse=True):
        found = _fids(report.document, ", report")
        if found:
            return headline + found
    return headline


def _config_value(config: dict[str, Any] | None, *keys: str) -> Any:
    value = _get(config, *keys)
    return jsonable(value) if value is not None else None


def run_summary(entry: Entry, linked_reports: list[Entry]) -> dict[str, Any]:
    """One row of the runs list."""
    config = entry.config
    recorded = _get(entry.metrics, "training", "step")
    done = [s for s in (recorded if isinstance(recorded, int) else None, entry.last_logged_step) if s is not None]
    return {
        "id": entry.id,
        "name": entry.name,
        "title": _config_value(config, "name"),
        "recipe": _config_value(config, "recipe"),
        "data_source": _config_value(config, "data_info", "source") or _config_value(config, "data", "source"),
        "steps_done": max(done) if done else 0,
        "steps_planned": _config_value(config, "train", "steps"),
        "stopped_because": _config_value(entry.metrics, "training", "stopped_because"),
        "modified": _iso(entry.modified),
        "has_samples": any(f.step is not None for f in entry.files.values()),
        "headline": jsonable(run_headline(entry, linked_reports)),
        "reports": [r.id for r in linked_reports],
        "error": entry.error,
    }


def report_summary(report: Entry, run: Entry | None) -> dict[str, Any]:
    """One row of the evaluation reports list."""
    document = report.document or {}
    sets = document.get("sets") if isinstance(document.get("sets"), dict) else {}
    return {
        "id": report.id,
        "name": report.name,
        "run_id": run.id if run else None,
        "run_name": run.name if run else None,
        "fake_source": jsonable(_get(sets, "fake", "source")),
        "real_source": jsonable(_get(sets, "real", "source")),
        "n_fake": jsonable(_get(sets, "fake", "n")),
        "n_real": jsonable(_get(sets, "real", "n")),
        "modified": _iso(report.modified),
        "headline": report_headline(document),
        "files": [{"name": f.name, "file_id": f.file_id} for f in report.images()],
        "error": report.error,
    }


def report_detail(report: Entry, run: Entry | None) -> dict[str, Any]:
    """A report's summary with its sets, every metric, memorisation (without the pairs' indices), warnings and
    the Markdown report's text."""
    document = report.document or {}
    memorisation = {space: {k: v for k, v in values.items() if k != "closest_pairs"}
                    for space, values in (document.get("memorisation") or {}).items() if isinstance(values, dict)}
    text = None
    if _regular_file(report.path / "report.md"):
        try:
            text = (report.path / "report.md").read_text(encoding="utf-8", errors="replace")[:MAX_REPORT_TEXT]
        except OSError:
            text = None
    return {**report_summary(report, run), "sets": jsonable(document.get("sets")),
            "metrics": jsonable(document.get("metrics")), "memorisation": jsonable(memorisation),
            "warnings": jsonable(document.get("warnings")), "report_md": text}


def source_parts(source: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[\\/]+", source.strip()) if part not in ("", "."))


def link_reports(index: RunIndex) -> dict[str, Entry]:
    """Report id -> the run it evaluated: the run whose path ``sets.fake.source`` names (absolute, or relative to
    wherever evaluate ran: the run whose path relative to the root, root's name in front, ends the source's
    path longest; a tie links nothing)."""
    candidates = {run.id: (index.root.name, *Path(run.name).parts) if run.name != "." else (index.root.name,)
                  for run in index.runs.values()}
    by_path = {run.path: run for run in index.runs.values()}
    links = {}
    for report in index.reports.values():
        source = _get(report.document, "sets", "fake", "source")
        if not isinstance(source, str) or not source.strip():
            continue
        if os.path.isabs(source):
            run = by_path.get(Path(os.path.normpath(source)))
            if run is not None:
                links[report.id] = run
            continue
        parts = source_parts(source)
        scored = []
        for run_id, run_parts in candidates.items():
            relative_len = len(run_parts) - 1
            matched = _common_tail(parts, run_parts)
            if matched >= max(1, relative_len):
                scored.append((matched, run_id))
        scored.sort(reverse=True)
        if scored and (len(scored) == 1 or scored[0][0] > scored[1][0]):
            links[report.id] = index.runs[scored[0][1]]
    return links


def _common_tail(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def metrics_table(metrics: Any, prefix: str = "") -> list[list[Any]]:
    """A run's metrics.json as ``[key path, value]`` rows of scalars, skipping descriptions of feature extractors
    and per-image indices (long, and shown elsewhere)."""
    rows: list[list[Any]] = []
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            if key in ("extractors", "extractor", "closest_pairs", "standardizer", "architecture"):
                continue
            rows += metrics_table(value, f"{prefix}{key}.")
    elif isinstance(metrics, list):
        if all(isinstance(m, dict) and "name" in m and "value" in m for m in metrics) and metrics:
            for m in metrics:  # evaluation metric rows: "fid (domain)" reads better than "metrics.0.value"
                label = f"{m['name']} ({m['extractor']})" if m.get("extractor") else str(m["name"])
                rows.append([f"{prefix}{label}", jsonable(m["value"])])
        elif all(not isinstance(m, (dict, list)) for m in metrics):
            rows.append([prefix.rstrip("."), jsonable(metrics)])
    else:
        rows.append([prefix.rstrip("."), jsonable(metrics)])
    return rows


# --- serving -----------------------------------------------------------------------------------------------------


def get_index(app: FastAPI) -> RunIndex:
    """The app's run index (made on first use; the latent explorer shares it)."""
    index = getattr(app.state, "run_index", None)
    if index is None:
        index = RunIndex(app.state.settings.root)
        app.state.run_index = index
    return index


def inside_root(path: Path, root: Path) -> Path | None:
    """``path`` with links resolved, when it is still a file inside ``root``; else ``None``."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) and real.is_file() else None


def serve_file(entry: Entry, wanted: str, root: Path) -> Response:
    if not ID_PATTERN.match(wanted) or wanted not in entry.files:
        raise HTTPException(404, "no such file")
    real = inside_root(entry.files[wanted].path, root)
    # The listed picture may since have become a link to another kind of file (data, say): serve pictures only.
    media_type = IMAGE_TYPES.get(real.suffix.lower()) if real is not None else None
    if real is None or media_type is None:
        raise HTTPException(404, "no such file")
    try:
        data = real.read_bytes()
    except OSError:
        raise HTTPException(404, "no such file") from None
    return Response(data, media_type=media_type)


def _reports_of(links: dict[str, Entry], index: RunIndex, run: Entry) -> list[Entry]:
    return [index.reports[r] for r, linked in links.items() if linked.id == run.id and r in index.reports]


def run_detail(index: RunIndex, entry: Entry) -> dict[str, Any]:
    """Everything the run's page shows."""
    from synthmed.web.latent import latent_run  # the explorer's test of a run, without loading it

    links = link_reports(index)
    reports = _reports_of(links, index, entry)
    return {
        **run_summary(entry, reports),
        "path": str(entry.path),
        "config": jsonable(entry.config),
        "metrics": jsonable(entry.metrics),
        "metrics_table": metrics_table(entry.metrics) if entry.metrics else [],
        "losses": index.loss_series(entry),
        "samples": [{"step": f.step, "file_id": f.file_id} for f in entry.samples()],
        "images": [{"name": f.name, "file_id": f.file_id} for f in entry.images()],
        "evaluations": [report_summary(r, entry) for r in reports],
        "explorable": latent_run(entry) is not None,
    }


def install(app: FastAPI) -> None:
    """Add the runs page (``/``, a run's detail at ``/?run=ID``) and the ``/api/runs`` routes to ``app``."""
    index = get_index(app)
    router = APIRouter(prefix="/api/runs", dependencies=[Depends(require_organiser)])

    @router.get("")
    def list_runs() -> JSONResponse:
        index.scan()
        links = link_reports(index)
        rows = [run_summary(run, _reports_of(links, index, run)) for run in index.runs.values()]
        return JSONResponse(sorted(rows, key=lambda r: r["name"]))

    @router.get("/reports")
    def list_reports() -> JSONResponse:
        index.scan()
        links = link_reports(index)
        rows = [report_summary(r, links.get(r.id)) for r in index.reports.values()]
        return JSONResponse(sorted(rows, key=lambda r: r["name"]))

    @router.get("/reports/{report_id}")
    def one_report(report_id: str) -> JSONResponse:
        report = index.report(report_id)
        return JSONResponse(report_detail(report, link_reports(index).get(report.id)))

    @router.get("/reports/{report_id}/files/{wanted}")
    def report_file(report_id: str, wanted: str) -> Response:
        return serve_file(index.report(report_id, rescan=False), wanted, index.root)

    @router.get("/{run_id}")
    def one_run(run_id: str) -> JSONResponse:
        return JSONResponse(run_detail(index, index.run(run_id)))

    @router.get("/{run_id}/files/{wanted}")
    def run_file(run_id: str, wanted: str) -> Response:
        # No walk per picture (the sample slider asks for many): only when the id is not known yet.
        return serve_file(index.run(run_id, rescan=False), wanted, index.root)

    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        return organiser_page(request, "runs.html", "synthmed · runs")
