"""How stored values became model values in [-1, 1], and back: intensity round trips for image translation.

Every loader records in ``DataInfo.intensity`` (and ``target_intensity`` for paired / unpaired targets) an
:class:`IntensityMapping` as a plain dict: which range of stored values was mapped linearly onto [-1, 1]
(``x = 2 (v - low) / (high - low) - 1``, clipped), in which units, from which stored dtype. A translation tool
(pix2pix, CycleGAN) reads a new file with :func:`read_image_file` exactly as the training data were read, and
writes the model's output back with :func:`write_image_file` in the file's units, bit depth and geometry.

Kinds of mapping (:data:`KINDS`):

* ``fixed``: one ``low``..``high`` for every image: 8-bit 0..255; 16-bit 0..65535 or the folder's 0..max
  (12-bit data); an npz's value range; a DICOM window given by the user (the DICOM LINEAR limits actually
  applied: ``[c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2]``); a stated ``intensity_range``.
* ``image_range``: each image's (a DICOM series') own min..max; float images within [0, 1] keep 0..1, as the
  image-folder loader reads them.
* ``volume_percentiles``: each NIfTI volume's ``percentiles``.
* ``file_window``: each DICOM file's own first WindowCenter / WindowWidth (files without one: their min..max).
* ``mask``: {0, 1} masks (``x = 2 m - 1``); written back as 0 / 255 8-bit images.

``normalize`` (the data option of :mod:`synthmed.data.normalize`) composes with any kind but ``mask``:
``"patient"`` / ``"image"`` rescale the kind's [-1, 1] values per patient / per image, clipping each channel to
its ``normalize_percentiles`` (1st, 99th) and mapping them onto [-1, 1]. The kind is linear, so this is again
``x = 2 (v - low) / (high - low) - 1`` with a per-file range in stored values: :func:`normalize_files` applies it
to files read by :func:`read_image_file` and sets their ``low`` / ``high`` (per slice and channel in
``geometry["ranges"]``), so :meth:`IntensityMapping.inverse` needs no special case and ``data_range`` is ``None``.

Per-image kinds resolve to a file's own ``low`` / ``high`` when it is read (:attr:`ImageFile.low`); always
pass those to :meth:`IntensityMapping.inverse`. A MONOCHROME1 DICOM (white = low values) is inverted as the
loader inverts it by giving its file ``low > high`` (the same linear map, mirrored), so the inverse needs no
special case. Values outside ``low``..``high`` are clipped by the forward map: the round trip returns them at
the range's edges (a CT window of 40 / 400 keeps -160..239 HU).
"""

from __future__ import annotations

import gzip
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmed.errors import ConfigError, DataError, one_line

__all__ = [
    "KINDS",
    "ImageFile",
    "IntensityMapping",
    "check_intensity_range",
    "mapping_from_info",
    "normalize_files",
    "read_image_file",
    "write_image_file",
]

KINDS = ("fixed", "image_range", "volume_percentiles", "file_window", "mask")
PER_IMAGE_KINDS = ("image_range", "volume_percentiles", "file_window")
FIELDS = ("kind", "low", "high", "percentiles", "dtype", "unit", "normalize", "normalize_percentiles")
PICTURE_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff", ".bmp": "bmp",
                   ".gif": "gif"}
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".dcm", ".dicom", ".npy", ".json", *PICTURE_FORMATS)


