"""Metrics against closed forms, hand-computed cases and reference implementations (torchmetrics, skimage)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from synthmed.metrics.diversity import (
    MS_SSIM_WEIGHTS,
    _pair_indices,
    ms_ssim,
    ms_ssim_config,
    ms_ssim_diversity,
    ssim,
)
from synthmed.metrics.evaluate import exact_fid
from synthmed.metrics.fidelity import (
    feature_statistics,
    fid,
    frechet_distance,
    inception_score,
    kid,
    prdc,
)
from synthmed.metrics.memorisation import closest_pairs_grid, memorisation, nearest_neighbours
from synthmed.metrics.stats import MetricValue, bootstrap_interval, sample_size_warning


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# Frechet distance / FID


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_diagonal_closed_form(method: str) -> None:
    g = rng(1)
    a, b = g.uniform(0.1, 3.0, 8), g.uniform(0.1, 3.0, 8)
    mu1, mu2 = g.standard_normal(8), g.standard_normal(8)
    # Diagonal covariances: Tr sqrt(AB) = sum sqrt(a_i b_i), so d^2 = ||mu1 - mu2||^2 + sum (sqrt a - sqrt b)^2.
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    assert got == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_frechet_distance_commuting_covariances_closed_form(method: str) -> None:
    # S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T share eigenvectors: sqrt(S1 S2) = Q diag(sqrt(ab)) Q^T.
    q = random_orthogonal(6, seed=2)
    a = np.array([4.0, 1.0, 0.25, 9.0, 2.0, 0.5])
    b = np.array([1.0, 1.0, 1.0, 4.0, 8.0, 0.5])
    mu1, mu2 = np.zeros(6), np.full(6, 0.5)
    # ||d||^2 = 6 * 0.25 = 1.5; sum (sqrt a - sqrt b)^2 = 1 + 0 + 0.25 + 1 + 2 + 0 = 4.25 (sqrt 2 - sqrt 8 = -sqrt 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T, method=method)
    assert got == pytest.approx(1.5 + 4.25, rel=1e-9)


def test_frechet_distance_routes_agree_on_random_spd() -> None:
    g = rng(3)
    d = 40
    x, y = g.standard_normal((3 * d, d)), g.standard_normal((3 * d, d)) @ g.standard_normal((d, d))
    mu1, s1 = feature_statistics(x)
    mu2, s2 = feature_statistics(y + 1.0)
    by_sqrtm = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
    by_eigh = frechet_distance(mu1, s1, mu2, s2, method="eigh")
    assert by_sqrtm == pytest.approx(by_eigh, rel=1e-9)
    # Independent route: Tr sqrt(S1 S2) = sum of sqrt of the (real, non-negative) eigenvalues of S1 S2.
    tr = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert by_eigh == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="method"):
        frechet_distance(mu1, s1, mu2, s2, method="nope")  # type: ignore[arg-type]


def test_feature_statistics_matches_numpy_ddof1_and_accepts_tensors() -> None:
    x = rng(4).standard_normal((50, 5))
    mu, sigma = feature_statistics(torch.from_numpy(x).float())
    assert np.allclose(mu, x.mean(0), atol=1e-6)
    assert np.allclose(sigma, np.cov(x.T, ddof=1), atol=1e-5)


def test_fid_with_itself_is_zero_and_mean_shift_adds_squared_norm() -> None:
    x = rng(5).standard_normal((300, 12))
    assert abs(fid(x, x)) < 1e-6
    shift = np.linspace(-1.0, 2.0, 12)
    # Shifting every sample leaves the covariance unchanged: FID = ||shift||^2 exactly.
    assert fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    assert fid(x, x + shift, method="eigh") == pytest.approx(float(shift @ shift), rel=1e-8)


def test_fid_warns_when_fewer_samples_than_dimensions() -> None:
    x = rng(6).standard_normal((10, 20))
    with pytest.warns(UserWarning, match="rank-deficient"):
        fid(x, x + 0.1, method="eigh")


def test_fid_gram_route_hand_computed_one_dimension() -> None:
    # Real {0, 2}: mean 1, variance 2. Fake {1, 5}: mean 3, variance 8. d^2 = (1-3)^2 + 2 + 8 - 2 sqrt(16) = 6.
    real, fake = np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]])
    assert fid(real, fake, method="gram") == pytest.approx(6.0, rel=1e-12)
    assert fid(real, fake, method="sqrtm") == pytest.approx(6.0, rel=1e-9)


def test_fid_gram_route_takes_float32_and_torch_and_refuses_one_sample() -> None:
    generator = rng(11)
    real, fake = generator.standard_normal((30, 100)), generator.standard_normal((20, 100)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = fid(real, fake, method="eigh")
        assert fid(real.astype(np.float32), torch.from_numpy(fake).float(), method="gram") == pytest.approx(
            expected, rel=1e-5)
        assert exact_fid(real, fake) == pytest.approx(expected, rel=1e-7)
        with pytest.raises(ValueError, match="at least 2"):
            fid(real[:1], fake, method="gram")
        with pytest.raises(ValueError, match="'gram'"):
            fid(real, fake, method="nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("n_real, n_fake, dim", [(40, 60, 200), (80, 30, 16), (156, 156, 2048)])
def test_fid_gram_route_equals_the_covariance_routes(n_real: int, n_fake: int, dim: int) -> None:
    # The Gram route is exact, not an approximation: it agrees with the eigenvalue route whether the sets have
    # fewer samples than dimensions (rank-deficient covariances, the small-medical-set case) or more.
    generator = rng(dim)
    real = generator.standard_normal((n_real, dim)) * np.linspace(0.5, 2.0, dim)
    fake = generator.standard_normal((n_fake, dim)) + 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_eigh = fid(real, fake, method="eigh")
        by_gram = fid(real, fake, method="gram")
        by_auto = fid(real, fake)
    assert by_gram == pytest.approx(by_eigh, rel=1e-7)
    assert by_auto == pytest.approx(by_eigh, rel=1e-7)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_sqrtm_route_regularises_or_explains_singular_covariances() -> None:
    # Rank-1 covariances: sqrtm of a singular product. Either a finite value close to the eigen route or a clear
    # ValueError, never a silent complex number or NaN.
    s1, s2 = np.zeros((3, 3)), np.zeros((3, 3))
    s1[0, 0], s2[1, 1] = 1.0, 1.0
    try:
        value = frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="sqrtm")
    except ValueError as error:
        assert "imaginary" in str(error)
    else:
        assert value == pytest.approx(2.0, abs=1e-3)
    assert frechet_distance(np.zeros(3), s1, np.zeros(3), s2, method="eigh") == pytest.approx(2.0)


class FixedFeatures(torch.nn.Module):
    """A torchmetrics 'feature extractor' that hands back its (already computed) input features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim  # read by torchmetrics instead of probing with a dummy image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_fid_and_kid_match_torchmetrics() -> None:
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    g = rng(7)
    real = g.standard_normal((150, 10))
    fake = g.standard_normal((150, 10)) * 1.3 + 0.2
    real_t, fake_t = torch.from_numpy(real), torch.from_numpy(fake)

    reference_fid = fid_module.FrechetInceptionDistance(feature=FixedFeatures(10))
    reference_fid.update(real_t, real=True)
    reference_fid.update(fake_t, real=False)
    assert fid(real, fake) == pytest.approx(float(reference_fid.compute()), rel=1e-4)

    # One subset of all samples: both estimators are deterministic.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics' "saves all features in memory" warning
        reference_kid = kid_module.KernelInceptionDistance(feature=FixedFeatures(10), subsets=1, subset_size=150)
    reference_kid.update(real_t, real=True)
    reference_kid.update(fake_t, real=False)
    ref_mean, _ = reference_kid.compute()
    mean, std = kid(real, fake, subsets=1, subset_size=150)
    assert mean == pytest.approx(float(ref_mean), rel=1e-4)
    assert std == 0.0


