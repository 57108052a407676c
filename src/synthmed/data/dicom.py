"""DICOM sources: one ``.dcm`` file or a folder of them (needs ``pip install synthmed[dicom]``).

Grey images: stored values -> RescaleSlope/RescaleIntercept (e.g. CT Hounsfield units) -> VOI window ->
[-1, 1]. The window is the caller's ``window=(center, width)``, else the file's first WindowCenter/
WindowWidth (empty or invalid values count as absent), applied with the DICOM linear VOI function (PS3.3
C.11.2.1.2.1: [center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2]; the file's VOILUTFunction
LINEAR_EXACT and SIGMOID are honoured). Without a window, the min..max over the whole series (same
SeriesInstanceUID; files without one share the folder's range) is used, after rescale, so every slice of a
series gets the same contrast. ``intensity_range=(low, high)`` (units after rescale, HU for CT) replaces the
window and the series range. The mapping used is recorded in ``DataInfo.intensity``
(:mod:`synthmed.data.intensity`). MONOCHROME1 (white = low values) is inverted so that high always means
bright. Multi-frame files give one sample per frame. Colour (RGB/YBR) images are converted to RGB and scaled
by their bit depth; PALETTE COLOR images go through their colour lookup table (``apply_color_lut``) to RGB.
Patient ids come from PatientID, so splits are by patient. Anonymised files without PatientID fall back to
StudyInstanceUID, then SeriesInstanceUID (or the PatientID of another file in the same study / series), then
the file path, with a warning: an anonymised series must not be split slice by slice.
In a folder, objects without pixel data (structured reports, RT structures, DICOMDIR) are skipped.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data._core import RawData, assemble, refuse_non_finite
from synthmed.data.dataset import ImageDataset
from synthmed.data.transforms import fit_square, normalize
from synthmed.errors import ConfigError, DataError, one_line

DICOM_SUFFIXES = (".dcm", ".dicom")


def _pydicom(path: Path) -> Any:
    try:
        import pydicom
    except ImportError as exc:
        raise DataError(path, "reading DICOM needs pydicom: pip install synthmed[dicom]") from exc
    return pydicom


def looks_like_dicom(path: Path) -> bool:
    """True for files with the DICOM preamble ("DICM" at byte 128), e.g. extension-less ``IM0001``."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _first(value: Any) -> float | None:
    """WindowCenter/WindowWidth may be multi-valued (several presets): the first; None when empty / invalid."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):  # pydicom MultiValue, list
        value = value[0] if len(value) else None
    if value is None or isinstance(value, (str, bytes)) and not value.strip():
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _file_window(ds: Any) -> tuple[float, float] | None:
    """The file's first (center, width), or None when the tags are absent, empty or invalid (width <= 0)."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    return center, width


def window_limits(center: float, width: float, function: str = "LINEAR") -> tuple[float, float]:
    """The values a VOI window maps to -1 and 1: LINEAR [center - 0.5 - (width - 1) / 2, center - 0.5 + (width
    - 1) / 2] (PS3.3 C.11.2.1.2.1; width <= 1, a threshold at center - 0.5: [center - 1, center], which maps
    whole-number values alike), LINEAR_EXACT and SIGMOID (not linear: its approximate range) center -+ width / 2.
    """
    function = str(function or "LINEAR").strip().upper()
    if function in ("LINEAR_EXACT", "SIGMOID"):
        return center - width / 2, center + width / 2
    if width <= 1:
        return center - 1.0, center
    return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2) and map its output range to [-1, 1] (float32).

    LINEAR (default): [center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2] -> [-1, 1], clipped
    (width <= 1: a threshold at center - 0.5); LINEAR_EXACT: [center - width / 2, center + width / 2];
    SIGMOID: 1 / (1 + exp(-4 (x - center) / width)).
    """
    function = str(function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (values.astype(np.float64) - center) / width))
        return (2.0 * y - 1.0).astype(np.float32)
    if function != "LINEAR_EXACT" and width <= 1:
        return np.where(values > center - 0.5, 1.0, -1.0).astype(np.float32)
    return normalize(values, window_limits(center, width, function))


def _palette_rgb(path: Path, ds: Any, pixels: np.ndarray) -> np.ndarray:
    """PALETTE COLOR indices -> (F, 3, H, W) in [-1, 1] through the file's colour lookup table."""
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_color_lut
    try:
        rgb = apply_color_lut(pixels, ds)
    except Exception as exc:  # missing / malformed lookup tables raise several types
        raise DataError(path, f"PALETTE COLOR image without a usable colour lookup table ({one_line(exc)})") from exc
    rgb = rgb[None] if rgb.ndim == 3 else rgb  # (F, H, W, 3)
    top = float(np.iinfo(rgb.dtype).max) if np.issubdtype(rgb.dtype, np.integer) else 1.0
    return np.moveaxis(normalize(rgb, (0.0, top)), -1, 1)