@dataclass(frozen=True)
class IntensityMapping:
    """How stored values v became x in [-1, 1]: ``x = 2 (v - low) / (high - low) - 1``, clipped.

    Args:
        kind: one of :data:`KINDS` (see the module docstring).
        low: the bottom of the fixed range (kind ``fixed``), in ``unit``-s.
        high: the top of the fixed range (kind ``fixed``), in ``unit``-s.
        percentiles: the volume percentiles of kind ``volume_percentiles``.
        dtype: how the source stores values (``"uint8"``, ``"uint16"``, ``"int16"``, ``"float32"`` ...), the
            default dtype outputs are written in.
        unit: ``"HU"`` for CT after rescale slope / intercept, ``""`` otherwise.
        normalize: ``"none"``, or ``"patient"`` / ``"image"``: the kind's values were then rescaled per patient /
            per image (and channel) by their own ``normalize_percentiles`` (:mod:`synthmed.data.normalize`).
        normalize_percentiles: the low and high percentile of ``normalize``.
    """

    kind: str = "fixed"
    low: float = 0.0
    high: float = 255.0
    percentiles: tuple[float, float] = (0.5, 99.5)
    dtype: str = "uint8"
    unit: str = ""
    normalize: str = "none"
    normalize_percentiles: tuple[float, float] = (1.0, 99.0)

    def __post_init__(self) -> None:
        from synthmed.data.normalize import check_normalize

        if self.kind not in KINDS:
            raise ConfigError(f"unknown intensity mapping kind {self.kind!r}; kinds: {', '.join(KINDS)}")
        check_normalize(self.normalize)
        object.__setattr__(self, "normalize_percentiles", tuple(float(p) for p in self.normalize_percentiles))
        # Plain floats and a tuple, whatever JSON / YAML handed in, so mappings compare and serialise alike.
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``percentiles`` as a list), as ``DataInfo.intensity`` holds it; the ``normalize`` fields
        only when it normalises, so mappings without it read as before."""
        data = asdict(self)
        data["percentiles"] = list(self.percentiles)
        data["normalize_percentiles"] = list(self.normalize_percentiles)
        if self.normalize == "none":
            del data["normalize"], data["normalize_percentiles"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IntensityMapping:
        """The mapping of :meth:`to_dict`; missing keys take their defaults, unknown keys are ignored.

        Args:
            data: a dict as written by :meth:`to_dict` (e.g. ``DataInfo.intensity``).
        """
        known = {name: data[name] for name in FIELDS if name in data}
        return cls(**known)

    @property
    def data_range(self) -> float | None:
        """``high - low`` of a fixed range (1 for masks): the data range of PSNR / SSIM in units; ``None`` for
        per-image kinds and normalised mappings, whose range differs from image to image."""
        if self.kind == "mask":
            return 1.0
        return self.high - self.low if self.kind == "fixed" and self.normalize == "none" else None

    def _limits(self, low: float | None, high: float | None) -> tuple[float, float]:
        if self.kind == "mask":
            return (0.0, 1.0) if low is None or high is None else (float(low), float(high))
        if low is None or high is None:
            if self.kind != "fixed":
                raise ConfigError(f"intensity mapping {self.kind!r} is per image: pass that image's low and high "
                                  "(ImageFile.low / .high from read_image_file)")
            return self.low, self.high
        return float(low), float(high)

    def forward(self, values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
        """Stored values (in units) -> float32 in [-1, 1], as the loaders compute them.

        Args:
            values: values in ``unit``-s, any shape.
            low: this image's range bottom; required for per-image kinds, overrides ``self.low`` otherwise.
            high: this image's range top (``low > high`` mirrors the map: MONOCHROME1).
        """
        values = np.asarray(values)
        if self.kind == "mask":
            return np.where(values > 0, np.float32(1.0), np.float32(-1.0)).astype(np.float32)
        lo, hi = self._limits(low, high)
        span = hi - lo if hi != lo else 1.0
        # float32 arithmetic as transforms.normalize does it, so a file reads exactly as its training images did.
        out = (values.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(2.0 / span) - np.float32(1.0)
        return np.clip(out, -1.0, 1.0, out=out)

    def inverse(self, unit_values: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
        """Model values in [-1, 1] -> float64 values in units (masks: probabilities in 0..1).

        Args:
            unit_values: model values (e.g. a generator's tanh output), any shape; clipped to [-1, 1] first.
            low: this image's range bottom, as for :meth:`forward`.
            high: this image's range top.
        """
        x = np.clip(np.asarray(unit_values, dtype=np.float64), -1.0, 1.0)
        lo, hi = self._limits(low, high)
        span = hi - lo if hi != lo else 1.0
        return lo + (x + 1.0) * (span / 2.0)


def mapping_from_info(info: Any, target: bool = False) -> IntensityMapping | None:
    """The mapping a ``DataInfo`` recorded for its images (``target=True``: its targets); ``None`` when unknown
    (runs saved before mappings were recorded).

    Args:
        info: a :class:`~synthmed.data.dataset.DataInfo` (or anything with ``intensity`` / ``target_intensity``).
        target: read ``target_intensity`` instead of ``intensity``.
    """
    data = getattr(info, "target_intensity" if target else "intensity", None) or {}
    return IntensityMapping.from_dict(data) if data else None


def check_intensity_range(value: Any) -> tuple[float, float] | None:
    """The ``intensity_range`` data option as ``(low, high)`` floats, or ``None``; refuses anything else.

    Args:
        value: ``None`` or two finite numbers with ``low < high``.
    """
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"intensity_range={value!r}: expected (low, high), two numbers") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"intensity_range={value!r}: expected finite (low, high) with low < high")
    return low, high


@dataclass
class ImageFile:
    """A file read for translation: its pixels in [-1, 1] and everything needed to write an output like it.

    Args:
        path: the file read.
        images: (S, C, H, W) float32 in [-1, 1]: S = 1 for 2-D files, S slices for a NIfTI volume / frames of a
            multi-frame DICOM, as the loaders make them (same orientation, MONOCHROME1 inverted).
        format: ``"png"``, ``"tiff"``, ``"jpeg"``, ``"bmp"``, ``"gif"``, ``"dicom"``, ``"nifti"`` or ``"npy"``.
        dtype: the file's stored dtype.
        low: the range used for this file (per-image kinds resolve here; ``low > high`` for MONOCHROME1).
        high: see ``low``. A NIfTI file with several volumes has one range per channel in
            ``geometry["channel_ranges"]``; ``low`` / ``high`` are the first channel's.
        unit: the values' unit (``"HU"``) or ``""``.
        geometry: what rebuilds the file's layout: NIfTI ``affine`` (canonical RAS, list of lists), ``axis``,
            ``shape`` (canonical), ``original_shape``; DICOM ``slope``, ``intercept``, ``photometric``.
        values: the file's values in units (S, C, H, W) float64, for metrics in units (MAE in HU).
    """

    path: Path
    images: torch.Tensor
    format: str
    dtype: str
    low: float
    high: float
    unit: str = ""
    geometry: dict[str, Any] = field(default_factory=dict)
    values: np.ndarray | None = None


# ------------------------------------------------------------------------------------------------- reading


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".npy"):
        return "npy"
    if path.suffix.lower() in PICTURE_FORMATS:
        return PICTURE_FORMATS[path.suffix.lower()]
    from synthmed.data.dicom import DICOM_SUFFIXES, looks_like_dicom

    if name.endswith(DICOM_SUFFIXES) or looks_like_dicom(path):
        return "dicom"
    raise DataError(path, f"unsupported file type '{path.suffix or path.name}' for translation (expected PNG, "
                          "JPEG, TIFF, BMP, GIF, DICOM, .nii / .nii.gz or .npy)")


def _own_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    return lo, hi if hi > lo else lo + 1.0


def _per_image_range(mapping: IntensityMapping, values: np.ndarray) -> tuple[float, float]:
    """A per-image kind's range for ``values`` (file windows are DICOM's; elsewhere they fall back to min..max)."""
    if mapping.kind == "volume_percentiles":
        lo, hi = (float(v) for v in np.percentile(values, mapping.percentiles))
        return lo, hi if hi > lo else lo + 1.0
    return _own_range(values)


def _binarised(values: np.ndarray) -> np.ndarray:
    """{0, 1} float64 masks, with the loaders' foreground threshold for the stored dtype."""
    from synthmed.data.transforms import mask_threshold

    return (values > mask_threshold(values)).astype(np.float64)


