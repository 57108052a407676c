"""The bagan and bagan-gp recipes on tiny data: both phases' steps, the class Gaussians fitted to the encodings,
the weight transfer autoencoder -> GAN, exact resume inside the GAN phase without a refit, sampling a class from a
loaded run, grey and RGB, and one-line errors for unlabelled data and bad options."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import synthmed
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError
from synthmed.nn.autoencoder import ClassLatents, cholesky_with_jitter
from synthmed.recipes import Phase, StepContext, build_recipe
from synthmed.recipes.bagan import BaganConfig, BaganGPConfig, _BalancingGAN
from synthmed.recipes.options import describe_options
from synthmed.training import checkpoint as ckpt

RECIPES = ("bagan", "bagan-gp")
#: Tiny networks; class 2 has fewer images than latent dimensions, so its covariance is rank-deficient.
TINY = {"latent_dim": 6, "g_channels": 4, "d_channels": 4, "ae_steps": 2}
COUNTS = (12, 7, 3)
TRAIN = {"batch_size": 8, "log_every": 2, "sample_every": 1000, "checkpoint_every": 1000, "device": "cpu",
         "split": "all"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """Networks this small gain nothing from threads, and on a busy machine every op then waits for the pool
    (measured 40x per step with 2 threads on 2 shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _options(name: str, **extra: object) -> dict[str, object]:
    return {**TINY, **({"n_critic": 2} if name == "bagan-gp" else {}), **extra}


def _dataset(channels: int, size: int, counts: tuple[int, ...] = COUNTS, seed: int = 0) -> ImageDataset:
    """Random images whose brightness depends on the class, so the classes encode differently."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
    offset = (labels.float() / max(1, len(counts) - 1) - 0.5).view(-1, 1, 1, 1)
    images = (0.5 * torch.rand(labels.shape[0], channels, size, size, generator=gen) - 0.25 + offset).clamp(-1, 1)
    info = DataInfo(source="toy", channels=channels, height=size, width=size, num_classes=len(counts))
    return ImageDataset(images=images, info=info, labels=labels)


def _recipe(name: str, channels: int = 1, size: int = 16, ema_beta: float = 0.0, **extra: object
            ) -> tuple[_BalancingGAN, ImageDataset]:
    data = _dataset(channels, size)
    torch.manual_seed(0)
    recipe = build_recipe(name, _options(name, **extra), data.info, ema_beta)
    recipe.prepare_data(data)
    return recipe, data  # type: ignore[return-value]


def _context(recipe: _BalancingGAN, phase: str, batch: dict[str, torch.Tensor]) -> StepContext:
    return StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers(), phase=phase,
                       draw_batch=lambda: batch)


def _batch(data: ImageDataset, n: int = 8) -> dict[str, torch.Tensor]:
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:n]
    return data.batch(index)


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize(("channels", "size"), [(1, 16), (3, 28)])
def test_each_phase_steps_with_its_declared_losses(name: str, channels: int, size: int) -> None:
    recipe, data = _recipe(name, channels, size)
    batch = _batch(data)
    nets = recipe.networks
    assert recipe.phases() == [Phase("autoencoder", 2), Phase("gan")]
    encoder, generator = _snapshot(nets["E"]), _snapshot(nets["G"])
    ctx = _context(recipe, "autoencoder", batch)
    losses = recipe.train_step(batch, ctx)
    assert list(losses) == ["loss_ae"] and set(losses) <= set(recipe.loss_names())
    assert all(math.isfinite(float(v)) and v.dim() == 0 and not v.requires_grad for v in losses.values())
    assert not _same(encoder, _snapshot(nets["E"])) and _same(generator, _snapshot(nets["G"]))
    reconstructions = recipe.preview(recipe.preview_inputs(12, 0))
    assert reconstructions.columns["reconstruction"].shape == reconstructions.columns["image"].shape
    assert reconstructions.columns["image"].shape[1:] == (channels, size, size)

    recipe.start_phase("gan")
    ctx.phase = "gan"
    encoder, generator = _snapshot(nets["E"]), _snapshot(nets["G"])
    losses = recipe.train_step(batch, ctx)
    assert list(losses) == recipe.loss_names()[1:]
    assert all(math.isfinite(float(v)) and v.dim() == 0 and not v.requires_grad for v in losses.values())
    assert _same(encoder, _snapshot(nets["E"])) and not _same(generator, _snapshot(nets["G"]))
    grid = recipe.preview(recipe.preview_inputs(12, 0))
    assert grid.grid.shape == (12, channels, size, size) and grid.nrow == 4 and grid.names == ("0", "1", "2")
    images = recipe.generate(torch.randn(5, 6), label=torch.tensor([0, 1, 2, 0, 1]))
    assert images.shape == (5, channels, size, size) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize("name", RECIPES)
def test_labels_reach_the_losses(name: str) -> None:
    """BAGAN-GP's autoencoder is supervised, BAGAN's is not; both GAN steps use the batch's classes."""
    data = _dataset(1, 16)
    batch = _batch(data)
    other = {**batch, "label": (batch["label"] + 1) % 3}
    results = []
    for labels in (batch, other):
        recipe, _ = _recipe(name)
        ctx = _context(recipe, "autoencoder", labels)
        torch.manual_seed(3)
        loss_ae = recipe.train_step(labels, ctx)["loss_ae"]
        recipe.start_phase("gan")
        ctx.phase = "gan"
        torch.manual_seed(4)
        results.append((loss_ae, recipe.train_step(labels, ctx)["loss_d"]))
    (ae_a, d_a), (ae_b, d_b) = results
    assert torch.equal(ae_a, ae_b) == (name == "bagan")
    assert not torch.equal(d_a, d_b)


@pytest.mark.parametrize("name", RECIPES)
def test_gan_phase_starts_from_the_autoencoder_and_the_encodings_gaussians(name: str) -> None:
    recipe, data = _recipe(name, ema_beta=0.9)
    nets = recipe.networks
    head = _snapshot(nets["D"].head if name == "bagan" else nets["D"].linear)
    ctx = _context(recipe, "autoencoder", _batch(data))
    recipe.train_step(_batch(data), ctx)
    assert not bool(nets["class_latents"].fitted)
    recipe.start_phase("gan")

    decoder = _snapshot(nets["decoder"])
    assert _same(_snapshot(nets["G"]), decoder) and _same(_snapshot(nets["G_ema"]), decoder)
    assert _same(_snapshot(nets["D"].body), _snapshot(nets["E"].body))
    assert _same(_snapshot(nets["D"].head if name == "bagan" else nets["D"].linear), head)  # the head stays new

    latents = nets["class_latents"]
    nets["E"].eval()  # the fit encodes without dropout
    with torch.no_grad():
        for k in range(3):
            codes = nets["E"](data.images[data.labels == k]).double()
            torch.testing.assert_close(latents.mean[k].double(), codes.mean(0), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(latents.covariance[k].double(), torch.cov(codes.T), rtol=1e-4, atol=1e-7)
            factor = latents.scale_tril[k].double()
            assert torch.equal(factor, factor.tril()) and torch.isfinite(factor).all()
            scale = codes.var(0).mean()
            torch.testing.assert_close(factor @ factor.T, torch.cov(codes.T), rtol=0, atol=float(1e-3 * scale))
    assert torch.linalg.matrix_rank(latents.covariance[2].double(), rtol=1e-6) < TINY["latent_dim"]


def test_class_latents_sample_their_class_gaussian() -> None:
    recipe, data = _recipe("bagan")
    recipe.start_phase("gan")
    latents = recipe.networks["class_latents"]
    labels = torch.full((4000,), 0)
    z = recipe.draw_latents(labels, torch.Generator().manual_seed(5))
    noise = torch.randn(4000, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(z, latents.mean[0] + noise @ latents.scale_tril[0].T, rtol=1e-5, atol=1e-5)
    spread = latents.covariance[0].diagonal().sqrt()
    assert ((z.mean(0) - latents.mean[0]).abs() < 5 * spread / math.sqrt(4000)).all()
    torch.testing.assert_close(torch.cov(z.T), latents.covariance[0], rtol=0.15, atol=float(0.1 * spread.max() ** 2))

    normal, _ = _recipe("bagan-gp", latent_prior="normal")
    normal.start_phase("gan")
    drawn = normal.draw_latents(torch.full((3,), 2), torch.Generator().manual_seed(5))
    assert torch.equal(drawn, torch.randn(3, 6, generator=torch.Generator().manual_seed(5)))


def test_a_class_without_images_gets_the_pooled_gaussian() -> None:
    latents = ClassLatents(3, 2)
    codes = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 7.0], [1.0, 1.0]])
    missing = latents.fit(codes, torch.tensor([0, 0, 1, 0]))
    assert missing == [2]
    torch.testing.assert_close(latents.mean[2], codes.mean(0))
    torch.testing.assert_close(latents.covariance[1], torch.zeros(2, 2))  # one image: its mean, up to the jitter
    singular = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    factor = cholesky_with_jitter(singular)
    torch.testing.assert_close(factor @ factor.T, singular, rtol=0, atol=1e-4)


