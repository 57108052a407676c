"""The anomaly recipe (AnoGAN / f-AnoGAN) on tiny data: the latent search lowers its loss, each score equals its
documented parts, the encoder phase leaves G, its EMA copy and D bit-identical (and resumes exactly), the normal
training images are chosen as documented, and bad options or data are one-line errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import synthmed
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError, DataError
from synthmed.recipes import StepContext, build_recipe
from synthmed.recipes.anomaly import AnomalyGAN
from synthmed.training import checkpoint as ckpt

SIZE = 16
#: Tiny networks; one critic step per generator step keeps a GAN step at a few milliseconds.
TINY = {"latent_dim": 8, "g_channels": 8, "d_channels": 8, "n_critic": 1}
TRAIN = {"batch_size": 8, "log_every": 1, "sample_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 20,
         "device": "cpu", "split": "all"}
GAN_STEPS = 3
#: The trainer warns that split 'all' leaves no test images; these runs are never evaluated.
pytestmark = pytest.mark.filterwarnings("ignore:training on split 'all'")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """Networks this small gain nothing from threads, and the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_loss_curves(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loss curves (matplotlib, most of a tiny run's time) are no part of what is tested here.
    monkeypatch.setattr("synthmed.viz.curves.plot_losses", lambda *args, **kwargs: None)


# --- data -----------------------------------------------------------------------------------------------------
def _blobs(n: int, seed: int = 0) -> torch.Tensor:
    """Normal images: one soft blob at a random place, (n, 1, SIZE, SIZE) in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE).float(), torch.arange(SIZE).float(), indexing="ij")
    centres = 4 + (SIZE - 8) * torch.rand(n, 2, generator=gen)
    distance = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    return (2 * torch.exp(-distance / 12) - 1).unsqueeze(1)


def _with_lesions(images: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The images with a bright 4 x 4 square each (the anomaly) and its mask."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros_like(images)
    for i, (y, x) in enumerate(torch.randint(1, SIZE - 5, (images.shape[0], 2), generator=gen).tolist()):
        masks[i, :, y:y + 4, x:x + 4] = 1.0
    return torch.where(masks > 0, torch.ones_like(images), images), masks


def _write_npz(path: Path, n_normal: int = 24, n_anomalous: int = 16) -> Path:
    """Normal blobs with empty masks and lesioned blobs with their masks, interleaved, as uint8 + masks."""
    lesioned, lesion_masks = _with_lesions(_blobs(n_anomalous, seed=3))
    images = torch.cat([_blobs(n_normal), lesioned])
    masks = torch.cat([torch.zeros(n_normal, 1, SIZE, SIZE), lesion_masks])
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(4))
    pixels = ((images[order, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    np.savez(path, images=pixels, masks=masks[order, 0].to(torch.uint8).numpy())
    return path


def _info(num_classes: int = 0, class_names: tuple[str, ...] = ()) -> DataInfo:
    return DataInfo(source="toy", channels=1, height=SIZE, width=SIZE, num_classes=num_classes,
                    class_names=class_names)


def _train_gan(recipe: AnomalyGAN, images: torch.Tensor, steps: int, phase: str = "gan") -> None:
    """``steps`` recipe steps on random batches of ``images``, as the trainer runs them (no EMA)."""
    gen = torch.Generator().manual_seed(1)

    def draw() -> dict[str, torch.Tensor]:
        return {"image": images[torch.randperm(images.shape[0], generator=gen)[:8]]}

    recipe.start_phase(phase)
    ctx = StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers(), draw_batch=draw)
    for step in range(steps):
        ctx.step = step
        recipe.train_step(draw(), ctx)


@pytest.fixture(scope="module")
def trained() -> AnomalyGAN:
    """A generator trained for 150 steps on blobs (learning rates raised for so short a run), then an encoder
    trained for 30 steps against it; no EMA copy, so G is the generator the scores use."""
    torch.manual_seed(0)
    recipe = build_recipe("anomaly", {**TINY, "lr_g": 1e-3, "lr_d": 1e-3, "lr_e": 1e-3}, _info())
    images = _blobs(64)
    _train_gan(recipe, images, 150)  # type: ignore[arg-type]
    _train_gan(recipe, images, 30, phase="encoder")  # type: ignore[arg-type]
    return recipe  # type: ignore[return-value]


# --- scores ---------------------------------------------------------------------------------------------------
def test_the_latent_search_lowers_its_loss_and_restarts_only_help(trained: AnomalyGAN) -> None:
    x = _blobs(8, seed=5)
    history: list[torch.Tensor] = []
    single = trained.anogan_scores(x, steps=100, history=history, seed=3)
    assert len(history) == 100
    first, last = float(history[0]), float(history[-1])
    assert last < 0.85 * first, (first, last)  # measured: 79 -> 56
    assert float(torch.stack(history[-10:]).mean()) < float(torch.stack(history[:10]).mean())
    # Restart 0 of each image starts where the single search starts, so the best of three can only be as good.
    best = trained.anogan_scores(x, steps=100, restarts=3, seed=3)
    assert bool((best.score <= single.score + 1e-4 * single.score.abs()).all()), (best.score, single.score)
    assert bool((best.score < single.score - 1e-4).any())  # some other start ended lower


def test_anogan_scores_do_not_depend_on_the_batch_size(trained: AnomalyGAN) -> None:
    """Each image's starting points are its own (a stored threshold stays valid for another --batch-size)."""
    x = _blobs(6, seed=9)
    whole = trained.anogan_scores(x, steps=5, restarts=2, seed=4, batch_size=6)
    split = trained.anogan_scores(x, steps=5, restarts=2, seed=4, batch_size=4)
    torch.testing.assert_close(whole.score, split.score, rtol=1e-5, atol=1e-5)


def test_anogan_search_runs_inside_no_grad(trained: AnomalyGAN) -> None:
    x = _blobs(2, seed=10)
    with torch.no_grad():
        inside = trained.anogan_scores(x, steps=3, seed=2)
    torch.testing.assert_close(inside.score, trained.anogan_scores(x, steps=3, seed=2).score)


def test_images_searched_together_do_not_affect_each_other(trained: AnomalyGAN) -> None:
    x = _blobs(4, seed=6)
    changed = x.clone()
    changed[0] = _with_lesions(x[:1])[0][0]
    a = trained.anogan_scores(x, steps=10, seed=1)
    b = trained.anogan_scores(changed, steps=10, seed=1)
    torch.testing.assert_close(a.score[1:], b.score[1:], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a.score[0], b.score[0])


def _by_hand_features(recipe: AnomalyGAN, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return recipe.networks["D"].eval()(images, return_features=True)[1].float()


def test_fanogan_score_is_residual_plus_kappa_feature(trained: AnomalyGAN, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trained.config, "kappa", 0.5)
    x = torch.cat([_blobs(3, seed=7), _with_lesions(_blobs(3, seed=8))[0]])
    modes = {name: net.training for name, net in trained.networks.items()}
    scores = trained.fanogan_scores(x, batch_size=4)  # two batches
    assert {name: net.training for name, net in trained.networks.items()} == modes  # modes given back
    G, E = trained.networks["G"], trained.networks["E"]
    with torch.no_grad():
        reconstruction = G.eval()(E.eval()(x)).float()
    residual = (x - reconstruction).pow(2).mean(dim=(1, 2, 3))
    feature = (_by_hand_features(trained, x) - _by_hand_features(trained, reconstruction)).pow(2).mean(dim=1)
    for net, mode in zip(trained.networks.values(), modes.values(), strict=True):
        net.train(mode)
    torch.testing.assert_close(scores.residual, residual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.feature, feature, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.score, residual + 0.5 * feature, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scores.reconstruction, reconstruction.clamp(-1, 1))
    assert trained.score(x).score.shape == (6,)
    # The lesions raise the score: the generator never saw a bright square.
    assert float(scores.score[3:].mean()) > float(scores.score[:3].mean())


def test_anogan_score_is_the_weighted_sum_of_its_parts(trained: AnomalyGAN) -> None:
    x = _with_lesions(_blobs(4, seed=9))[0]
    lam = 0.3
    scores = trained.score(x, method="anogan", steps=15, lam=lam, restarts=2)
    torch.testing.assert_close(scores.score, (1 - lam) * scores.residual + lam * scores.feature)
    # Each part recomputed from the reconstruction returned (G's output is a tanh: the clamp changes nothing).
    reconstruction = scores.reconstruction
    residual = (x - reconstruction).abs().sum(dim=(1, 2, 3))
    feature = (_by_hand_features(trained, x) - _by_hand_features(trained, reconstruction)).abs().sum(dim=1)
    torch.testing.assert_close(scores.residual, residual, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores.feature, feature, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("call", "message"), [
    (lambda r: r.score(torch.zeros(2, 1, SIZE, SIZE), method="patchcore"), "method must be one of fanogan, anogan"),
    (lambda r: r.anogan_scores(torch.zeros(2, 1, SIZE, SIZE), steps=0), "steps >= 1"),
    (lambda r: r.anogan_scores(torch.zeros(2, 1, SIZE, SIZE), lam=1.5), "0 <= lambda <= 1"),
    (lambda r: r.anogan_scores(torch.zeros(2, 1, SIZE, SIZE), restarts=0), "restarts >= 1"),
    (lambda r: r.fanogan_scores(torch.zeros(2, 3, SIZE, SIZE)), r"images of shape \(3, 16, 16\)"),
    (lambda r: r.fanogan_scores(torch.zeros(2, 1, 32, 32)), "at 16 x 16 px"),
])
def test_bad_scoring_calls_are_one_line_errors(trained: AnomalyGAN, call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        call(trained)  # type: ignore[operator]
    assert "\n" not in str(error.value)


# --- the encoder phase through the trainer ------------------------------------------------------------------------
def _checkpoint(run: Path, step: int) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(run / "checkpoints" / f"step_{step:08d}.json")[1]


def _network(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """One network's state dict (parameters and buffers) from a checkpoint's tensors."""
    prefix = f"net/{name}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return bool(a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _train(data: Path, out: Path, steps: int, **options: object) -> Path:
    merged = {**TRAIN, **TINY, "gan_steps": GAN_STEPS, **options}
    return Path(synthmed.train(data, recipe="anomaly", out=out, steps=steps, progress=False, **merged).run_dir)


@pytest.mark.parametrize("ema_beta", [0.999, 0.0])
def test_the_encoder_phase_leaves_g_its_ema_and_d_bit_identical(tmp_path: Path, ema_beta: float) -> None:
    run = _train(_write_npz(tmp_path / "toy.npz"), tmp_path / "run", GAN_STEPS + 4, ema_beta=ema_beta)
    end_of_gan, first_encoder, last = (_checkpoint(run, s) for s in (GAN_STEPS, GAN_STEPS + 1, GAN_STEPS + 4))
    for name in ("G", "D"):  # parameters and buffers (batch-norm statistics), through every encoder step
        assert _same(_network(end_of_gan, name), _network(last, name)), name
    assert not _same(_network(first_encoder, "E"), _network(last, "E"))  # while E learnt
    assert not _same(_network(end_of_gan, "E"), _network(first_encoder, "E"))
    if ema_beta:
        # G_ema's weights are not averaged in the encoder phase; its batch-norm statistics are re-estimated once, as
        # the phase begins, and then kept.
        before, after = _network(_checkpoint(run, GAN_STEPS - 1), "G_ema"), _network(end_of_gan, "G_ema")
        assert not _same(before, after)  # the GAN phase does average (the test would see an update)
        assert _same(_network(first_encoder, "G_ema"), _network(last, "G_ema"))
        weights = {k for k in after if "running" not in k and "num_batches" not in k}
        assert all(torch.equal(after[k], _network(last, "G_ema")[k]) for k in weights)
    else:
        assert not any(k.startswith("net/G_ema.") for k in last)


@pytest.mark.parametrize("split_at", [GAN_STEPS + 2, GAN_STEPS, GAN_STEPS - 1])
def test_resume_inside_and_into_the_encoder_phase_is_exact(tmp_path: Path, split_at: int) -> None:
    """Resumed inside the encoder phase, at its first step (the statistics are re-estimated as in one run) and from
    the GAN phase: the same weights, optimiser states and losses as one run."""
    data = _write_npz(tmp_path / "toy.npz")
    straight = _train(data, tmp_path / "straight", GAN_STEPS + 4, kappa=0.5)
    _train(data, tmp_path / "split", split_at, kappa=0.5)
    synthmed.train(resume_run=tmp_path / "split", steps=GAN_STEPS + 4, progress=False)
    a, b = _checkpoint(straight, GAN_STEPS + 4), _checkpoint(tmp_path / "split", GAN_STEPS + 4)
    assert a.keys() == b.keys() and any(k.startswith("net/E.") for k in a)
    for key in a:  # networks (E included), optimiser states, RNG and batch stream
        assert torch.equal(a[key], b[key]), key
    rows = _losses(straight)
    assert _losses(tmp_path / "split") == rows
    assert [r["phase"] for r in rows] == ["gan"] * GAN_STEPS + ["encoder"] * 4
    for row in rows[GAN_STEPS:]:  # izif with kappa 0.5: loss_e = residual + 0.5 feature, both logged
        assert not row["loss_d"] and float(row["e_feature"]) > 0
        assert float(row["loss_e"]) == pytest.approx(float(row["e_residual"]) + 0.5 * float(row["e_feature"]))
    assert rows[0]["loss_d"] and not rows[0]["loss_e"]


def test_izi_logs_no_feature_term(tmp_path: Path) -> None:
    run = _train(_write_npz(tmp_path / "toy.npz"), tmp_path / "run", GAN_STEPS + 2, encoder_loss="izi",
                 checkpoint_every=1000)
    for row in _losses(run)[GAN_STEPS:]:
        assert float(row["e_feature"]) == 0.0 and float(row["loss_e"]) == float(row["e_residual"]) > 0


def test_a_loaded_run_scores_with_the_statistics_the_encoder_learnt_against(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    run = _train(_write_npz(tmp_path / "toy.npz"), tmp_path / "run", GAN_STEPS + 2, ema_beta=0.999,
                 checkpoint_every=1000)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an encoder-phase model must keep its saved statistics, not re-estimate them")

    # Re-estimating would match the saved values only on the same device and kernels as training.
    monkeypatch.setattr("synthmed.recipes.unconditional.recalibrate_batchnorm", refuse)
    model = synthmed.load(run, device="cpu")
    recipe = model.recipe
    assert isinstance(recipe, AnomalyGAN) and recipe.anomaly_generator() is recipe.networks["G_ema"]
    saved = _network(_checkpoint(run, GAN_STEPS + 2), "G_ema")
    loaded = {k: v.detach().contiguous() for k, v in recipe.networks["G_ema"].state_dict().items()}
    assert _same(saved, loaded)  # the checkpoint's statistics, untouched
    scores = recipe.fanogan_scores(_blobs(4, seed=2))
    assert scores.score.shape == (4,) and bool(torch.isfinite(scores.score).all())


def test_ema_pairs_and_statistics_by_phase() -> None:
    torch.manual_seed(0)
    recipe = build_recipe("anomaly", TINY, _info(), ema_beta=0.999)
    assert recipe.ema_pairs() == [("G", "G_ema")]
    norms = [m for m in recipe.networks["G_ema"].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    norms[0].running_mean.fill_(7.0)
    recipe.start_phase("encoder", resumed=True)  # resumed: the checkpoint's statistics stay
    assert recipe.ema_pairs() == [] and bool((norms[0].running_mean == 7.0).all())
    recipe.refresh_sampling_statistics()  # previews and sampling in the encoder phase keep them too
    assert bool((norms[0].running_mean == 7.0).all())
    recipe.start_phase("gan")
    recipe.start_phase("encoder")  # a fresh encoder phase re-estimates them once
    assert not bool((norms[0].running_mean == 7.0).any())


# --- normal images ---------------------------------------------------------------------------------------------------
def _dataset(masks: bool = True, labels: bool = False, all_lesioned: bool = False) -> ImageDataset:
    images = _blobs(6)
    lesion = _with_lesions(images)[1]
    empty = torch.tensor([True, False, True, False, False, True]) & (not all_lesioned)
    info = _info(2, ("benign", "malignant")) if labels else _info()
    return ImageDataset(images=images, info=info,
                        masks=torch.where(empty.view(-1, 1, 1, 1), torch.zeros_like(lesion), lesion) if masks else None,
                        labels=torch.tensor([0, 1, 1, 0, 1, 0]) if labels else None)


def _prepared(data: ImageDataset, **options: object) -> tuple[ImageDataset, AnomalyGAN]:
    recipe = build_recipe("anomaly", {**TINY, **options}, data.info)
    return recipe.prepare_data(data), recipe  # type: ignore[return-value]


def test_normal_images_are_the_empty_masks_or_the_named_class() -> None:
    data = _dataset(labels=True)
    kept, recipe = _prepared(data)  # auto with masks: the empty masks, even with labels
    assert torch.equal(kept.images, data.images[[0, 2, 5]]) and "3 of 6" in recipe.normal_description
    assert torch.equal(_prepared(data, normal="empty-mask")[0].images, data.images[[0, 2, 5]])
    assert len(_prepared(data, normal="all")[0]) == 6
    kept, recipe = _prepared(data, normal="benign")
    assert torch.equal(kept.images, data.images[[0, 3, 5]]) and "class benign" in recipe.normal_description
    assert torch.equal(_prepared(data, normal="1")[0].images, data.images[[1, 2, 4]])
    assert len(_prepared(_dataset(masks=False))[0]) == 6  # auto without masks: every image


@pytest.mark.parametrize(("data", "options", "error", "message"), [
    (dict(all_lesioned=True), {}, DataError, "has no normal training images"),
    (dict(labels=True), {"normal": "tumour"}, ConfigError, r"not auto, all, empty-mask or a class .*benign, malignant"),
    (dict(labels=True), {"normal": "2"}, ConfigError, "not auto, all, empty-mask or a class"),
    (dict(masks=False), {"normal": "empty-mask"}, ConfigError, "normal='empty-mask' needs masks"),
    (dict(masks=False), {"normal": "benign"}, ConfigError, "names a class, but toy has no class labels"),
])
def test_bad_normal_choices_are_one_line_errors(data: dict[str, bool], options: dict[str, object],
                                                error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as raised:
        _prepared(_dataset(**data), **options)
    assert "\n" not in str(raised.value)


def test_no_normal_images_stops_before_the_run_directory(tmp_path: Path) -> None:
    data = _write_npz(tmp_path / "lesions.npz", n_normal=0)
    with pytest.raises(DataError, match="no normal training images") as raised:
        _train(data, tmp_path / "run", 2)
    assert "\n" not in str(raised.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(("options", "message"), [
    ({"encoder_loss": "mse"}, "encoder_loss must be one of izif, izi"),
    ({"e_optimizer": "sgd"}, "e_optimizer must be rmsprop or adam"),
    ({"pad_to": 32}, "pad_to is not available with the anomaly recipe"),
    ({"kappa": -1.0}, r"kappa must be 0 or more \(got -1.0\)"),
    ({"lr_e": 0.0}, "lr_e must be positive"),
    ({"gan_steps": -1}, "gan_steps must be 0 or more"),
    ({"e_channels": 0}, "e_channels must be at least 1"),
])
def test_bad_options_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        build_recipe("anomaly", {**TINY, **options}, _info())
    assert "\n" not in str(error.value)


def test_adam_encoder_and_option_presets() -> None:
    recipe = build_recipe("anomaly", {**TINY, "e_optimizer": "adam", "lr_e": 2e-4}, _info())
    optimizer = recipe.configure_optimizers()["E"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 2e-4
    assert isinstance(build_recipe("anomaly", TINY, _info()).configure_optimizers()["E"], torch.optim.RMSprop)
    config = recipe.config
    assert (config.loss, config.d_norm, config.kappa, config.encoder_loss) == ("wgan-gp", "layer", 1.0, "izif")


@pytest.mark.parametrize(("size", "channels"), [(64, 1), (128, 3)])
def test_issue_sizes_build_score_and_take_one_encoder_step(size: int, channels: int) -> None:
    """64 and 128 px, 1 or 3 channels (the issue's sizes): networks build, an encoder step runs, scores have the
    shapes the maps need."""
    info = DataInfo(source="sizes", channels=channels, height=size, width=size, split="train")
    recipe = build_recipe("anomaly", {**TINY, "gan_steps": 0}, info)
    optimizers = recipe.configure_optimizers()
    recipe.start_phase("encoder")
    x = torch.rand(2, channels, size, size) * 2 - 1
    ctx = StepContext(device=torch.device("cpu"), optimizers=optimizers)
    losses = recipe.train_step({"image": x}, ctx)
    assert torch.isfinite(losses["loss_e"])
    scores = recipe.fanogan_scores(x)
    assert scores.score.shape == (2,) and scores.reconstruction.shape == x.shape