def _frames(
    path: Path, ds: Any, window: tuple[float, float] | None, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float] | None]:
    """(F, C, H, W) float32 in [-1, 1] for one dataset, not yet inverted for MONOCHROME1, and the stored
    (rescaled) range that was mapped to [-1, 1] when no window or ``value_range`` applied (``None`` otherwise):
    the caller re-maps those to one range per series."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs / corrupt data
        raise DataError(
            path, f"cannot decode pixel data ({one_line(exc)}); compressed files may need pylibjpeg or gdcm"
        ) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples == 1 and photometric == "PALETTE COLOR":
        return _palette_rgb(path, ds, pixels), None
    if frames == 1:
        pixels = pixels[None]
    if samples == 1:
        pixels = pixels[:, None]  # (F, 1, H, W)
        stored = pixels.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0
        )
        refuse_non_finite(stored, path, "frame")  # before one NaN turns the whole series' range NaN
        if value_range is not None:
            return normalize(stored, value_range), None
        if window is not None:
            return voi_window(stored, *window), None
        file_window = _file_window(ds)
        if file_window is not None:
            return voi_window(stored, *file_window, ds.get("VOILUTFunction", "LINEAR")), None
        lo, hi = float(stored.min()), float(stored.max())
        return normalize(stored, (lo, hi if hi > lo else lo + 1.0)), (lo, hi)
    if value_range is not None:
        raise DataError(path, "is a colour DICOM image; intensity_range applies to grey images (after rescale)")
    if photometric.startswith("YBR") and int(_pydicom(path).__version__.split(".")[0]) < 3:
        # pydicom >= 3 returns RGB from pixel_array already; 2.x returns the stored YCbCr.
        from pydicom.pixel_data_handlers.util import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    return np.moveaxis(normalize(pixels, (0.0, float(2**bits - 1))), -1, 1), None


def _uid(ds: Any, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _patient_ids(records: list[tuple[Path, Any]], source: str) -> list[str]:
    """PatientID per file; without one: the PatientID of another file of its study / series, else its
    StudyInstanceUID, SeriesInstanceUID or path (with one warning), so a study / series is never split."""
    known: dict[tuple[str, str], str] = {}
    for _, ds in records:
        patient = _uid(ds, "PatientID")
        if patient:
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
                if _uid(ds, keyword):
                    known.setdefault((keyword, _uid(ds, keyword)), patient)
    ids, fallbacks = [], Counter()
    for path, ds in records:
        patient = _uid(ds, "PatientID")
        if not patient:
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
                uid = _uid(ds, keyword)
                if uid:
                    patient = known.get((keyword, uid), uid)
                    fallbacks[keyword if patient == uid else f"the PatientID of its {keyword[:-11].lower()}"] += 1
                    break
            else:
                patient = str(path)
                fallbacks["its own path"] += 1
        ids.append(patient)
    if fallbacks:
        used = ", ".join(f"{what} ({n})" for what, n in fallbacks.items())
        warnings.warn(
            f"{source}: {sum(fallbacks.values())} DICOM file(s) without PatientID; patients taken from {used}, "
            "so splits keep each study / series whole",
            stacklevel=3,
        )
    return ids


def _read(pydicom: Any, path: Path) -> Any:
    """dcmread, also accepting old files without the 128-byte preamble / file meta (e.g. ACR-NEMA style)."""
    try:
        return pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        problem = "no 'DICM' header and no readable DICOM elements"
    except Exception as exc:  # EOFError, struct / value errors on truncated files
        raise DataError(path, f"not a valid DICOM file ({one_line(exc)})") from exc
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        raise DataError(path, f"not a valid DICOM file ({problem})") from exc
    # Forced reading "succeeds" on any bytes; only a real object has a SOP class or pixel data.
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        raise DataError(path, f"not a valid DICOM file ({problem})")
    if "TransferSyntaxUID" not in ds.file_meta:
        from pydicom.uid import ImplicitVRLittleEndian

        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # the default for files without meta
    return ds


def read_dicom(
    files: list[Path],
    *,
    source: str,
    window: tuple[float, float] | None = None,
    size: int | None = None,
    skip_non_image: bool = False,
    intensity_range: tuple[float, float] | None = None,
) -> RawData:
    """Read DICOM files into per-frame samples (see the module docstring); ``intensity_range`` (in units after
    rescale) replaces the window and the series range."""
    from synthmed.data.intensity import check_intensity_range

    if window is not None and not (len(window) == 2 and float(window[1]) > 0):
        raise ConfigError(f"window={window!r}: expected (center, width) with width > 0")
    intensity_range = check_intensity_range(intensity_range)
    if window is not None and intensity_range is not None:
        raise ConfigError(f"window={window!r} and intensity_range={intensity_range!r} both set the DICOM range; "
                          "give one")
    pydicom = _pydicom(files[0])
    records: list[tuple[Path, Any]] = []
    for path in files:
        if path.name.upper() == "DICOMDIR":
            continue
        if path.stat().st_size == 0:
            raise DataError(path, "not a DICOM file (empty file, 0 bytes)")
        ds = _read(pydicom, path)
        if "PixelData" not in ds:
            if skip_non_image:
                warnings.warn(f"{path}: DICOM object without pixel data skipped", stacklevel=2)
                continue
            raise DataError(path, "DICOM file has no pixel data (not an image)")
        records.append((path, ds))
    if not records:
        raise DataError(source, "contains no DICOM images")
    patients_of = _patient_ids(records, source)
    order = sorted(
        range(len(records)),  # anatomical order within each series
        key=lambda i: (
            patients_of[i],
            _uid(records[i][1], "SeriesInstanceUID"),
            int(records[i][1].get("InstanceNumber", 0) or 0),
            str(records[i][0]),
        ),
    )

    images, patients, meta = [], [], []
    series_range: dict[str, tuple[float, float]] = {}  # stored min..max per series, for unwindowed images
    own_range: list[tuple[str, float, float] | None] = []
    invert: list[bool] = []
    for i in order:
        path, ds = records[i]
        frames, own = _frames(path, ds, window, intensity_range)
        series = _uid(ds, "SeriesInstanceUID")
        if own is not None:
            lo, hi = series_range.get(series, own)
            series_range[series] = (min(lo, own[0]), max(hi, own[1]))
        monochrome1 = str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"
        instance = int(ds.get("InstanceNumber", 0) or 0)
        for f, frame in enumerate(frames):
            images.append(frame.astype(np.float32) if size is None else fit_square(frame, size))
            patients.append(patients_of[i])
            meta.append({"path": str(path), "frame": f, "instance": instance})
            own_range.append(None if own is None else (series, *own))
            invert.append(monochrome1)
    for k, img in enumerate(images):
        if own_range[k] is not None:
            # Re-map from the file's own range to its series' range. Exact after resizing: the filter weights
            # are non-negative and sum to 1, and nothing was clipped (values lie within the file's own range).
            series, lo, hi = own_range[k]
            glo, ghi = series_range[series]
            span = ghi - glo if ghi > glo else 1.0
            scale, offset = (hi - lo if hi > lo else 1.0) / span, 2.0 * (lo - glo) / span
            img = np.clip((img + 1.0) * np.float32(scale) + np.float32(offset - 1.0), -1.0, 1.0)
        images[k] = -img if invert[k] else img
    channels = {img.shape[0] for img in images}
    if len(channels) > 1:
        raise DataError(source, "mixes grey and colour DICOM images; load them separately")
    return RawData(
        source=source,
        images=images,
        patients=np.asarray(patients, dtype=str),
        meta=meta,
        channel_names=("red", "green", "blue") if channels == {3} else (),
        intensity=_intensity([ds for _, ds in records], window, intensity_range),
    )


def _intensity(datasets: list[Any], window: tuple[float, float] | None,
               intensity_range: tuple[float, float] | None) -> dict:
    """The series' :class:`~synthmed.data.intensity.IntensityMapping` as a dict: a stated range or the caller's
    window (its LINEAR limits, as applied) -> fixed; files with windows -> ``file_window``; otherwise each
    series' min..max -> ``image_range``. Colour images: fixed 0..2^BitsStored - 1. Units and dtype from the
    first grey file ("HU" for CT)."""
    from synthmed.data.intensity import IntensityMapping, _dicom_unit, dicom_stored_dtype

    grey = [ds for ds in datasets if int(getattr(ds, "SamplesPerPixel", 1) or 1) == 1
            and str(getattr(ds, "PhotometricInterpretation", "")).upper() != "PALETTE COLOR"]
    if not grey:
        first = datasets[0]
        if str(getattr(first, "PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
            return IntensityMapping("fixed", 0.0, 65535.0, dtype="uint16").to_dict()  # 16-bit colour lookup tables
        bits = int(getattr(first, "BitsStored", 8) or 8)
        return IntensityMapping("fixed", 0.0, float(2**bits - 1), dtype=dicom_stored_dtype(first)).to_dict()
    unit, dtype = _dicom_unit(grey[0]), dicom_stored_dtype(grey[0])
    if intensity_range is not None:
        return IntensityMapping("fixed", *intensity_range, dtype=dtype, unit=unit).to_dict()
    if window is not None:
        low, high = window_limits(float(window[0]), float(window[1]))
        return IntensityMapping("fixed", low, high, dtype=dtype, unit=unit).to_dict()
    kind = "file_window" if any(_file_window(ds) is not None for ds in grey) else "image_range"
    return IntensityMapping(kind, dtype=dtype, unit=unit).to_dict()


def load_dicom(
    path: str | Path,
    *,
    window: tuple[float, float] | None = None,
    size: int | None = None,
    split: str = "train",
    channels: Any = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    intensity_range: tuple[float, float] | None = None,
    normalize: str = "none",
) -> ImageDataset:
    """A DICOM file or folder as an :class:`ImageDataset`; ``window=(center, width)`` overrides the files'
    (applied with the DICOM linear VOI function, see :func:`voi_window`); ``intensity_range=(low, high)`` in
    units after rescale (HU for CT) replaces both the window and the series range; ``normalize``: see
    :mod:`synthmed.data.normalize` (patients: the series' patients)."""
    path = Path(path).expanduser()
    if path.is_dir():
        from synthmed.data.folder import list_files

        files = [p for p in list_files(path) if p.suffix.lower() in DICOM_SUFFIXES or looks_like_dicom(p)]
        if not files:
            raise DataError(path, "contains no DICOM files (.dcm)")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(path, "no such file or folder")
    raw = read_dicom(files, source=str(path), window=window, size=size, skip_non_image=path.is_dir(),
                     intensity_range=intensity_range)
    return assemble(
        raw,
        size=size,
        split=split,
        channels=channels,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        normalize=normalize,
    )