# --- through the trainer --------------------------------------------------------------------------------------


def _write_npz(path: Path, channels: int, size: int, labelled: bool = True) -> Path:
    data = _dataset(channels, size, counts=(14, 7, 3), seed=2)
    pixels = ((data.images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    arrays = {"images": pixels[:, 0] if channels == 1 else pixels.transpose(0, 2, 3, 1)}
    if labelled:
        arrays["labels"] = data.labels.numpy()
    np.savez(path, **arrays)
    return path


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("name", "channels", "size"), [("bagan", 1, 16), ("bagan-gp", 3, 16)])
def test_resume_inside_the_gan_phase_neither_refits_nor_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                name: str, channels: int, size: int) -> None:
    # The loss curves (matplotlib: 40% of these runs' time) are no part of what is tested here.
    monkeypatch.setattr("synthmed.viz.curves.plot_losses", lambda *args, **kwargs: None)
    calls: list[str] = []
    for method in ("_fit_class_latents", "_initialise_gan"):
        original = getattr(_BalancingGAN, method)

        def spy(self: _BalancingGAN, _original=original, _method=method) -> None:
            calls.append(_method)
            _original(self)

        monkeypatch.setattr(_BalancingGAN, method, spy)
    data = _write_npz(tmp_path / "toy.npz", channels, size)
    options = {**TRAIN, **_options(name, ae_steps=3), "ema_beta": 0.999}
    straight = synthmed.train(data, recipe=name, out=tmp_path / "straight", steps=6, progress=False, **options)
    assert calls == ["_fit_class_latents", "_initialise_gan"]
    rows = _losses(straight.run_dir)
    assert [r["phase"] for r in rows] == ["autoencoder"] * 3 + ["gan"] * 3
    assert rows[0]["loss_ae"] and not rows[0]["loss_d"] and rows[-1]["loss_d"] and not rows[-1]["loss_ae"]
    assert (straight.run_dir / "samples" / "step_00000006.png").is_file()

    synthmed.train(data, recipe=name, out=tmp_path / "split", steps=4, progress=False, **options)
    calls.clear()
    synthmed.train(resume_run=tmp_path / "split", steps=6, progress=False)
    assert calls == []  # resumed inside the GAN phase: the checkpoint already holds the Gaussians, G and D
    assert _losses(tmp_path / "split") == rows
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight.run_dir / "checkpoints"))[1]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints"))[1]
    assert a.keys() == b.keys() and "net/class_latents.scale_tril" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key

    model = synthmed.load(tmp_path / "split", device="cpu")
    assert model.conditional and model.class_names == ("0", "1", "2")
    latents = model.recipe.networks["class_latents"]
    torch.testing.assert_close(latents.mean, b["net/class_latents.mean"])
    images = model.sample(5, seed=7, labels=1)
    noise = torch.randn(5, TINY["latent_dim"], generator=torch.Generator().manual_seed(7))
    z = latents.mean[1] + noise @ latents.scale_tril[1].T
    torch.testing.assert_close(images, model.recipe.generate(z, label=torch.full((5,), 1)))
    assert images.shape == (5, channels, size, size)