def _channel_problem(found: int, channels: int, what: str = "") -> str:
    def named(n: int) -> str:
        kind = what or {1: "grey", 3: "RGB"}.get(n)
        return f"{n} channel{'s' if n != 1 else ''}" + (f" ({kind})" if kind else "")

    return f"has {named(found)} but the run was trained on {channels}-channel images"


def _picture_dtype(mode: str, array: np.ndarray) -> str:
    if mode.startswith("I;16"):
        return "uint16"
    if mode == "I":  # PIL's 32-bit container: 16-bit data unless the values say otherwise
        return "uint16" if array.size and array.min() >= 0 and array.max() <= 65535 else "int32"
    return "float32" if mode == "F" else "uint8"


def _picture_range(mapping: IntensityMapping, path: Path, mode: str, array: np.ndarray,
                   dtype: str) -> tuple[float, float]:
    """The range that maps a picture as the image-folder loader maps the run's images."""
    from synthmed.data.folder import _grey_range

    if mapping.kind == "fixed":
        if dtype == "uint8" and mapping.dtype == "uint16" or dtype == "uint16" and mapping.dtype == "uint8":
            # Mixed-depth folders: the loader reads every 8-bit file as 0..255 and every 16-bit one by the
            # 16-bit range, whatever the folder's majority; follow it rather than saturate the file.
            own = (0.0, 255.0) if dtype == "uint8" else (0.0, 65535.0)
            warnings.warn(f"{path}: {dtype} image but the run's images were {mapping.dtype} "
                          f"({mapping.low:g}..{mapping.high:g}); read as {own[0]:g}..{own[1]:g}", stacklevel=4)
            return own
        return mapping.low, mapping.high
    if mapping.kind == "image_range":  # float files within [0, 1]: 0..1, 8-bit ones 0..255, as the loader
        return _grey_range(mode, array, _own_range(array)) if array.ndim == 2 else (0.0, 255.0)
    return _per_image_range(mapping, array)


def _read_picture(path: Path, mapping: IntensityMapping, fmt: str, channels: int | None) -> ImageFile:
    from synthmed.data._core import non_finite_problem
    from synthmed.data.folder import _decode, _mask_pixels

    array, mode = _decode(path)
    found = 1 if array.ndim == 2 or mapping.kind == "mask" else 3
    if channels is not None and found != channels:  # before any warning about the file's bit depth
        raise DataError(path, _channel_problem(found, channels))
    dtype = _picture_dtype(mode, array) if array.ndim == 2 else "uint8"
    values = array[None, None] if array.ndim == 2 else np.moveaxis(array, -1, 0)[None]
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(path, non_finite_problem("the image", values))
    if mapping.kind == "mask":  # read as the loaders read mask files (colour masks grey, palettes as indices)
        values, (low, high) = _binarised(_mask_pixels(path))[None, None], (0.0, 1.0)
    else:
        low, high = _picture_range(mapping, path, mode, array, dtype)
    geometry = {"mode": mode, "height": int(array.shape[0]), "width": int(array.shape[1])}
    return ImageFile(path, torch.empty(0), fmt, dtype, low, high, mapping.unit, geometry, values)


