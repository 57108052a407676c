"""DICOM sources: one ``.dcm`` file or a folder of them (needs ``pip install synthmed[dicom]``).

Grey images: stored values -> RescaleSlope/RescaleIntercept (e.g. CT Hounsfield units) -> window
[center - width/2, center + width/2] -> [-1, 1]. The window is the caller's ``window=(center, width)``, else
the file's first WindowCenter/WindowWidth, else the file's own min..max. MONOCHROME1 (white = low values) is
inverted so that high always means bright. Multi-frame files give one sample per frame. Colour (RGB/YBR)
images are converted to RGB and scaled by their bit depth.
Patient ids come from PatientID (a file without one counts as its own patient), so splits are by patient.
In a folder, objects without pixel data (structured reports, RT structures, DICOMDIR) are skipped.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.data._core import RawData, assemble
from synthmed.data.dataset import ImageDataset
from synthmed.data.transforms import fit_square, normalize
from synthmed.errors import DataError

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


def _first(value: Any) -> float:
    """WindowCenter/WindowWidth may be multi-valued (several presets): use the first."""
    if isinstance(value, (int, float)):
        return float(value)
    return float(value[0])


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _frames(path: Path, ds: Any, window: tuple[float, float] | None) -> np.ndarray:
    """(F, C, H, W) float32 in [-1, 1] for one dataset."""
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for missing codecs / corrupt data
        raise DataError(
            path, f"cannot decode pixel data ({_one_line(exc)}); compressed files may need pylibjpeg or gdcm"
        ) from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if frames == 1:
        pixels = pixels[None]
    if samples == 1:
        pixels = pixels[:, None]  # (F, 1, H, W)
        stored = pixels.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(
            getattr(ds, "RescaleIntercept", 0) or 0
        )
        if window is not None:
            center, width = window
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        else:
            lo, hi = float(stored.min()), float(stored.max())
            center, width = (lo + hi) / 2, max(hi - lo, 1e-6)
        out = normalize(stored, (center - width / 2, center + width / 2))
        return -out if photometric == "MONOCHROME1" else out
    if photometric.startswith("YBR") and int(_pydicom(path).__version__.split(".")[0]) < 3:
        # pydicom >= 3 returns RGB from pixel_array already; 2.x returns the stored YCbCr.
        from pydicom.pixel_data_handlers.util import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    bits = int(getattr(ds, "BitsStored", 8) or 8)
    return np.moveaxis(normalize(pixels, (0.0, float(2**bits - 1))), -1, 1)


def _read(pydicom: Any, path: Path) -> Any:
    """dcmread, also accepting old files without the 128-byte preamble / file meta (e.g. ACR-NEMA style)."""
    try:
        return pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        problem = "no 'DICM' header and no readable DICOM elements"
    except Exception as exc:  # EOFError, struct / value errors on truncated files
        raise DataError(path, f"not a valid DICOM file ({_one_line(exc)})") from exc
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
) -> RawData:
    """Read DICOM files into per-frame samples (see the module docstring)."""
    pydicom = _pydicom(files[0])
    records = []
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
        order = (
            str(ds.get("PatientID", "")),
            str(ds.get("SeriesInstanceUID", "")),
            int(ds.get("InstanceNumber", 0) or 0),
            str(path),
        )
        records.append((order, path, ds))
    if not records:
        raise DataError(source, "contains no DICOM images")
    records.sort(key=lambda r: r[0])  # anatomical order within each series

    images, patients, meta = [], [], []
    for (patient, _series, instance, _), path, ds in records:
        patient = patient or str(path)  # no PatientID: the file is its own patient, never merged with others
        for f, frame in enumerate(_frames(path, ds, window)):
            images.append(frame.astype(np.float32) if size is None else fit_square(frame, size))
            patients.append(patient)
            meta.append({"path": str(path), "frame": f, "instance": instance})
    channels = {img.shape[0] for img in images}
    if len(channels) > 1:
        raise DataError(source, "mixes grey and colour DICOM images; load them separately")
    return RawData(
        source=source,
        images=images,
        patients=np.asarray(patients, dtype=str),
        meta=meta,
        channel_names=("red", "green", "blue") if channels == {3} else (),
    )


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
) -> ImageDataset:
    """A DICOM file or folder as an :class:`ImageDataset`; ``window=(center, width)`` overrides the files'."""
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
    raw = read_dicom(files, source=str(path), window=window, size=size, skip_non_image=path.is_dir())
    return assemble(
        raw,
        size=size,
        split=split,
        channels=channels,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
    )
