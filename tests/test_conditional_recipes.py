"""Class-conditional recipes (conditional, acgan, cwgan-gp): one step, the wiring of labels and options, a trainer
run, refusals, and the acceptance test: samples of a briefly trained conditional generator are classified as the
class that was asked for by a classifier trained on the real images.

Networks are tiny (8-16 channels, 16-28 px) and the module runs single-threaded (see ``one_thread``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

import synthmed
from synthmed import losses as L
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn.conditional import (
    ConditionalBatchNorm,
    build_auxiliary_discriminator,
    build_conditional_generator,
    build_projection_discriminator,
)
from synthmed.recipes import RECIPES, build_recipe
from synthmed.recipes.base import ConditionalGenerativeRecipe
from synthmed.recipes.options import describe_options
from synthmed.recipes.step import StepContext

CLASSES = 3
TINY = {"g_channels": 8, "d_channels": 8, "latent_dim": 8}
BATCH = 8


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """On a busy 2-core machine two OpenMP threads per tiny step run 5-15x slower than one; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def info(channels: int = 1, size: int = 16, classes: int = CLASSES) -> DataInfo:
    return DataInfo(source="conditional-test", channels=channels, height=size, width=size, num_classes=classes)


def batch(channels: int = 1, size: int = 16, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(BATCH, channels, size, size, generator=gen) * 2 - 1,
            "label": torch.randint(0, CLASSES, (BATCH,), generator=gen)}


def make(name: str, seed: int = 0, channels: int = 1, size: int = 16, ema_beta: float = 0.0,
         **options) -> tuple[ConditionalGenerativeRecipe, StepContext]:
    """A tiny recipe on the CPU with its optimisers and a step context whose extra batches are recorded."""
    torch.manual_seed(seed)
    recipe = build_recipe(name, {**TINY, **options}, info(channels, size), ema_beta=ema_beta)
    ctx = StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers())
    ctx.drawn = []  # type: ignore[attr-defined]

    def draw() -> dict[str, torch.Tensor]:
        drawn = batch(channels, size, seed=100 + len(ctx.drawn))  # type: ignore[attr-defined]
        ctx.drawn.append(drawn)  # type: ignore[attr-defined]
        return drawn

    ctx.draw_batch = draw
    return recipe, ctx  # type: ignore[return-value]