def _read_npy(path: Path, mapping: IntensityMapping) -> ImageFile:
    from synthmed.data._core import non_finite_problem

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"not a valid .npy file ({' '.join(str(exc).split())})") from exc
    if array.dtype.kind not in "uifb":
        raise DataError(path, f"has dtype {array.dtype}; expected integer, float or bool values")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] > 4:
        raise DataError(path, f"has shape {array.shape}; expected (H, W) or (C, H, W) with at most 4 channels")
    values = array[None].astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(path, non_finite_problem("the image", values))
    if mapping.kind == "mask":
        values, (low, high) = _binarised(array)[None], (0.0, 1.0)
    elif mapping.kind == "fixed":
        low, high = mapping.low, mapping.high
    else:
        low, high = _per_image_range(mapping, values)
    return ImageFile(path, torch.empty(0), "npy", array.dtype.name, low, high, mapping.unit, {}, values)


def _dicom_unit(ds: Any) -> str:
    """``"HU"`` (or the file's RescaleType) for values after rescale slope / intercept of CT-like files."""
    rescale_type = str(ds.get("RescaleType", "") or "").strip()
    if rescale_type and rescale_type.upper() != "US":  # US: unspecified
        return rescale_type
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality == "CT" or not modality and "RescaleIntercept" in ds:
        return "HU"
    return ""