def test_kid_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift() -> None:
    g = rng(8)
    # Independent replications (subsets of one sample overlap, so their spread understates the error of the mean).
    values = [kid(g.standard_normal((200, 16)), g.standard_normal((200, 16)), 1, 200)[0] for _ in range(40)]
    mean, standard_error = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(len(values)))
    assert abs(mean) < 3 * standard_error
    # A biased MMD^2 (diagonals kept) would sit near 2 (E k(x, x) - E k(x, y)) / 200, far above that.
    x = g.standard_normal((2000, 16))
    k_xx = np.mean((np.sum(x * x, 1) / 16 + 1) ** 3)
    assert 3 * standard_error < 0.2 * 2 * (k_xx - 1.0) / 200
    a, b = g.standard_normal((600, 16)), g.standard_normal((600, 16))
    same_mean, _ = kid(a, b, subsets=50, subset_size=300)
    shifted_mean, shifted_std = kid(a, b + 0.5, subsets=50, subset_size=300)
    assert shifted_mean > 10 * max(shifted_std, abs(same_mean))


def test_kid_clips_subset_size_with_a_warning() -> None:
    a = rng(9).standard_normal((30, 4))
    with pytest.warns(UserWarning, match="subset_size 100 > number of samples; using 20"):
        clipped = kid(a, a[:20], subsets=3, subset_size=100)
    assert all(math.isfinite(v) for v in clipped)
    # Clipped to min(n_real, n_fake) = 20: the very same draws (same seed) as asking for 20, silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explicit = kid(a, a[:20], subsets=3, subset_size=20)
        assert clipped == explicit
        assert kid(a, a[:20], subsets=3, subset_size=19) != clipped  # the comparison tells subset sizes apart


