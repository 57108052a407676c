"""MedMNIST v2 / MedMNIST+ 2D data sets: the embedded BreastMNIST and verified, cached downloads.

Files and MD5 checksums are those of the official release (Zenodo record 10519652, as listed by the
``medmnist`` package v3.0): ``<name>.npz`` for 28 px and ``<name>_<size>.npz`` for 64, 128, 224 px.
Downloads go to ``cache_dir``, else ``$SYNTHMED_CACHE``, else ``~/.cache/synthmed/medmnist``; they are
written to a temporary file, checked against the MD5 and only then moved into place, so the cache never
holds a partial or corrupt file. The server can be changed with ``$SYNTHMED_MEDMNIST_URL`` or
:data:`MEDMNIST_BASE_URL` (mirrors, tests).

Cite MedMNIST when you use it: Yang et al., "MedMNIST v2", Scientific Data 10, 41 (2023); each set also
has its own source publication (https://medmnist.com).
"""

from __future__ import annotations

import os
from pathlib import Path

from synthmed.download import DownloadError, download
from synthmed.errors import DataError, one_line

MEDMNIST_BASE_URL = "https://zenodo.org/records/10519652/files"
SIZES = (28, 64, 128, 224)

# Official MD5 per file name (medmnist/info.py, MedMNIST v3.0.2, record 10519652).
MEDMNIST_MD5: dict[str, str] = {
    "pathmnist.npz": "a8b06965200029087d5bd730944a56c1",
    "pathmnist_64.npz": "55aa9c1e0525abe5a6b9d8343a507616",
    "pathmnist_128.npz": "ac42d08fb904d92c244187169d1fd1d9",
    "pathmnist_224.npz": "2c51a510bcdc9cf8ddb2af93af1eadec",
    "chestmnist.npz": "02c8a6516a18b556561a56cbdd36c4a8",
    "chestmnist_64.npz": "9de6cd0b934ebb5b7426cfba5efbae16",
    "chestmnist_128.npz": "db107e5590b27930b62dbaf558aebee3",
    "chestmnist_224.npz": "45bd33e6f06c3e8cdb481c74a89152aa",
    "dermamnist.npz": "0744692d530f8e62ec473284d019b0c7",
    "dermamnist_64.npz": "b70a2f5635c6199aeaa28c31d7202e1f",
    "dermamnist_128.npz": "2defd784463fa5243564e855ed717de1",
    "dermamnist_224.npz": "8974907d8e169bef5f5b96bc506ae45d",
    "octmnist.npz": "c68d92d5b585d8d81f7112f81e2d0842",
    "octmnist_64.npz": "e229e9440236b774d9f0dfef9d07bdaf",
    "octmnist_128.npz": "0a97e76651ace45c5d943ee3f65b63ae",
    "octmnist_224.npz": "abc493b6d529d5de7569faaef2773ba3",
    "pneumoniamnist.npz": "28209eda62fecd6e6a2d98b1501bb15f",
    "pneumoniamnist_64.npz": "8f4eceb4ccffa70c672198ea285246c6",
    "pneumoniamnist_128.npz": "05b46931834c231683c68f40c47b2971",
    "pneumoniamnist_224.npz": "d6a3c71de1b945ea11211b03746c1fe1",
    "retinamnist.npz": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "retinamnist_64.npz": "afda852cc34dcda56f86ad2b2457dbcc",
    "retinamnist_128.npz": "e48e916a24454daf90583d4e6efb1a18",
    "retinamnist_224.npz": "eae7e3b6f3fcbda4ae613ebdcbe35348",
    "breastmnist.npz": "750601b1f35ba3300ea97c75c52ff8f6",
    "breastmnist_64.npz": "742edef2a1fd1524b2efff4bd7ba9364",
    "breastmnist_128.npz": "363e4b3f8d712e9b5de15470a2aaadf1",
    "breastmnist_224.npz": "b56378a6eefa9fed602bb16d192d4c8b",
    "bloodmnist.npz": "7053d0359d879ad8a5505303e11de1dc",
    "bloodmnist_64.npz": "2b94928a2ae4916078ca51e05b6b800b",
    "bloodmnist_128.npz": "adace1e0ed228fccda1f39692059dd4c",
    "bloodmnist_224.npz": "b718ff6835fcbdb22ba9eacccd7b2601",
    "tissuemnist.npz": "ebe78ee8b05294063de985d821c1c34b",
    "tissuemnist_64.npz": "123ece2eba09d0aa5d698fda57103344",
    "tissuemnist_128.npz": "61b955355d7425a89687b06cca3ce0c2",
    "tissuemnist_224.npz": "b077128c4a949f0a4eb01517f9037b9c",
    "organamnist.npz": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organamnist_64.npz": "2dcccc29b88e6da5a01161ef20cda288",
    "organamnist_128.npz": "eeae80d0a227a8d099027e1b3cfd3b60",
    "organamnist_224.npz": "50747347e05c87dd3aaf92c49f9f3170",
    "organcmnist.npz": "b9ceb9546e10131b32923c5bbeaea2b1",
    "organcmnist_64.npz": "3ce34a8724ea6f548e6db4744d03b6a9",
    "organcmnist_128.npz": "773c1f009daa3fe5d9a2a201b2a7ed94",
    "organcmnist_224.npz": "050f5e875dc056f6768abf94ec9995d1",
    "organsmnist.npz": "9ab87b696fb54e2a387ebe992d6ed5f1",
    "organsmnist_64.npz": "53a6d115339d874c25e309a994ff46d3",
    "organsmnist_128.npz": "ded0c5fa01a95dc4978b956f613e9b8e",
    "organsmnist_224.npz": "b354719e553fbbb2513d5533f52a4cb1",
}

_ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

# Class names in label-index order, per 2D data set (medmnist/info.py).
MEDMNIST_CLASSES: dict[str, tuple[str, ...]] = {
    "pathmnist": (
        "adipose",
        "background",
        "debris",
        "lymphocytes",
        "mucus",
        "smooth muscle",
        "normal colon mucosa",
        "cancer-associated stroma",
        "colorectal adenocarcinoma epithelium",
    ),
    # Multi-label (14 findings); the loader keeps column 0 (atelectasis) as a binary label.
    "chestmnist": ("no atelectasis", "atelectasis"),
    "dermamnist": (
        "actinic keratoses and intraepithelial carcinoma",
        "basal cell carcinoma",
        "benign keratosis-like lesions",
        "dermatofibroma",
        "melanoma",
        "melanocytic nevi",
        "vascular lesions",
    ),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
    "pneumoniamnist": ("normal", "pneumonia"),
    "retinamnist": ("0", "1", "2", "3", "4"),
    "breastmnist": ("malignant", "normal, benign"),
    "bloodmnist": (
        "basophil",
        "eosinophil",
        "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
        "lymphocyte",
        "monocyte",
        "neutrophil",
        "platelet",
    ),
    "tissuemnist": (
        "Collecting Duct, Connecting Tubule",
        "Distal Convoluted Tubule",
        "Glomerular endothelial cells",
        "Interstitial endothelial cells",
        "Leukocytes",
        "Podocytes",
        "Proximal Tubule Segments",
        "Thick Ascending Limb",
    ),
    "organamnist": _ORGANS,
    "organcmnist": _ORGANS,
    "organsmnist": _ORGANS,
}
# Licences as published with MedMNIST v3 (DermaMNIST follows HAM10000's non-commercial licence).
MEDMNIST_LICENSE: dict[str, str] = {name: "CC BY 4.0" for name in MEDMNIST_CLASSES} | {
    "dermamnist": "CC BY-NC 4.0"
}
NAMES = tuple(MEDMNIST_CLASSES)

BREASTMNIST_ATTRIBUTION = (
    "BreastMNIST from MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023; images from Al-Dhabyani et al., "
    "Data in Brief 28:104863, 2020), licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
)


def attribution(name: str) -> str:
    """One-line attribution and licence for a MedMNIST set (shown with results and in checkpoints)."""
    if name == "breastmnist":
        return BREASTMNIST_ATTRIBUTION
    return (
        f"{name} from MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023; see https://medmnist.com for "
        f"the original source), licensed {MEDMNIST_LICENSE[name]}"
    )


def embedded_breastmnist() -> Path:
    """Path of the BreastMNIST copy shipped in the package (28 px, CC BY 4.0, no network needed)."""
    return Path(__file__).resolve().parents[1] / "assets" / "breastmnist.npz"


def file_name(name: str, size: int | None) -> str:
    """Official file name, validating ``name`` and ``size`` (DataError listing the valid choices)."""
    if name not in MEDMNIST_CLASSES:
        raise DataError(f"medmnist:{name}", f"unknown MedMNIST data set; choose one of {', '.join(NAMES)}")
    size = 28 if size is None else size
    if size not in SIZES:
        raise DataError(
            f"medmnist:{name}",
            f"MedMNIST has no {size} px version; choose size from {', '.join(map(str, SIZES))}",
        )
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def cache_directory(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$SYNTHMED_CACHE``, else ``~/.cache/synthmed/medmnist``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SYNTHMED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthmed" / "medmnist"


def url_for(file: str) -> str:
    base = os.environ.get("SYNTHMED_MEDMNIST_URL") or MEDMNIST_BASE_URL
    return f"{base.rstrip('/')}/{file}?download=1"


def fetch(
    name: str, size: int | None = None, cache_dir: str | Path | None = None, download: bool = True
) -> Path:
    """Local path of a MedMNIST file: from the cache, or downloaded and MD5-verified into it."""
    file = file_name(name, size)
    target = cache_directory(cache_dir) / file
    if target.is_file():
        return target  # verified when it was downloaded; re-hashing GB-sized files on every load is too slow
    url = url_for(file)
    if not download:
        raise DataError(target, f"not in the cache and download=False; download {url} and put it at {target}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(target.parent, f"cannot create the cache folder ({one_line(exc)})") from exc
    _download(url, target, MEDMNIST_MD5[file])
    return target


def _download(url: str, target: Path, md5: str) -> None:
    """Download and MD5-check one file into the cache; failures say where to put the file by hand."""
    try:
        download(url, target, md5, algorithm="md5")
    except DownloadError as exc:
        raise DataError(
            url, f"{exc.reason}; if you are offline or it keeps failing, download the file by hand and put it at "
            f"{target}"
        ) from exc