def dicom_stored_dtype(ds: Any) -> str:
    """The stored dtype of a DICOM dataset's pixels, from its header (BitsAllocated, PixelRepresentation)."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        return "float32" if "FloatPixelData" in ds else "float64"
    bits = int(ds.get("BitsAllocated", 16) or 16)
    bits = 8 if bits <= 8 else 16 if bits <= 16 else 32
    return f"{'int' if int(ds.get('PixelRepresentation', 0) or 0) == 1 else 'uint'}{bits}"


def _dicom_colour(path: Path, ds: Any, pixels: np.ndarray, photometric: str) -> tuple[np.ndarray, float, str]:
    """(F, 3, H, W) colour values of a DICOM file, the top of their range and their dtype."""
    from synthmed.data import dicom as dcm

    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pydicom < 3
            from pydicom.pixel_data_handlers.util import apply_color_lut
        try:
            rgb = apply_color_lut(pixels, ds)
        except Exception as exc:  # missing / malformed lookup tables raise several types
            raise DataError(path, "PALETTE COLOR image without a usable colour lookup table "
                                  f"({one_line(exc)})") from exc
        rgb = rgb[None] if rgb.ndim == 3 else rgb
        top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
        return np.moveaxis(rgb, -1, 1).astype(np.float64), top, rgb.dtype.name
    if frames == 1:
        pixels = pixels[None]
    if photometric.startswith("YBR") and int(dcm._pydicom(path).__version__.split(".")[0]) < 3:
        from pydicom.pixel_data_handlers.util import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    return np.moveaxis(pixels, -1, 1).astype(np.float64), float(2**bits - 1), pixels.dtype.name


def _read_dicom(path: Path, mapping: IntensityMapping) -> ImageFile:
    from synthmed.data import dicom as dcm
    from synthmed.data._core import refuse_non_finite

    pydicom = dcm._pydicom(path)
    if path.stat().st_size == 0:
        raise DataError(path, "not a DICOM file (empty file, 0 bytes)")
    ds = dcm._read(pydicom, path)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise DataError(path, "DICOM file has no pixel data (not an image)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs / corrupt data
        raise DataError(path, f"cannot decode pixel data ({one_line(exc)}); compressed files may need "
                              "pylibjpeg or gdcm") from exc
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
    geometry: dict[str, Any] = {"slope": slope, "intercept": intercept, "photometric": photometric,
                                "frames": int(getattr(ds, "NumberOfFrames", 1) or 1)}
    if samples != 1 or photometric == "PALETTE COLOR":
        values, top, dtype = _dicom_colour(path, ds, pixels, photometric)
        if mapping.kind == "mask":
            return ImageFile(path, torch.empty(0), "dicom", dtype, 0.0, 1.0, "", geometry, _binarised(values))
        return ImageFile(path, torch.empty(0), "dicom", dtype, 0.0, top, "", geometry, values)
    stored = (pixels[None] if geometry["frames"] == 1 else pixels)[:, None]
    values = stored.astype(np.float64) * slope + intercept
    refuse_non_finite(values, path, "frame")
    function = None
    if mapping.kind == "mask":
        values, (low, high) = _binarised(stored).astype(np.float64), (0.0, 1.0)
    elif mapping.kind == "fixed":
        low, high = mapping.low, mapping.high
    elif mapping.kind == "file_window" and dcm._file_window(ds) is not None:
        center, width = dcm._file_window(ds)
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        low, high = dcm.window_limits(center, width, function)
        geometry.update(window=[center, width], voi_function=function)
    else:
        low, high = _per_image_range(mapping, values)
    invert = photometric == "MONOCHROME1" and mapping.kind != "mask"
    images = None
    if function == "SIGMOID":  # not linear: the images as the loader made them; the inverse is approximate
        images = dcm.voi_window(values, *geometry["window"], function)
        images = -images if invert else images
    if invert:  # the loader negates MONOCHROME1 images; the same linear map with its ends swapped
        low, high = high, low
    file = ImageFile(path, torch.empty(0), "dicom", dicom_stored_dtype(ds), low, high, _dicom_unit(ds), geometry,
                     values)
    if images is not None:
        file.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return file


def _nifti_slices(volume: np.ndarray, spatial: int) -> np.ndarray:
    """(X, Y, Z, C) -> (S, C, H, W): every slice along ``spatial``, rotated as :mod:`synthmed.data.nifti` does."""
    planes = [np.rot90(np.moveaxis(np.take(volume, k, axis=spatial), -1, 0), axes=(1, 2))
              for k in range(volume.shape[spatial])]
    return np.ascontiguousarray(np.stack(planes))


def _read_nifti(path: Path, mapping: IntensityMapping, channels: int | None, axis: int) -> ImageFile:
    from synthmed.data import nifti
    from synthmed.data._core import refuse_non_finite

    if axis not in (-3, -2, -1, 0, 1, 2):
        raise ConfigError(f"axis must be a spatial axis (0, 1, 2 or -1, -2, -3), got {axis}")
    img, data = nifti._canonical(path)
    volumes = data.shape[-1]
    if channels in (None, 1):
        picked = [0]  # the loader's default: the first volume of a 4-D file
    elif channels == volumes:
        picked = list(range(volumes))
    else:
        raise DataError(path, _channel_problem(volumes, channels, "volumes"))
    spatial = axis % 3
    data = data[..., picked]
    refuse_non_finite(np.moveaxis(data, spatial, 0), path, "slice")
    values = _nifti_slices(data, spatial).astype(np.float64)
    ranges = []
    for c in range(data.shape[-1]):
        if mapping.kind == "mask":
            ranges.append((0.0, 1.0))
        elif mapping.kind == "fixed":
            ranges.append((mapping.low, mapping.high))
        else:  # percentiles of the float32 volume, exactly as the loader computes them
            ranges.append(_per_image_range(mapping, data[..., c]))
    if mapping.kind == "mask":
        values = _binarised(values.astype(np.float32))
    proxy = img.dataobj
    scaled = float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0)) != 0.0
    header = img.header
    geometry = {
        "affine": np.asarray(img.affine, dtype=np.float64).tolist(),
        "axis": spatial,
        "shape": [int(s) for s in data.shape[:3]],
        "original_shape": [int(s) for s in nifti._original_shape(path)],
        "volumes": int(volumes),
        "scaled": bool(scaled),
        "channel_ranges": [[float(lo), float(hi)] for lo, hi in ranges],
        "sform_code": int(header["sform_code"]),
        "qform_code": int(header["qform_code"]),
        "xyzt_units": list(header.get_xyzt_units()),
    }
    low, high = ranges[0]
    file = ImageFile(path, torch.empty(0), "nifti", img.get_data_dtype().name, low, high, mapping.unit, geometry,
                     values)
    images = np.empty(values.shape, dtype=np.float32)
    for c, (lo, hi) in enumerate(ranges):
        images[:, c] = mapping.forward(values[:, c], lo, hi)
    file.images = torch.from_numpy(images)
    return file


def read_image_file(path: str | Path, mapping: IntensityMapping, *, channels: int | None = None,
                    axis: int = -1) -> ImageFile:
    """Read one file for translation the way the run's training data were read.

    PNG / TIFF / JPEG / BMP / GIF (8-bit, 16-bit grey, float TIFF), DICOM (rescale slope / intercept -> units,
    MONOCHROME1 inverted as the loader does), NIfTI (RAS canonical, every slice along ``axis``, empty ones too,
    with the loader's rot90, so the volume can be rebuilt) and ``.npy`` ((H, W) or (C, H, W)). The mapping
    decides the range: ``fixed`` its ``low``..``high``; ``image_range`` this file's min..max; ``volume_percentiles``
    this volume's percentiles; ``file_window`` this DICOM's window (else its min..max); ``mask`` the file
    binarised as the loaders binarise masks. The images keep the file's size (no crop or resize).

    Args:
        path: the file.
        mapping: the run's mapping for this side (:func:`mapping_from_info`).
        channels: the run's channel count; a file with another count is refused (grey and RGB are never
            converted silently). A 4-D NIfTI gives its first volume for 1 channel, all volumes when their
            number is ``channels``.
        axis: the NIfTI slicing axis (a spatial axis of the RAS volume), as the run's data were sliced.

    Raises:
        DataError: unreadable file, wrong channel count (naming the file and both counts), non-finite values.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(path, "no such file")
    fmt = _format_of(path)
    if fmt == "nifti":
        file = _read_nifti(path, mapping, channels, axis)
    elif fmt == "dicom":
        file = _read_dicom(path, mapping)
    elif fmt == "npy":
        file = _read_npy(path, mapping)
    else:
        file = _read_picture(path, mapping, fmt, channels)
    found = int(file.values.shape[1])
    if channels is not None and found != channels:
        raise DataError(path, _channel_problem(found, channels, "" if fmt != "npy" else "channels"))
    if file.images.numel() == 0:
        file.images = torch.from_numpy(np.ascontiguousarray(mapping.forward(file.values, file.low, file.high)))
    return file