# Inception Score


def test_inception_score_uniform_is_one_and_confident_even_is_number_of_classes() -> None:
    classes, splits = 5, 4
    uniform = np.full((40, classes), 1.0 / classes)
    assert inception_score(uniform, splits=splits) == pytest.approx((1.0, 0.0), abs=1e-12)
    # Every split holds each class equally often with one-hot predictions: KL = log C, IS = C.
    one_hot = np.eye(classes)[np.arange(40) % classes]
    mean, std = inception_score(one_hot, splits=splits)
    assert mean == pytest.approx(classes, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_logits_equal_probabilities_and_reject_non_probabilities() -> None:
    logits = torch.from_numpy(rng(10).standard_normal((60, 7)))
    by_logits = inception_score(logits, splits=3, from_logits=True)
    by_probs = inception_score(torch.softmax(logits, 1), splits=3)
    assert by_logits == pytest.approx(by_probs, rel=1e-12)
    with pytest.raises(ValueError, match="from_logits"):
        inception_score(logits, splits=3)


# Precision / recall / density / coverage


def official_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """clovaai/generative-evaluation-prdc written out with full distance matrices (differences, not products)."""

    def dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))

    def radii(x: np.ndarray) -> np.ndarray:
        return np.sort(dist(x, x), axis=1)[:, k]  # (k+1)-th smallest including self = k-th neighbour

    r_real, r_fake, d = radii(real), radii(fake), dist(real, fake)
    return {
        "precision": (d < r_real[:, None]).any(0).mean(),
        "recall": (d < r_fake[None, :]).any(1).mean(),
        "density": (d < r_real[:, None]).sum(0).mean() / k,
        "coverage": (d.min(1) < r_real).mean(),
    }


def test_prdc_hand_computed_1d_case() -> None:
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[0.5], [2.9], [12.0], [13.0]])
    # k = 1 radii: real 0->1, 1->1, 3->2, 7->4; fake 0.5->2.4, 2.9->2.4, 12->1, 13->1.
    # precision: 0.5 (in ball of 0), 2.9 (ball of 3) yes; 12, 13 no (5 > 4)            -> 2/4
    # density: 0.5 in balls of 0 and 1, 2.9 in ball of 3, 12 and 13 in none            -> 3/4
    # recall: 0, 1 in ball of 0.5; 3 in ball of 2.9; 7 in none (4.1 > 2.4, 5 > 1)        -> 3/4
    # coverage: nearest fake of 0, 1, 3 inside their balls; of 7 at 4.1 > 4              -> 3/4
    got = prdc(real, fake, k=1)
    assert got == pytest.approx({"precision": 0.5, "recall": 0.75, "density": 0.75, "coverage": 0.75})
    assert official_prdc(real, fake, k=1) == pytest.approx(got)