def test_unlabelled_data_is_refused_in_one_line(tmp_path: Path) -> None:
    info = DataInfo(source="scans.npz", channels=1, height=16, width=16)
    for name in RECIPES:
        with pytest.raises(ConfigError, match="needs labelled images of at least 2 classes") as error:
            build_recipe(name, _options(name), info)
        assert "\n" not in str(error.value)
    data = _write_npz(tmp_path / "plain.npz", 1, 16, labelled=False)
    with pytest.raises(ConfigError, match="label") as error:
        synthmed.train(data, recipe="bagan", out=tmp_path / "run", steps=1, progress=False, **TRAIN)
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("name", "options", "size", "message"), [
    ("bagan", {"reconstruction": "l2"}, 16, "reconstruction must be one of mse, l1"),
    ("bagan", {"dropout": 1.0}, 16, r"dropout must be in \[0, 1\)"),
    ("bagan", {}, 20, r"image_size must be .* \(resize with --size\)"),
    ("bagan-gp", {"n_critic": 0}, 16, "n_critic must be at least 1"),
    ("bagan-gp", {"latent_prior": "uniform"}, 16, "latent_prior must be one of class, normal"),
    ("bagan-gp", {"diffaugment": "blur"}, 16, "unknown DiffAugment policy 'blur'"),
    ("bagan-gp", {"dropout": 0.3}, 16, "has no option"),
])
def test_bad_options_are_one_line_errors(name: str, options: dict[str, object], size: int, message: str) -> None:
    info = DataInfo(source="toy", channels=1, height=size, width=size, num_classes=2)
    with pytest.raises(ConfigError, match=message) as error:
        build_recipe(name, _options(name, **options), info)
    assert "\n" not in str(error.value)


def test_every_option_is_documented_with_the_papers_presets() -> None:
    for config in (BaganConfig, BaganGPConfig):
        assert {o.name for o in describe_options(config)} >= {"latent_dim", "ae_steps", "lr_g", "betas"}
    assert (BaganConfig().lr_g, BaganConfig().betas, BaganConfig().latent_dim) == (5e-5, (0.5, 0.999), 100)
    gp = BaganGPConfig()
    assert (gp.lr_g, gp.betas, gp.latent_dim, gp.n_critic, gp.gp_weight) == (2e-4, (0.5, 0.9), 128, 5, 10.0)