def _unit_limits(file: ImageFile, limits: np.ndarray) -> np.ndarray:
    """Percentile limits (C, 2) of a file's [-1, 1] values as stored values, through each channel's own range."""
    channel_ranges = file.geometry.get("channel_ranges") or [[file.low, file.high]] * limits.shape[0]
    out = np.empty_like(limits, dtype=np.float64)
    for c, (lo, hi) in enumerate(channel_ranges[: limits.shape[0]]):
        out[c] = float(lo) + (limits[c] + 1.0) * (float(hi) - float(lo)) / 2.0
    return out


def _normalize_group(files: list[ImageFile], percentiles: tuple[float, float]) -> None:
    """One patient's files rescaled by the percentiles of all their pixels, per channel (in place)."""
    channels = int(files[0].images.shape[1])
    pooled = [np.concatenate([f.images[:, c].numpy().ravel() for f in files]) for c in range(channels)]
    limits = np.stack([np.percentile(p, list(percentiles)) for p in pooled]).astype(np.float64)
    for f in files:
        _set_normalized(f, [limits] * int(f.images.shape[0]))


def _set_normalized(file: ImageFile, limits: list[np.ndarray]) -> None:
    """``file`` rescaled slice by slice by ``limits`` ((C, 2) per slice), its ranges in stored values recorded."""
    from synthmed.data.normalize import rescale

    images = file.images.numpy()
    file.images = torch.from_numpy(np.concatenate([rescale(images[s:s + 1], limits[s])
                                                   for s in range(images.shape[0])]))
    ranges = np.stack([_unit_limits(file, lim) for lim in limits])  # (S, C, 2)
    file.geometry["ranges"] = ranges.tolist()
    file.low, file.high = float(ranges[0, 0, 0]), float(ranges[0, 0, 1])


def normalize_files(files: list[ImageFile], mapping: IntensityMapping, groups: list[str] | None = None) -> None:
    """Apply the mapping's ``normalize`` to files read by :func:`read_image_file`, in place, as the loaders apply
    it to the run's data: ``"patient"``: each group of files together (``groups``: a group name per file;
    ``None``: each file is its own patient, so a volume is normalised as a whole), per channel; ``"image"``: each
    slice on its own. ``low`` / ``high`` become the file's (first slice's, first channel's) range in stored
    values and ``geometry["ranges"]`` holds every slice's and channel's, for :meth:`IntensityMapping.inverse`.
    Nothing happens for ``normalize="none"`` and masks.

    Args:
        files: the files read with ``mapping``.
        mapping: the run's mapping for their side.
        groups: the patient of each file, for ``"patient"``.
    """
    if mapping.normalize == "none" or mapping.kind == "mask" or not files:
        return
    from synthmed.data.normalize import group_limits

    if mapping.normalize == "image":
        for f in files:
            images = f.images.numpy()
            _set_normalized(f, [group_limits(images[s:s + 1], mapping.normalize_percentiles)
                                for s in range(images.shape[0])])
        return
    names = groups if groups is not None else [str(i) for i in range(len(files))]
    for name in dict.fromkeys(names):
        _normalize_group([f for f, g in zip(files, names, strict=True) if g == name], mapping.normalize_percentiles)


# ------------------------------------------------------------------------------------------------- writing


def _out_path(path_stem: str | Path, suffix: str) -> Path:
    """``path_stem`` with ``suffix``; a known image suffix already on it (``x.png``) is replaced."""
    stem = Path(path_stem).expanduser()
    name = stem.name
    known = next((s for s in _KNOWN_SUFFIXES if name.lower().endswith(s) and len(name) > len(s)), None)
    return stem.with_name((name[: -len(known)] if known else name) + suffix)


def _as_integers(values: np.ndarray, dtype: str) -> np.ndarray:
    """Rounded and clipped to ``dtype``'s range (integers), or cast (floats)."""
    kind = np.dtype(dtype)
    if kind.kind in "ui":
        info = np.iinfo(kind)
        return np.clip(np.rint(values), info.min, info.max).astype(kind)
    if kind.kind == "b":
        return values > 0.5
    return values.astype(kind)