def step(recipe: ConditionalGenerativeRecipe, ctx: StepContext, data: dict[str, torch.Tensor] | None = None,
         seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return recipe.train_step(data or batch(recipe.data_info.channels, recipe.data_info.height), ctx)


class Calls:
    """Records every forward call of a network: its inputs (image, labels, ...) and its outputs."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.args: list[tuple[torch.Tensor, ...]] = []
        self.outputs: list[tuple[torch.Tensor, ...]] = []
        net.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.args.append(tuple(a.detach().clone() for a in args))
        outputs = output if isinstance(output, tuple) else (output,)
        self.outputs.append(tuple(o.detach().float().clone() for o in outputs))


def count_optimizer_steps(ctx: StepContext) -> dict[str, int]:
    counts = dict.fromkeys(ctx.optimizers, 0)
    for name, optimizer in ctx.optimizers.items():
        optimizer.register_step_post_hook(lambda opt, args, kwargs, name=name: counts.__setitem__(name,
                                                                                               counts[name] + 1))
    return counts


# --- one step -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options", "channels", "size"), [
    ("conditional", {}, 1, 28),  # cBN generator, hinge + spectral norm, the 7-14-28 layout
    ("conditional", {"conditioning": "concat", "loss": "lsgan"}, 3, 16),
    ("conditional", {"arch": "resnet", "loss": "bce"}, 3, 32),
    ("acgan", {}, 1, 28),
    ("acgan", {}, 3, 16),
    ("cwgan-gp", {"n_critic": 2}, 1, 16),
])
def test_one_step_gives_its_losses_and_images_of_the_data_shape(name: str, options: dict, channels: int,
                                                                 size: int) -> None:
    recipe, ctx = make(name, channels=channels, size=size, ema_beta=0.9, **options)
    out = step(recipe, ctx)
    assert list(out) and set(out) == set(recipe.loss_names())
    for key, value in out.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    images = recipe.generate(torch.randn(5, recipe.latent_dim), label=2)
    assert images.shape == (5, channels, size, size) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    preview = recipe.preview(recipe.preview_inputs(12, seed=0))
    assert preview.grid.shape == (12, channels, size, size) and preview.nrow == 4  # 3 rows (classes) of 4
    assert preview.names == ("0", "1", "2")


@pytest.mark.parametrize("name", ["conditional", "acgan", "cwgan-gp"])
def test_a_step_under_bf16_autocast_gives_finite_fp32_losses(name: str) -> None:
    recipe, ctx = make(name, n_critic=1) if name == "cwgan-gp" else make(name)
    ctx.precision = "bf16"  # the GPU setting; CPU autocast runs the same casts
    for value in step(recipe, ctx).values():
        assert value.dtype == torch.float32 and torch.isfinite(value)


@pytest.mark.parametrize("conditioning", ["cbn", "concat", "multiply"])
def test_the_conditional_networks_take_volumes(conditioning: str) -> None:
    labels = torch.tensor([0, 1, 2, 1])
    G = build_conditional_generator("dcgan", conditioning, CLASSES, latent_dim=8, embed_dim=4, out_channels=1,
                                    image_size=16, base_channels=4, spatial_dims=3)
    volumes = G(torch.randn(4, 8), labels)
    assert volumes.shape == (4, 1, 16, 16, 16)
    D = build_projection_discriminator("dcgan", CLASSES, in_channels=1, image_size=16, base_channels=4, norm="layer",
                                       spectral_norm=True, spatial_dims=3)
    A = build_auxiliary_discriminator("dcgan", CLASSES, in_channels=1, image_size=16, base_channels=4, spatial_dims=3)
    assert D(volumes, labels).shape == (4,)
    assert [t.shape for t in A(volumes)] == [(4,), (4, CLASSES)]


def test_unknown_conditions_and_labels_out_of_range_are_refused() -> None:
    recipe, _ = make("acgan")
    z = torch.randn(2, recipe.latent_dim)
    with pytest.raises(ConfigError, match="takes only a label"):
        recipe.generate(z, mask=torch.zeros(2))
    with pytest.raises(ConfigError, match=r"labels must lie in 0\.\.2"):
        recipe.generate(z, label=torch.tensor([0, 3]))
    with pytest.raises(ConfigError, match="not one of this run's 3 classes"):
        recipe.generate(z, label=7)


# --- the labels are used --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), [
    ("conditional", {}), ("conditional", {"conditioning": "concat"}), ("acgan", {}), ("cwgan-gp", {}),
])
def test_the_generators_output_depends_on_the_requested_class(name: str, options: dict) -> None:
    recipe, _ = make(name, **options)
    cbn = [m for m in recipe.networks["G"].modules() if isinstance(m, ConditionalBatchNorm)]
    assert bool(cbn) == (name == "conditional" and not options), "cBN exactly where conditioning is cbn"
    with torch.no_grad():  # at initialisation every class's gain is 1 and bias 0: as if trained, make them differ
        for layer in cbn:
            layer.gain.weight.normal_(1.0, 0.2)
            layer.bias.weight.normal_(0.0, 0.2)
    z = torch.randn(4, recipe.latent_dim)
    as_zero, as_one = recipe.generate(z, label=0), recipe.generate(z, label=1)
    assert (as_zero - as_one).abs().mean() > 0.05 * as_zero.abs().mean()  # tiny at initialisation: relative
    torch.testing.assert_close(recipe.generate(z, label=0), as_zero)  # and nothing else varies


@pytest.mark.parametrize("name", ["conditional", "cwgan-gp"])
def test_the_projection_discriminators_output_depends_on_the_class(name: str) -> None:
    recipe, _ = make(name)
    D = recipe.networks["D"].eval()
    x = batch()["image"]
    with torch.no_grad():
        as_zero, as_one = D(x, torch.zeros(BATCH, dtype=torch.long)), D(x, torch.ones(BATCH, dtype=torch.long))
        logits, pooled = D(x, torch.zeros(BATCH, dtype=torch.long), return_features=True)
    assert as_zero.shape == (BATCH,) and not torch.allclose(as_zero, as_one)
    # Miyato & Koyama: the class enters only as <embed(y), phi(x)>, so two classes differ by exactly that.
    embed = D.embedding.weight
    torch.testing.assert_close(as_one - as_zero, pooled @ (embed[1] - embed[0]))
    torch.testing.assert_close(logits, as_zero)


@pytest.mark.parametrize("name", ["conditional", "acgan", "cwgan-gp"])
def test_fakes_are_generated_for_the_batchs_classes(name: str) -> None:
    recipe, ctx = make(name, n_critic=1) if name == "cwgan-gp" else make(name)
    made = Calls(recipe.networks["G"])
    data = batch()
    step(recipe, ctx, data)
    for _, labels in made.args:
        torch.testing.assert_close(labels, data["label"])


# --- each recipe's losses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("loss", "d_loss", "g_loss"), [
    ("hinge", L.d_loss_hinge, L.g_loss_hinge),
    ("bce", L.d_loss_bce, L.g_loss_nonsaturating),
    ("lsgan", L.d_loss_least_squares, L.g_loss_least_squares),
])
def test_the_loss_option_selects_the_conditional_recipes_losses(loss: str, d_loss: Callable,
                                                                g_loss: Callable) -> None:
    recipe, ctx = make("conditional", loss=loss)
    seen = Calls(recipe.networks["D"])
    out = step(recipe, ctx)
    (real,), (fake,), (fake_g,) = seen.outputs
    torch.testing.assert_close(out["loss_d"], d_loss(real, fake))
    torch.testing.assert_close(out["loss_g"], g_loss(fake_g))


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_acgan_class_weight_scales_the_cross_entropy_of_both_steps(weight: float) -> None:
    data = batch()
    without = step(*make("acgan", class_weight=0.0), data)
    recipe, ctx = make("acgan", class_weight=weight)
    seen = Calls(recipe.networks["D"])
    out = step(recipe, ctx, data)
    (_, real_classes), (_, fake_classes), (logits_g, classes_g) = seen.outputs
    labels = data["label"]
    # The auxiliary classifier's terms, by hand from what D returned; they are what the recipe reports.
    torch.testing.assert_close(out["ce_real"], F.cross_entropy(real_classes, labels))
    torch.testing.assert_close(out["ce_fake"], F.cross_entropy(fake_classes, labels))
    torch.testing.assert_close(out["ce_g"], F.cross_entropy(classes_g, labels))
    # Same weights and noise: the discriminator loss differs by exactly the weighted terms.
    torch.testing.assert_close(out["loss_d"] - without["loss_d"], weight * (out["ce_real"] + out["ce_fake"]))
    torch.testing.assert_close(out["loss_g"], L.g_loss_nonsaturating(logits_g) + weight * out["ce_g"])
    assert out["ce_real"] > 0 and out["ce_g"] > 0


def test_cwgan_gp_critic_steps_draw_labelled_batches_and_penalise_gradients() -> None:
    recipe, ctx = make("cwgan-gp")
    counts = count_optimizer_steps(ctx)
    seen = Calls(recipe.networks["D"])
    first = batch()
    out = step(recipe, ctx, first)
    assert counts == {"D": 5, "G": 1}, "the WGAN-GP preset: 5 critic steps per generator step"
    assert len(ctx.drawn) == 4, "each critic step after the first draws a fresh real batch"  # type: ignore[attr-defined]
    # Per critic step three critic calls: real, fake, interpolates (the penalty); each with that batch's labels.
    for i, data in enumerate([first, *ctx.drawn]):  # type: ignore[attr-defined]
        real_call, fake_call, penalty_call = seen.args[3 * i:3 * i + 3]
        torch.testing.assert_close(real_call[0], data["image"])
        for call in (real_call, fake_call, penalty_call):
            torch.testing.assert_close(call[1], data["label"])
    assert out["gp"] > 0


@pytest.mark.parametrize("gp_weight", [10.0, 3.0])
def test_cwgan_gp_critic_loss_is_wasserstein_plus_weighted_penalty(gp_weight: float) -> None:
    out = step(*make("cwgan-gp", n_critic=1, gp_weight=gp_weight))
    torch.testing.assert_close(out["loss_d"], out["d_fake"] - out["d_real"] + gp_weight * out["gp"])


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("conditional", {}, {"lr_g": 1e-4, "lr_d": 4e-4, "betas": (0.0, 0.9), "spectral_norm": True, "d_norm": "none"}),
    ("conditional", {"loss": "bce"}, {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999), "spectral_norm": False,
                                      "d_norm": "batch"}),
    ("acgan", {}, {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999), "d_norm": "batch", "class_weight": 1.0}),
    ("acgan", {"lr_d": 1e-3}, {"lr_g": 2e-4, "lr_d": 1e-3}),
    ("cwgan-gp", {}, {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.0, 0.9), "n_critic": 5, "gp_weight": 10.0,
                      "d_norm": "layer", "spectral_norm": False}),
])
def test_presets_are_resolved_into_the_config(name: str, options: dict, expected: dict) -> None:
    recipe, ctx = make(name, **options)
    for key, value in expected.items():
        assert getattr(recipe.config, key) == value, key
    assert ctx.optimizers["G"].param_groups[0]["lr"] == expected["lr_g"]
    assert ctx.optimizers["D"].param_groups[0]["lr"] == expected["lr_d"]
    spectral = any("parametrizations" in n for n, _ in recipe.networks["D"].named_parameters())
    assert spectral == bool(recipe.config.spectral_norm)


def test_every_option_is_documented() -> None:
    for name in ("conditional", "acgan", "cwgan-gp"):
        helps = {o.name: o.help for o in describe_options(RECIPES[name].Config)}
        assert {"arch", "latent_dim", "g_channels", "d_channels", "lr_g", "betas", "diffaugment"} <= set(helps)
        assert all(helps.values()), name
    assert "concatenated" in {o.name: o.help for o in describe_options(RECIPES["conditional"].Config)}["conditioning"]


def test_diffaugment_changes_what_the_discriminator_sees() -> None:
    recipe, ctx = make("conditional", diffaugment="translation,cutout")
    seen = Calls(recipe.networks["D"])
    data = batch()
    step(recipe, ctx, data)
    assert seen.args[0][0].shape == data["image"].shape and not torch.equal(seen.args[0][0], data["image"])


# --- sampling statistics --------------------------------------------------------------------------------------


def test_refresh_recalibrates_the_ema_generators_batchnorm_with_every_class() -> None:
    recipe, ctx = make("conditional", ema_beta=0.999)
    step(recipe, ctx)
    shadow = recipe.networks["G_ema"]
    assert any(name.endswith("gain.weight") for name, _ in shadow.named_parameters()), "EMA averages the gains"
    norms = [m.norm for m in shadow.modules() if isinstance(m, ConditionalBatchNorm)]
    before, mode = norms[0].running_mean.clone(), shadow.training
    classes = Calls(shadow)
    recipe.refresh_sampling_statistics()
    assert not torch.equal(norms[0].running_mean, before)
    labels = torch.cat([args[1] for args in classes.args])
    counts = torch.bincount(labels, minlength=CLASSES)
    assert counts.min() > 0 and counts.max() - counts.min() <= 1, "classes drawn in turn"
    assert shadow.training == mode, "the generator's mode is left as it was"


# --- refusals -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options", "classes", "size", "message"), [
    ("conditional", {}, 0, 16, "needs labelled images of at least 2 classes"),
    ("acgan", {}, 1, 16, "needs labelled images of at least 2 classes"),
    ("conditional", {"loss": "wgan-gp"}, 3, 16, "use --recipe cwgan-gp"),
    ("conditional", {"loss": "nope"}, 3, 16, "unknown loss 'nope'"),
    ("conditional", {"conditioning": "multiply"}, 3, 16, "conditioning must be cbn or concat"),
    ("cwgan-gp", {"d_norm": "batch"}, 3, 16, "must not use BatchNorm"),
    ("cwgan-gp", {"n_critic": 0}, 3, 16, "n_critic must be at least 1"),
    ("acgan", {"class_weight": -1.0}, 3, 16, "class_weight must be >= 0"),
    ("acgan", {"arch": "resnet", "d_norm": "batch"}, 3, 32, "d_norm does not apply"),
    ("acgan", {"arch": "vgg"}, 3, 16, "unknown arch 'vgg'"),
    ("conditional", {"diffaugment": "rotate"}, 3, 16, "unknown DiffAugment policy"),
    ("acgan", {}, 3, 20, r"image_size must be .* \(resize with --size\)"),
])
def test_bad_options_and_data_are_one_line_config_errors(name: str, options: dict, classes: int, size: int,
                                                         message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        build_recipe(name, {**TINY, **options}, info(size=size, classes=classes))
    assert "\n" not in str(caught.value)


# --- through the trainer --------------------------------------------------------------------------------------


def write_labelled_npz(path: Path, n: int = 48, labels: bool = True) -> Path:
    """``n`` grey 16 px images whose bright square sits left, right or top by class (string labels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (n, 16, 16), dtype=np.uint8)
    names = np.array(["left", "right", "top"])[np.arange(n) % 3]
    for i, name in enumerate(names):
        rows, cols = {"left": (slice(6, 10), slice(1, 5)), "right": (slice(6, 10), slice(11, 15)),
                      "top": (slice(1, 5), slice(6, 10))}[name]
        images[i, rows, cols] = 255
    arrays = {"images": images, "patient": np.arange(n)}  # one image per patient: the split needs no warning
    if labels:
        arrays["labels"] = names
    np.savez(path, **arrays)
    return path


TRAIN = {"batch_size": 8, "log_every": 2, "sample_every": 2, "checkpoint_every": 1000, "preview_count": 12,
         "device": "cpu", "g_channels": 8, "d_channels": 8, "latent_dim": 8}


@pytest.mark.parametrize("name", ["conditional", "acgan", "cwgan-gp"])
def test_a_training_run_previews_one_row_per_class_and_samples_by_class(tmp_path: Path, name: str) -> None:
    data = write_labelled_npz(tmp_path / "labelled.npz")
    options = {"n_critic": 2} if name == "cwgan-gp" else {}
    result = synthmed.train(data, recipe=name, out=tmp_path / "run", steps=2, progress=False, **TRAIN, **options)
    picture = Image.open(result.run_dir / "samples" / "step_00000002.png")
    scale, tile = 4, 16 + 2  # 16 px images enlarged 4x, 2 px padding
    assert picture.size == (scale * (4 * tile + 2), scale * (CLASSES * tile + 2)), "3 rows (classes) of 4"
    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())["recipe_options"]
    assert isinstance(recorded["lr_g"], float) and recorded["betas"] and recorded["d_norm"]

    model = synthmed.load(result.run_dir, device="cpu")
    assert model.conditional and model.class_names == ("left", "right", "top")
    images = model.sample(4, labels=1)
    assert images.shape == (4, 1, 16, 16) and images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(model.sample(4, labels="right"), images)
    assert not torch.equal(model.sample(4, labels=0), images)