def test_prdc_identical_far_and_random_sets() -> None:
    g = rng(11)
    real = g.standard_normal((200, 8))
    same = prdc(real, real.copy(), k=5)
    assert same == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    fake = g.standard_normal((150, 8)) * 1.2 + 0.3
    # Small chunks exercise the accumulation across chunks.
    assert prdc(real, fake, k=3, chunk=64) == pytest.approx(official_prdc(real, fake, k=3))


@pytest.mark.parametrize(
    ("seed", "n", "dim", "k", "offset", "chunk"),
    [(0, 100, 2, 3, 0.0, 2048), (1, 300, 16, 5, 10.0, 64), (2, 500, 64, 10, 0.0, 2048), (3, 257, 2048, 5, 0.0, 100),
     (4, 400, 32, 3, 50.0, 2048), (5, 150, 4, 7, -3.0, 2048)],
)
def test_prdc_ties_of_identical_and_copied_samples(seed: int, n: int, dim: int, k: int, offset: float,
                                                   chunk: int) -> None:
    """Each real ball holds exactly its centre and k - 1 neighbours (the k-th sits on the edge: strict inequality),
    so identical sets give density exactly 1. The radii and the fake-vs-real distances are separate float64 matrix
    products that disagree by ~1e-15 at those edge ties; before ties were made rounding-proof these cases gave
    densities of 1.02-1.09 (each set size, dimension, offset and chunking)."""
    real = rng(seed).standard_normal((n, dim)) + offset
    assert prdc(real, real.copy(), k=k, chunk=chunk) == {"precision": 1.0, "recall": 1.0, "density": 1.0,
                                                         "coverage": 1.0}
    if dim <= 64:  # half copies, half fresh samples: ties and non-ties, against the difference-based reference
        fake = np.concatenate([real[: n // 2], rng(seed + 100).standard_normal((n - n // 2, dim)) * 1.1 + offset])
        got = prdc(real, fake, k=k, chunk=chunk)
        assert got == pytest.approx(official_prdc(real, fake, k=k), abs=1e-12)


# MS-SSIM


def smooth_images(n: int, size: int, seed: int, channels: int = 1) -> torch.Tensor:
    """Random blobby images in [-1, 1] (structure at several scales, like anatomy rather than white noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g, dtype=torch.float64)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return up * 2.0 - 1.0


def test_ms_ssim_config_rule() -> None:
    c28, c64, c128, c256 = (ms_ssim_config(s) for s in (28, 64, 128, 256))
    assert (c28.scales, c28.window, c28.sizes) == (3, 7, (28, 14, 7))
    assert (c64.scales, c64.window) == (3, 11)
    assert (c128.scales, c128.window) == (4, 11)
    assert (c256.scales, c256.window, c256.weights) == (5, 11, MS_SSIM_WEIGHTS)
    for config in (c28, c64, c128, c256):
        assert sum(config.weights) == pytest.approx(1.0, abs=2e-4)
        assert config.sizes[-1] >= config.window
    assert ms_ssim_config(64, weights=[0.5, 0.5]).weights == (0.5, 0.5)


@pytest.mark.parametrize("size", [28, 48])
def test_single_scale_ssim_matches_skimage(size: int) -> None:
    metrics = pytest.importorskip("skimage.metrics")
    a = smooth_images(3, size, seed=12)
    b = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(13), dtype=a.dtype)).clamp(-1, 1)
    config = ms_ssim_config(size)
    mine = ssim(a, b, data_range=2.0, window=config.window, sigma=config.sigma)
    for i in range(3):
        # skimage's window is 2 * int(3.5 sigma + 0.5) + 1 taps: 11 for sigma 1.5, 7 for the 28 px sigma.
        expected = metrics.structural_similarity(
            a[i, 0].numpy(),
            b[i, 0].numpy(),
            gaussian_weights=True,
            sigma=config.sigma,
            use_sample_covariance=False,
            data_range=2.0,
        )
        assert float(mine[i]) == pytest.approx(expected, abs=1e-4)
    if config.window == 11:
        # One scale with weight 1 is plain SSIM.
        assert torch.allclose(ms_ssim(a, b, weights=[1.0]), mine, atol=1e-10)


def test_ms_ssim_identity_noise_and_shape() -> None:
    a = smooth_images(4, 64, seed=14, channels=2)
    assert torch.allclose(ms_ssim(a, a), torch.ones(4, dtype=a.dtype), atol=1e-10)
    g = torch.Generator().manual_seed(15)
    noise = torch.randn(a.shape, generator=g, dtype=a.dtype)
    values = [ms_ssim(a, (a + level * noise).clamp(-1, 1)).mean().item() for level in (0.05, 0.2, 0.5, 1.0)]
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    assert 0.0 <= values[-1] < values[0] <= 1.0
    assert ms_ssim(a.float()[:, :1, :28, :28], a.float()[:, 1:, :28, :28]).shape == (4,)
    with pytest.raises(ValueError):
        ms_ssim(a, a[:2])


def test_pair_indices_are_distinct_upper_triangle_pairs() -> None:
    i, j = _pair_indices(30, 200, rng(16))
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == 200
    assert np.all(i < j) and np.all(j < 30) and np.all(i >= 0)
    i, j = _pair_indices(5, 1000, rng(16))
    assert len(i) == 10  # all pairs when fewer than asked


def test_ms_ssim_diversity_identical_noise_and_collapse() -> None:
    one = smooth_images(1, 32, seed=17).float()
    assert ms_ssim_diversity(one.expand(20, -1, -1, -1), pairs=50)["mean"] == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(40, 1, 32, 32, generator=torch.Generator().manual_seed(18)) * 2 - 1
    assert ms_ssim_diversity(noise, pairs=200)["mean"] < 0.1
    varied = smooth_images(40, 32, seed=19).float()
    collapsed = (one + 0.05 * torch.randn(40, 1, 32, 32, generator=torch.Generator().manual_seed(20))).clamp(-1, 1)
    report = ms_ssim_diversity(varied, pairs=200)
    assert ms_ssim_diversity(collapsed, pairs=200)["mean"] > report["mean"] + 0.2
    assert report["pairs"] == 200 and report["scales"] == 3 and report["window"] == 7


# Memorisation


def test_nearest_neighbours_match_brute_force() -> None:
    g = rng(21)
    query, reference = g.standard_normal((70, 6)), g.standard_normal((90, 6))
    d, i = nearest_neighbours(query, reference, k=3, chunk=16)
    full = np.sqrt(((query[:, None] - reference[None]) ** 2).sum(-1))
    assert np.array_equal(i, np.argsort(full, axis=1)[:, :3])
    assert np.allclose(d, np.sort(full, axis=1)[:, :3], atol=1e-12)
    d_self, i_self = nearest_neighbours(reference, reference, k=2, exclude_self=True, chunk=16)
    np.fill_diagonal(full_self := np.sqrt(((reference[:, None] - reference[None]) ** 2).sum(-1)), np.inf)
    assert np.array_equal(i_self, np.argsort(full_self, axis=1)[:, :2])
    assert np.allclose(d_self, np.sort(full_self, axis=1)[:, :2], atol=1e-12)


def test_memorisation_exact_copies_are_found() -> None:
    g = rng(22)
    train, holdout = g.standard_normal((300, 32)), g.standard_normal((300, 32))
    copied = g.choice(300, size=50, replace=False)
    result = memorisation(train[copied], train, holdout)
    assert result.copy_fraction == 1.0
    assert np.array_equal(result.train_index, copied)
    assert np.all(result.train_distance == 0.0)
    assert result.closer_to_train_fraction == 1.0
    assert set(result.closest_pairs[:, 1].tolist()) <= set(copied.tolist())
    summary = result.to_dict()
    json.dumps(summary)  # JSON-able
    assert summary["n_fake"] == 50 and summary["expected_closer_to_train_fraction"] == 0.5


def test_memorisation_fresh_samples_match_the_holdout_baseline() -> None:
    g = rng(23)
    train, holdout, fake = (g.standard_normal((400, 64)) for _ in range(3))
    result = memorisation(fake, train, holdout)
    # Without memorisation the synthetic set behaves like the held-out set (mutual nearest neighbours by chance).
    assert result.copy_fraction < 0.4
    assert abs(result.copy_fraction - result.holdout_copy_fraction) < 0.1
    assert abs(result.closer_to_train_fraction - 0.5) < 0.1


def test_memorisation_in_pixel_space_and_grid() -> None:
    g = torch.Generator().manual_seed(24)
    train = torch.rand(60, 1, 8, 8, generator=g) * 2 - 1
    fake = torch.rand(20, 1, 8, 8, generator=g) * 2 - 1
    fake[:3] = train[[5, 7, 11]]
    result = memorisation(fake, train, None, space="pixel", k_pairs=3)
    assert result.is_copy[:3].all()
    assert sorted(result.closest_pairs[:, 0].tolist()) == [0, 1, 2]
    assert result.closer_to_train_fraction is None and result.n_holdout is None
    grid = closest_pairs_grid(fake, train, result, n=4)
    assert grid.shape == (8, 1, 8, 8)
    assert torch.equal(grid[0], grid[1])  # an exact copy next to its training image
    with pytest.raises(ValueError, match="2-D"):
        memorisation(fake, train, None, space="feature")


# Statistics helpers


def test_bootstrap_interval_contains_statistic_and_narrows_with_n() -> None:
    g = rng(25)
    widths = []
    for n in (50, 800):
        x = g.standard_normal(n) + 3.0
        low, high = bootstrap_interval(np.mean, x, n_boot=300, seed=1)
        assert low < float(np.mean(x)) < high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2  # width ~ 1/sqrt(n): 4x narrower expected
    # Several arrays (resampled independently) and tensors.
    a, b = torch.randn(100, 3), torch.randn(80, 3) + 1
    low, high = bootstrap_interval(lambda u, v: float((v.mean(0) - u.mean(0)).norm()), a, b, n_boot=50)
    assert low < high


def test_metric_value_and_sample_size_warning() -> None:
    value = MetricValue("fid", np.float64(12.5), "inception", 500, 500, interval=(np.float64(11.0), 14.0), std=None)
    assert json.loads(json.dumps(value.to_dict()))["interval"] == [11.0, 14.0]
    assert sample_size_warning(10_000, 2048) is None
    message = sample_size_warning(500, 2048)
    assert message is not None and "rank-deficient" in message and "\n" not in message


def test_recentred_bootstrap_interval_brackets_the_fid() -> None:
    from synthmed.metrics.fidelity import fid
    from synthmed.metrics.stats import bootstrap_interval

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.3, 1.0, size=(200, 8))
    value = fid(a, b)
    plain = bootstrap_interval(fid, a, b, n_boot=100, seed=0)
    centred = bootstrap_interval(fid, a, b, n_boot=100, seed=0, recentre=True)
    assert centred[0] <= value <= centred[1]
    # Resampling with replacement inflates FID: the plain interval sits higher than the re-centred one.
    assert plain[0] > centred[0] and plain[1] > centred[1]


@pytest.mark.parametrize("size", [192, 256])
def test_five_scale_ms_ssim_matches_pytorch_msssim(size: int) -> None:
    """The standard 5-scale, 11 px window MS-SSIM equals pytorch-msssim's (which needs > 160 px).

    Even sizes only: at odd sizes pytorch-msssim zero-pads before pooling (darkening the border), while we pool
    a trailing row on its own (as TensorFlow's 'SAME' and Wang's symmetric padding do).
    """
    reference = pytest.importorskip("pytorch_msssim")
    a = smooth_images(3, size, seed=1)
    b = (a + 0.2 * torch.randn(a.shape, generator=torch.Generator().manual_seed(2), dtype=a.dtype)).clamp(-1, 1)
    assert ms_ssim_config(size).scales == 5
    expected = reference.ms_ssim(a, b, data_range=2.0, size_average=False, win_size=11, win_sigma=1.5)
    torch.testing.assert_close(ms_ssim(a, b), expected, rtol=0, atol=1e-7)