def _save_pictures(path: Path, planes: list[np.ndarray], fmt: str) -> Path:
    """Write (H, W) or (H, W, 3) arrays as one PNG / TIFF (several planes: a multi-page TIFF), atomically."""
    from PIL import Image

    from synthmed.io import atomic_write

    images = [Image.fromarray(np.ascontiguousarray(p)) for p in planes]

    def write(tmp: Path) -> None:
        extra = {"save_all": True, "append_images": images[1:]} if len(images) > 1 else {}
        images[0].save(tmp, format=fmt, **extra)

    atomic_write(path, write)
    return path


def _check_shape(values: np.ndarray, like: ImageFile, path: Path) -> None:
    if like.values is None:
        return
    want = like.values.shape
    if values.shape[0] != want[0] or values.shape[2:] != want[2:]:
        raise DataError(path, f"output of shape {tuple(values.shape)} (S, C, H, W) does not match {like.path.name}'s "
                              f"{want[0]} x {want[2]}x{want[3]}; bring it back to the file's slices and size first")


def _picture_planes(values: np.ndarray, dtype: str, path: Path, fmt: str) -> list[np.ndarray]:
    channels = values.shape[1]
    if channels not in (1, 3):
        raise DataError(path, f"output has {channels} channels; {fmt} files hold 1 (grey) or 3 (RGB)")
    if channels == 3 and dtype != "uint8":
        raise ConfigError(f"RGB {fmt} outputs are 8-bit; dtype={dtype!r} does not apply (use 'uint8')")
    data = _as_integers(values, dtype) if np.dtype(dtype).kind in "uib" else values.astype(dtype)
    return [d[0] if channels == 1 else np.moveaxis(d, 0, -1) for d in data]


def _write_nifti(path: Path, values: np.ndarray, like: ImageFile, dtype: str) -> Path:
    from synthmed.data.nifti import _nibabel
    from synthmed.io import atomic_write

    nib = _nibabel(path)
    geometry = like.geometry
    spatial = int(geometry.get("axis", 2))
    planes = [np.moveaxis(np.rot90(s, k=-1, axes=(1, 2)), 0, -1) for s in values]  # undo the loader's rot90
    volume = np.stack(planes, axis=spatial)  # (X, Y, Z, C)
    if volume.shape[-1] == 1:
        volume = volume[..., 0]
    volume = _as_integers(volume, dtype)
    affine = np.asarray(geometry.get("affine", np.eye(4)), dtype=np.float64)
    img = nib.Nifti1Image(volume, affine)
    img.set_sform(affine, code=int(geometry.get("sform_code") or 2))
    if int(geometry.get("qform_code") or 0) > 0:
        img.set_qform(affine, code=int(geometry["qform_code"]))
    if geometry.get("xyzt_units"):
        img.header.set_xyzt_units(*geometry["xyzt_units"])
    img.header.set_data_dtype(volume.dtype)
    # Serialised in memory: nibabel picks the format from the file name, which a temporary name lacks.
    atomic_write(path, lambda tmp: tmp.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6)))
    return path


def _write_dicom_like(stem: str | Path, values: np.ndarray, like: ImageFile) -> Path:
    """Stored values ((units - intercept) / slope, rounded) as a 16-bit grey PNG (several frames: a multi-page
    TIFF) and a ``<stem>.json`` sidecar saying how to get the units back."""
    from synthmed.io import atomic_write_text

    slope = float(like.geometry.get("slope", 1.0) or 1.0)
    intercept = float(like.geometry.get("intercept", 0.0))
    # Signed sources can store values below 0: shift them into the uint16 range and say so in the sidecar.
    offset = 32768 if np.dtype(like.dtype).kind == "i" else 0
    stored = _as_integers((values - intercept) / slope + offset, "uint16")
    path = _out_path(stem, ".png" if values.shape[0] == 1 else ".tif")
    _save_pictures(path, [s[0] for s in stored], "PNG" if values.shape[0] == 1 else "TIFF")
    sidecar = {"unit": like.unit, "slope": slope, "intercept": intercept, "offset": offset,
               "decode": "units = (stored - offset) * slope + intercept", "source": str(like.path)}
    atomic_write_text(_out_path(stem, ".json"), json.dumps(sidecar, indent=2) + "\n")
    return path


def _default_dtype(like: ImageFile, fmt: str, channels: int) -> str:
    if fmt in ("png", "jpeg", "bmp", "gif"):
        return "uint8" if channels == 3 or like.dtype in ("uint8", "bool") else "uint16"
    if fmt == "tiff":
        return "uint8" if channels == 3 else like.dtype if like.dtype in ("uint8", "uint16", "float32") else "float32"
    if fmt == "nifti":
        integer = np.dtype(like.dtype).kind in "ui" and not like.geometry.get("scaled", False)
        return like.dtype if integer else "float32"
    return "float32"