def test_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    """cwgan-gp draws extra labelled batches inside a step: the stream's position must resume with it."""
    from synthmed.training import checkpoint as ckpt

    data = write_labelled_npz(tmp_path / "labelled.npz")
    options = {**TRAIN, "recipe": "cwgan-gp", "n_critic": 2, "progress": False}
    straight = synthmed.train(data, out=tmp_path / "straight", steps=4, **options).run_dir
    synthmed.train(data, out=tmp_path / "split", steps=2, **options)
    synthmed.train(resume_run=tmp_path / "split", steps=4, progress=False)
    assert (tmp_path / "split" / "losses.csv").read_text() == (straight / "losses.csv").read_text()
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight / "checkpoints"))[1]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints"))[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unlabelled_data_is_refused_before_a_run_directory(tmp_path: Path) -> None:
    data = write_labelled_npz(tmp_path / "plain.npz", labels=False)
    with pytest.raises(ConfigError, match="recipe 'acgan' needs 'label'") as caught:
        synthmed.train(data, recipe="acgan", out=tmp_path / "run", steps=2, progress=False, **TRAIN)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


# --- acceptance -----------------------------------------------------------------------------------------------


def blobs(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """An easy labelled set: a bright Gaussian blob on the left (class 0), right (1) or top (2), jittered."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    centres = torch.tensor([[0.5, 0.22], [0.5, 0.78], [0.22, 0.5]]) * size  # (row, column) per class
    centre = centres[labels] + 0.7 * torch.randn(n, 2, generator=gen)
    rows, cols = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    distance2 = (rows - centre[:, 0, None, None]) ** 2 + (cols - centre[:, 1, None, None]) ** 2
    images = 2 * torch.exp(-distance2 / 8.0) - 1 + 0.05 * torch.randn(n, size, size, generator=gen)
    return images.clamp(-1, 1).unsqueeze(1), labels


def train_pixel_classifier(images: torch.Tensor, labels: torch.Tensor) -> torch.nn.Module:
    """Logistic regression on the pixels of the real set."""
    torch.manual_seed(0)
    classifier = torch.nn.Linear(images[0].numel(), CLASSES)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(classifier(images.flatten(1)), labels).backward()
        optimizer.step()
    return classifier


@pytest.mark.parametrize(("name", "options", "steps"), [
    ("acgan", {}, 200),  # the DCGAN preset
    # Projection discriminator and cBN with hinge + spectral norm. Every class's gains start equal, and at the
    # preset's 1e-4 the classes take many hundred steps to part; 10x the learning rates keeps the test short.
    ("conditional", {"lr_g": 1e-3, "lr_d": 1e-3}, 300),
])
def test_samples_of_a_briefly_trained_generator_are_classified_as_the_requested_class(name: str, options: dict,
                                                                                      steps: int) -> None:
    from synthmed.training.ema import ema_beta, update_ema

    images, labels = blobs(384, seed=0)
    recipe, ctx = make(name, g_channels=16, d_channels=16, latent_dim=16, ema_beta=0.99, **options)
    gen = torch.Generator().manual_seed(1)

    def draw() -> dict[str, torch.Tensor]:
        index = torch.randint(0, images.shape[0], (32,), generator=gen)
        return {"image": images[index], "label": labels[index]}

    for i in range(steps):
        ctx.step = i
        recipe.train_step(draw(), ctx)
        update_ema(recipe.networks["G_ema"], recipe.networks["G"], ema_beta(i, 0.99))

    classifier = train_pixel_classifier(images, labels)
    held_out, held_out_labels = blobs(150, seed=5)
    with torch.no_grad():
        assert (classifier(held_out.flatten(1)).argmax(1) == held_out_labels).float().mean() > 0.95
        recipe.refresh_sampling_statistics()
        for k in range(CLASSES):
            predicted = classifier(recipe.sample(60, seed=3, labels=k).flatten(1)).argmax(1)
            accuracy = (predicted == k).float().mean().item()
            assert accuracy >= 0.8, f"class {k}: {accuracy:.2f} of its samples classified as {k} (chance 0.33)"
