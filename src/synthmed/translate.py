"""``synthmed translate``: a trained translation run (pix2pix, CycleGAN) applied to files, folders or its own split.

Files are read with the intensity mapping the run recorded for its input side (``DataInfo.intensity``: a fixed
8/16-bit range, a DICOM window in HU, per-volume percentiles, ...; runs trained with ``normalize="patient"`` /
``"image"`` normalise each file, a volume as a whole, by its own percentiles, see :func:`read_jobs`), translated at
their own size (tiles of the training size with blended overlaps when larger: the networks are fully
convolutional), and written with the inverse of the output side's mapping, in the input's format, bit depth and
geometry (the per-file range of per-image mappings is the input file's). One output per input, with the input's
file stem.

``compare`` (a folder of targets matched to the inputs by file name, as paired training folders are matched)
adds input | output | target pictures and paired metrics in the output's units: MAE, PSNR, SSIM, and for mask
outputs Dice/F1, sensitivity, specificity and AUC inside an optional field-of-view folder. ``split="test"``
translates the held-out split of the run's own paired data and scores it the same way.

Everything is checked before anything is written, and the output folder appears whole or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.data.intensity import (
    ImageFile,
    IntensityMapping,
    mapping_from_info,
    normalize_files,
    read_image_file,
    write_image_file,
)
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.io import empty_output_folder, write_folder_atomically
from synthmed.metrics import paired as pm
from synthmed.ops.tiling import sliding_window
from synthmed.recipes.base import TranslationRecipe

INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm", ".dicom", ".nii", ".nii.gz",
                  ".npy")
COMPARISON_ROWS = 8  # files drawn in comparison.png (every file gets its own picture under compare/)


@dataclass
class TranslationResult:
    """What :func:`translate_files` / :func:`translate_split` wrote.

    Args:
        out: the output folder.
        outputs: one written file per input.
        metrics: aggregate paired metrics (with ``compare`` or a split), else empty.
        per_image: per-input metrics rows.
    """

    out: Path
    outputs: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ mappings


def _fallback(is_mask: bool) -> IntensityMapping:
    """Runs saved before mappings were recorded read 8-bit data (every source they could train on did)."""
    return IntensityMapping(kind="mask") if is_mask else IntensityMapping(kind="fixed", low=0.0, high=255.0)


def side_mappings(recipe: TranslationRecipe, direction: str) -> tuple[IntensityMapping, IntensityMapping]:
    """The (input, output) intensity mappings of ``direction``: AtoB reads A's and writes B's, BtoA the reverse."""
    info = recipe.data_info
    a = mapping_from_info(info) or _fallback(False)
    b = mapping_from_info(info, target=True) or _fallback(info.target_is_mask)
    return (a, b) if recipe.check_direction(direction) == "AtoB" else (b, a)


# --------------------------------------------------------------------------------------------- translating


def translate_images(recipe: TranslationRecipe, images: torch.Tensor, direction: str = "AtoB", *,
                     tile: int | None = None, overlap: int | None = None, batch_size: int = 4) -> torch.Tensor:
    """Translate (N, C, H, W) images in [-1, 1] of any size: whole when they fit the training size, else tiles.

    Args:
        recipe: a loaded translation recipe.
        images: inputs in [-1, 1] (CPU or the recipe's device).
        direction: ``AtoB`` or ``BtoA`` (CycleGAN).
        tile: tile side (default: the training size or crop).
        overlap: overlap of neighbouring tiles, also the blending ramp (default: a quarter of the tile).
        batch_size: tiles per forward pass.

    Returns:
        (N, C', H, W) on the CPU: images in [-1, 1], or mask probabilities in [0, 1].
    """
    recipe.check_direction(direction)
    tile = int(tile or recipe.training_size)
    overlap = tile // 4 if overlap is None else int(overlap)
    multiple = recipe.size_multiple(direction)
    if tile % multiple:
        raise ConfigError(f"--tile {tile} must be a multiple of {multiple} (the generator's down-sampling)")

    def forward(x: torch.Tensor) -> torch.Tensor:
        return recipe.translate(x.to(recipe.device), direction).float()

    return sliding_window(forward, images.float(), tile, overlap, multiple=multiple, batch_size=batch_size).cpu()


def _unit_output(output: torch.Tensor, mapping: IntensityMapping, like: ImageFile, is_mask: bool) -> np.ndarray:
    """The network's output in the output side's units; per-image ranges are the input file's."""
    x = output.numpy().astype(np.float64)
    if is_mask:
        return x  # a probability in [0, 1]
    if mapping.normalize != "none" and like.geometry.get("ranges"):
        return _inverse_by_slice(x, mapping, np.asarray(like.geometry["ranges"], dtype=np.float64))
    if mapping.data_range is None:
        return mapping.inverse(x, like.low, like.high)
    # A MONOCHROME1 input was read with its ends swapped (low > high): its output is mirrored back the same way.
    low, high = (mapping.high, mapping.low) if like.low > like.high else (mapping.low, mapping.high)
    return mapping.inverse(x, low, high)


def _inverse_by_slice(x: np.ndarray, mapping: IntensityMapping, ranges: np.ndarray) -> np.ndarray:
    """Normalised outputs (S, C, H, W) in units through the input's range of each slice and channel (S, C', 2);
    an output channel the input lacks takes the input's first channel's range."""
    out = np.empty_like(x)
    for s in range(x.shape[0]):
        for c in range(x.shape[1]):
            low, high = ranges[min(s, len(ranges) - 1), c if c < ranges.shape[1] else 0]
            out[s, c] = mapping.inverse(x[s, c], low, high)
    return out


# ------------------------------------------------------------------------------------------------- inputs


def file_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def input_files(source: str | Path, task: str = "translate") -> list[Path]:
    """The files to ``task`` (translate, segment, score): ``source`` itself, or the image / DICOM / NIfTI / npy files
    under a folder."""
    from synthmed.data.dicom import looks_like_dicom
    from synthmed.data.folder import list_files

    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(path, "no such file or folder")
    files = [p for p in list_files(path) if p.name.lower().endswith(INPUT_SUFFIXES) or
             (not p.suffix and looks_like_dicom(p))]
    if not files:
        raise DataError(path, f"contains no images to {task} (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy)")
    stems: dict[str, Path] = {}
    for f in files:
        key = str(f.relative_to(path).with_name(file_stem(f)))
        if key in stems:
            raise DataError(path, f"{stems[key].name} and {f.name} have the same stem; outputs are named by stem")
        stems[key] = f
    return files


def targets_for(files: list[Path], root: Path, compare: str | Path, what: str, *,
                any_format: bool | None = None) -> list[Path]:
    """The file of ``compare`` matching each input (paired training folders' rules: exact name, name without
    the shared prefix/suffix, leading ID); a stem present on one side only is a one-line error.

    Args:
        files: the inputs.
        root: the input file or folder they came from.
        compare: the folder to match them in.
        what: the folder's files in words, plural (``"targets"``), for messages.
        any_format: the folder may hold every input format (NIfTI, DICOM, npy), not only pictures
            [default: for targets only; field-of-view masks are pictures].
    """
    from synthmed.data.paired import _image_files, _pair_files

    folder = Path(compare).expanduser()
    if not folder.is_dir():
        raise DataError(folder, f"no such folder (the {what} to compare with)")
    any_format = what == "targets" if any_format is None else any_format
    others = input_files(folder) if any_format else _image_files(folder)
    if root.is_file():
        root = root.parent
    return _pair_files(files, root, others, folder, None, what[:-1])


# --------------------------------------------------------------------------------------------------- metrics


def _image_metrics(output: np.ndarray, target: np.ndarray, data_range: float, mask: np.ndarray | None,
                   is_mask: bool) -> dict[str, float]:
    if is_mask:
        scores = pm.pixel_scores(output, target, mask=mask)
        return {k: float(v) for k, v in scores.items()}
    found = {"mae": pm.mae(output, target, mask=mask), "psnr": pm.psnr(output, target, data_range, mask=mask)}
    found["ssim"] = pm.ssim(output, target, data_range)
    return found


def _aggregate(rows: list[dict[str, Any]], pooled: dict[str, float]) -> dict[str, Any]:
    """Mean, standard deviation and count of every per-image metric, plus pooled pixel scores."""
    names = [k for k in rows[0] if k not in ("file", "target")] if rows else []
    summary: dict[str, Any] = {"images": len(rows)}
    for name in names:
        values = np.asarray([r[name] for r in rows], dtype=np.float64)
        finite = values[np.isfinite(values)]
        summary[name] = {"mean": float(finite.mean()) if finite.size else float("nan"),
                         "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0, "n": int(finite.size)}
    summary.update({f"pooled_{k}": float(v) for k, v in pooled.items()})
    return summary


# --------------------------------------------------------------------------------------------------- writing


def _comparison_strip(columns: list[torch.Tensor]) -> torch.Tensor:
    """One row image: the columns (each (C, H, W) in [-1, 1]) side by side, grey broadcast to RGB."""
    channels = max(int(c.shape[0]) for c in columns)
    return torch.cat([c.expand(channels, -1, -1) if c.shape[0] == 1 else c for c in columns], dim=-1)


def _save_picture(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    from synthmed.data.transforms import to_uint8

    pixels = to_uint8(image[None])[0]
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _preview_scale(x: torch.Tensor, is_mask: bool) -> torch.Tensor:
    return x * 2.0 - 1.0 if is_mask else x


def _write_report(staging: Path, result: TranslationResult, header: dict[str, Any]) -> None:
    document = {**header, "metrics": result.metrics, "per_image": result.per_image}
    (staging / "metrics.json").write_text(json.dumps(document, indent=2, allow_nan=True) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------ top level


@dataclass
class Job:
    """One input file, read and checked, with its target (and field of view) when comparing."""

    file: ImageFile
    target: ImageFile | None = None
    fov: np.ndarray | None = None


def read_jobs(recipe: TranslationRecipe, files: list[Path], root: Path, direction: str,
              compare: str | Path | None, fov: str | Path | None, *, normalize: bool = True) -> Iterator[Job]:
    """Read and check every input (and target) before anything is written.

    A run trained with the data option ``normalize="patient"`` or ``"image"`` has each input normalised as its
    training images were (:func:`~synthmed.data.intensity.normalize_files`): a 2-D file is one image (a patient's
    slices given as separate files are normalised one by one), a NIfTI volume or multi-frame DICOM one patient
    (``"image"``: slice by slice). ``normalize=False`` leaves that to the caller (grouping files into patients).
    """
    in_map, out_map = side_mappings(recipe, direction)
    channels_in = recipe.input_channels(direction)
    targets = targets_for(files, root, compare, "targets") if compare is not None else [None] * len(files)
    fovs = targets_for(files, root, fov, "field-of-view masks") if fov is not None else [None] * len(files)
    out_is_mask = recipe.output_is_mask(direction)
    for path, target_path, fov_path in zip(files, targets, fovs, strict=True):
        file = read_image_file(path, in_map, channels=channels_in)
        if normalize:
            normalize_files([file], in_map)
        job = Job(file)
        if target_path is not None:
            job.target = read_image_file(target_path, out_map, channels=recipe.output_channels(direction))
            check_same_size(file, job.target)
        if fov_path is not None:
            job.fov = read_fov(fov_path, file)
        if out_is_mask and job.target is not None:
            job.target.values = (job.target.images.numpy() > 0).astype(np.float64)
        yield job


def read_fov(path: Path, like: ImageFile) -> np.ndarray:
    """The field-of-view mask ``path`` of the input ``like``: (S, 1, H, W) float64 {0, 1}, checked to be its size."""
    mask = read_image_file(path, IntensityMapping(kind="mask"), channels=1)
    check_same_size(like, mask)
    return (mask.images.numpy() > 0).astype(np.float64)


def check_same_size(file: ImageFile, other: ImageFile) -> None:
    a, b = tuple(file.images.shape[-2:]), tuple(other.images.shape[-2:])
    if a != b or file.images.shape[0] != other.images.shape[0]:
        raise DataError(other.path, f"is {b[1]}x{b[0]} px ({other.images.shape[0]} slice(s)) but its input "
                                    f"{file.path.name} is {a[1]}x{a[0]} px ({file.images.shape[0]}); a pair must "
                                    "match in size")


def translate_files(recipe: TranslationRecipe, source: str | Path, out: str | Path, *, direction: str = "AtoB",
                    compare: str | Path | None = None, fov: str | Path | None = None, tile: int | None = None,
                    overlap: int | None = None, batch_size: int = 4, training_side: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> TranslationResult:
    """Translate a file or a folder; see the module docstring.

    Args:
        recipe: a loaded translation recipe (``synthmed.load(run).recipe``).
        source: a file or a folder of files (PNG, TIFF, JPEG, BMP, GIF, DICOM, NIfTI, npy).
        out: a new or empty folder; outputs keep the inputs' stems (and sub-folders).
        direction: ``AtoB`` or ``BtoA`` (CycleGAN only).
        compare: a folder of targets matched to the inputs by name: pictures and paired metrics.
        fov: with ``compare``, a folder of field-of-view masks: metrics count pixels inside them only.
        tile: tile side (default: the training size or crop).
        overlap: tile overlap (default: a quarter of the tile).
        batch_size: tiles (or slices) per forward pass.
        training_side: translate at the training scale: the run resized its (centre-cropped, square) images to
            this side, so each input is resized by ``training_side / min(H, W)`` before translation and its output
            resized back to the input's size. ``None``: inputs as they are (the run trained at native scale).
        progress: called with (done, total) after each file.

    Raises:
        ConfigError: a direction the run cannot translate, a bad tile.
        DataError: unreadable inputs, a channel count the run was not trained on, unmatched or differently sized
            targets: one line naming the file; nothing is written.
    """
    out = empty_output_folder(out)
    if fov is not None and compare is None:
        raise ConfigError("--fov restricts the metrics of --compare; give --compare TARGET_DIR too")
    recipe.check_direction(direction)
    root = Path(source).expanduser()
    files = input_files(root)
    jobs = list(read_jobs(recipe, files, root, direction, compare, fov))  # every check before any write
    _, out_map = side_mappings(recipe, direction)
    out_is_mask = recipe.output_is_mask(direction)
    result = TranslationResult(out=out)
    base = root if root.is_dir() else root.parent

    def write(staging: Path) -> None:
        pictures, pooled_out, pooled_target, pooled_fov = [], [], [], []
        for done, job in enumerate(jobs, 1):
            output = _at_scale(job.file.images, training_side, lambda x: translate_images(
                recipe, x, direction, tile=tile, overlap=overlap, batch_size=batch_size))
            units = _unit_output(output, out_map, job.file, out_is_mask)
            relative = job.file.path.relative_to(base).with_name(file_stem(job.file.path))
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            like, dtype = _output_like(job.file, out_map, out_is_mask)
            written = write_image_file(staging / relative, units, like, dtype=dtype, is_mask_probability=out_is_mask)
            result.outputs.append(out / written.relative_to(staging))
            if job.target is not None:
                row = _score(job, units, out_map, out_is_mask)
                result.per_image.append({"file": str(relative), "target": job.target.path.name, **row})
                strip = _comparison_strip([job.file.images[0], _preview_scale(output[0], out_is_mask),
                                           job.target.images[0]])
                (staging / "compare").mkdir(exist_ok=True)
                _save_picture(staging / "compare" / f"{relative.name}.png", strip)
                if len(pictures) < COMPARISON_ROWS:
                    pictures.append(strip)
                if out_is_mask:
                    pooled_out.append(units)
                    pooled_target.append(job.target.values)
                    pooled_fov.append(job.fov if job.fov is not None else np.ones_like(units[:, :1]))
            if progress is not None:
                progress(done, len(jobs))
        if result.per_image:
            pooled = {}
            if out_is_mask:
                pooled = pm.pixel_scores(_flat(pooled_out), _flat(pooled_target), mask=_flat(pooled_fov))
            result.metrics = _aggregate([{k: v for k, v in r.items()} for r in result.per_image], pooled)
            _save_comparison(staging / "comparison.png", pictures)
            header = _header(recipe, direction, out_map, out_is_mask, compare, fov, tile, overlap)
            _write_report(staging, result, {**header, "training_side": training_side})

    write_folder_atomically(out, write)
    return result


def _output_like(file: ImageFile, out_map: IntensityMapping, out_is_mask: bool) -> tuple[ImageFile, str | None]:
    """Where the output's unit differs from the input's (HU out of an MR picture, MR out of a CT DICOM), the
    input's storage cannot hold it (negative HU in a uint16 PNG, a sidecar decoding to HU): a float32 TIFF in the
    output's units instead (NIfTI inputs: a float32 NIfTI). Otherwise the input's format and bit depth."""
    if out_is_mask or (out_map.unit or "") == (file.unit or ""):
        return file, None
    if file.format in ("nifti", "npy"):
        return file, "float32"
    return replace(file, format="tiff"), "float32"


def _at_scale(images: torch.Tensor, training_side: int | None,
              translate: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``translate(images)`` at the scale the run trained at: the shorter side resized to ``training_side`` (as the
    loaders' centre crop + resize did), the output resized back to the input's size."""
    import torch.nn.functional as F

    height, width = int(images.shape[-2]), int(images.shape[-1])
    if training_side is None or training_side == min(height, width):
        return translate(images)
    factor = training_side / min(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    scaled = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=factor < 1)
    output = translate(scaled)
    return F.interpolate(output, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=factor > 1)


def _flat(parts: list[np.ndarray]) -> np.ndarray:
    """Images of different sizes pooled as one (1, C, 1, P) array of pixels (pixel scores pool anyway)."""
    return np.concatenate([p.reshape(p.shape[1], -1) for p in parts], axis=1)[None, :, None, :]


def _score(job: Job, units: np.ndarray, out_map: IntensityMapping, out_is_mask: bool) -> dict[str, float]:
    assert job.target is not None and job.target.values is not None
    data_range = out_map.data_range or float(abs(job.target.high - job.target.low)) or 1.0
    return _image_metrics(units, job.target.values, data_range, job.fov, out_is_mask)


def _save_comparison(path: Path, strips: list[torch.Tensor]) -> None:
    """Up to :data:`COMPARISON_ROWS` rows input | output | target, each row scaled to the first's width."""
    import torch.nn.functional as F

    if not strips:
        return
    width = min(int(strips[0].shape[-1]), 1536)
    rows = []
    for s in strips:
        height = max(1, round(s.shape[-2] * width / s.shape[-1]))
        rows.append(F.interpolate(s[None], size=(height, width), mode="area")[0])
    channels = max(int(r.shape[0]) for r in rows)
    _save_picture(path, torch.cat([r.expand(channels, -1, -1) for r in rows], dim=-2))


def _header(recipe: TranslationRecipe, direction: str, out_map: IntensityMapping, out_is_mask: bool,
            compare: Any, fov: Any, tile: int | None, overlap: int | None) -> dict[str, Any]:
    units = "probability" if out_is_mask else (out_map.unit or f"{out_map.dtype} grey levels")
    method = ("pixel scores pooled over every image inside the field of view (threshold 0.5); per-image means"
              if out_is_mask else "MAE and PSNR in output units, SSIM (Gaussian 11x11, sigma 1.5); per-image means")
    return {"recipe": recipe.name, "direction": direction, "units": units, "method": method,
            "compare": None if compare is None else str(compare), "fov": None if fov is None else str(fov),
            "tile": int(tile or recipe.training_size), "overlap": overlap if overlap is not None else
            int(tile or recipe.training_size) // 4, "output_mapping": out_map.to_dict()}


# ------------------------------------------------------------------------------------------ the run's split


def translate_split(recipe: TranslationRecipe, run_config: Any, out: str | Path, *, split: str = "test",
                    direction: str = "AtoB", batch_size: int = 8, progress: Callable[[int, int], None] | None = None
                    ) -> TranslationResult:
    """Translate the held-out ``split`` of the run's own paired data and score outputs against targets.

    For runs on a channel pair of one source (``--pair A:B``, paired or unpaired), on ``image:mask`` or on
    paired folders trained on a train split. Writes ``outputs.npz`` / ``targets.npz`` (images in [-1, 1], for
    ``synthmed evaluate --real targets.npz --fake outputs.npz``), ``comparison.png`` and ``metrics.json``.

    Raises:
        ConfigError: the run trained on split ``all`` (nothing is held out), or its data have no pairs.
    """
    data = run_config.data
    held_out = load_held_out(data, split)
    tensors = held_out.tensors
    a, b = tensors["image"], tensors["target"]
    if recipe.check_direction(direction) == "BtoA":
        a, b = (b * 2.0 - 1.0 if recipe.data_info.target_is_mask else b), a
    out = empty_output_folder(out)
    in_map, out_map = side_mappings(recipe, direction)
    out_is_mask = recipe.output_is_mask(direction)
    result = TranslationResult(out=out)

    def write(staging: Path) -> None:
        outputs = []
        for start in range(0, a.shape[0], batch_size):
            outputs.append(translate_images(recipe, a[start:start + batch_size], direction))
            if progress is not None:
                progress(min(a.shape[0], start + batch_size), a.shape[0])
        output = torch.cat(outputs)
        fov = tensors.get("mask")
        if out_is_mask:
            result.per_image = [{"file": f"{split}[{i}]", **{k: float(v) for k, v in pm.pixel_scores(
                output[i:i + 1], b[i:i + 1], mask=None if fov is None else fov[i:i + 1]).items()}}
                for i in range(output.shape[0])]
            pooled = pm.pixel_scores(output, b, mask=fov)
        else:
            if out_map.data_range is None:
                raise ConfigError(f"the output side's intensity mapping ({out_map.kind}) is per image, so the "
                                  "split's values in units are unknown; score files with --compare instead")
            units_out, units_b = out_map.inverse(output.numpy()), out_map.inverse(b.numpy())
            result.per_image = [{"file": f"{split}[{i}]", **_image_metrics(
                units_out[i:i + 1], units_b[i:i + 1], out_map.data_range, None, False)}
                for i in range(output.shape[0])]
            pooled = {}
        result.metrics = _aggregate(result.per_image, pooled)
        np.savez_compressed(staging / "outputs.npz", images=_preview_scale(output, out_is_mask).numpy())
        np.savez_compressed(staging / "targets.npz", images=_preview_scale(b, out_is_mask).numpy())
        strips = [_comparison_strip([a[i], _preview_scale(output[i], out_is_mask), _preview_scale(b[i], out_is_mask)])
                  for i in spread_indices(a.shape[0], COMPARISON_ROWS)]
        _save_comparison(staging / "comparison.png", strips)
        header = _header(recipe, direction, out_map, out_is_mask, None, None, None, None)
        header.update(split=split, source=str(data.source), patients=_patients(held_out),
                      input_mapping=in_map.to_dict())
        _write_report(staging, result, header)

    write_folder_atomically(out, write)
    return result


def load_held_out(data: Any, split: str) -> Any:
    """The held-out ``split`` of a run's paired data, read as the run read its training split.

    Args:
        data: the run's data configuration (``RunConfig.data``).
        split: ``test`` or ``val``.

    Raises:
        ConfigError: the run trained on split ``all`` (nothing is held out), or its data have no pairs.
    """
    from synthmed.data import load_training_set

    if data.split == "all":
        raise ConfigError(f"the run trained on split 'all', so its data hold nothing out; give held-out files "
                          f"as INPUT --compare TARGET_DIR instead of --split {split}")
    if data.pair is None and (data.kind == "unpaired" or data.target is None):
        raise ConfigError("the run's data have no pairs (two unpaired sources); give held-out files as "
                          "INPUT --compare TARGET_DIR")
    options = data.loader_options()
    options.update(kind="paired", split=split)
    return load_training_set(data.source, **options)


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (a picture of the whole split, not its first slices); all of
    them when ``n <= k``."""
    k = min(n, k)
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


def _patients(data: Any) -> int | None:
    patients = getattr(data, "patients", None)
    return None if patients is None else len(set(np.asarray(patients).tolist()))


def check_translation_run(recipe: Any, run_dir: Path) -> TranslationRecipe:
    """The run's recipe if it translates images; a one-line error naming the run otherwise."""
    if not isinstance(recipe, TranslationRecipe):
        raise SynthmedError(f"{run_dir}: recipe {getattr(recipe, 'name', '?')!r} does not translate images; "
                            "train --recipe pix2pix or --recipe cyclegan")
    return recipe