def write_image_file(path_stem: str | Path, unit_values: np.ndarray, like: ImageFile, *, dtype: str | None = None,
                     is_mask_probability: bool = False) -> Path:
    """Write a model output, already in the output's units, in the format, bit depth and geometry of ``like``.

    PNG / GIF / BMP / JPEG inputs give a PNG (8-bit for uint8 sources, 16-bit grey for uint16; RGB stays 8-bit
    RGB); TIFF a TIFF of the same dtype (uint8 / uint16 / float32); DICOM a 16-bit grey PNG of the stored values
    ((units - intercept) / slope, rounded; signed sources shifted by 32768) and a ``<stem>.json`` sidecar
    (``unit``, ``slope``, ``intercept``, ``offset``: ``units = (stored - offset) * slope + intercept``), a
    multi-page TIFF for multi-frame files; NIfTI a ``.nii.gz`` with the canonical affine, the volume rebuilt from
    its slices (float32, or the source's integer dtype when it was stored unscaled); ``.npy`` float32 units.
    Integer outputs are rounded and clipped to their dtype's range. Files are written atomically (a temporary
    file in the same folder, then renamed), so nothing half-written remains.

    Args:
        path_stem: where to write, without suffix (a known image suffix on it is replaced).
        unit_values: (S, C, H, W) values in the output's units (e.g. ``mapping.inverse(output, like.low,
            like.high)``), S and H x W as ``like``'s; (C, H, W) and (H, W) are taken as one slice.
        like: the input file read by :func:`read_image_file`.
        dtype: the stored dtype instead of the default (PNG: uint8 / uint16; TIFF: uint8 / uint16 / float32 /
            int32; NIfTI and .npy: any numeric dtype; DICOM outputs are always 16-bit stored values).
        is_mask_probability: ``unit_values`` is a one-channel probability map in 0..1: written as an 8-bit
            0..255 PNG (several slices: a multi-page TIFF; NIfTI inputs: a uint8 .nii.gz).

    Returns:
        The path written (the image, not the sidecar).
    """
    values = np.asarray(unit_values, dtype=np.float64)
    values = values.reshape((1,) * (4 - values.ndim) + values.shape) if values.ndim < 4 else values
    stem_path = Path(path_stem)
    if values.ndim != 4:
        raise DataError(stem_path, f"output has shape {values.shape}; expected (S, C, H, W)")
    _check_shape(values, like, stem_path)
    fmt = like.format
    if is_mask_probability:
        if values.shape[1] != 1:
            raise DataError(stem_path, f"a mask probability map has 1 channel, got {values.shape[1]}")
        mask = np.clip(values, 0.0, 1.0) * 255.0
        if fmt == "nifti":
            return _write_nifti(_out_path(path_stem, ".nii.gz"), mask, like, "uint8")
        single = values.shape[0] == 1
        return _save_pictures(_out_path(path_stem, ".png" if single else ".tif"), _picture_planes(mask, "uint8",
                              stem_path, "PNG"), "PNG" if single else "TIFF")
    if fmt == "dicom" and values.shape[1] == 1:
        if dtype not in (None, "uint16"):
            raise ConfigError(f"DICOM outputs are 16-bit stored values with a JSON sidecar; dtype={dtype!r} does "
                              "not apply")
        return _write_dicom_like(path_stem, values, like)
    if fmt == "dicom":  # colour DICOM: an 8-bit RGB PNG (or TIFF for several frames)
        fmt = "png"
    out_dtype = dtype or _default_dtype(like, fmt, values.shape[1])
    try:
        np.dtype(out_dtype)
    except TypeError:
        raise ConfigError(f"dtype={out_dtype!r} is not a numpy dtype") from None
    if fmt == "nifti":
        return _write_nifti(_out_path(path_stem, ".nii.gz"), values, like, out_dtype)
    if fmt == "npy":
        from synthmed.io import atomic_write

        data = _as_integers(values[0] if values.shape[0] == 1 else values, out_dtype)
        path = _out_path(path_stem, ".npy")

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, data, allow_pickle=False)

        atomic_write(path, save)
        return path
    if fmt == "tiff":
        if out_dtype not in ("uint8", "uint16", "float32", "int32"):
            raise ConfigError(f"TIFF outputs are uint8, uint16, float32 or int32, not dtype={out_dtype!r}")
        return _save_pictures(_out_path(path_stem, ".tif"), _picture_planes(values, out_dtype, stem_path, "TIFF"),
                              "TIFF")
    if out_dtype not in ("uint8", "uint16"):
        raise ConfigError(f"PNG outputs are 8- or 16-bit, not dtype={out_dtype!r} (float data: read and write TIFF)")
    single = values.shape[0] == 1
    return _save_pictures(_out_path(path_stem, ".png" if single else ".tif"),
                          _picture_planes(values, out_dtype, stem_path, "PNG"), "PNG" if single else "TIFF")
