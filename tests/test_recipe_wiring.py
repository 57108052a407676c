"""How the unconditional recipe wires its options into one training step.

Each test observes the effect of one option on the step it changes (the discriminator's targets, what the
discriminator sees, the learning rate an optimiser holds, the composition of a loss, the number of critic steps)
and fails when the recipe ignores the option. The pieces themselves (each loss against a hand-computed case) are
pinned in tests/test_losses.py; here only their wiring is.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from synthmed import losses as L
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn import MinibatchStdDev
from synthmed.recipes import build_recipe
from synthmed.recipes.base import Recipe
from synthmed.recipes.step import StepContext
from synthmed.recipes.unconditional import pack_samples

INFO = DataInfo(source="wiring-test", channels=1, height=32, width=32)
TINY = {"g_channels": 8, "d_channels": 8, "latent_dim": 8, "diffaugment": ""}  # each switch alone
BATCH = 8


def make(seed: int = 0, **options) -> tuple[Recipe, StepContext]:
    """A tiny recipe on the CPU with its optimisers and a step context whose extra batches are counted."""
    torch.manual_seed(seed)
    recipe = build_recipe("unconditional", {**TINY, **options}, INFO)
    ctx = StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers())
    ctx.batches_drawn = 0  # type: ignore[attr-defined]

    def draw() -> dict[str, torch.Tensor]:
        ctx.batches_drawn += 1  # type: ignore[attr-defined]
        return {"image": images(seed=100 + ctx.batches_drawn)}  # type: ignore[attr-defined]

    ctx.draw_batch = draw
    return recipe, ctx


def images(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(BATCH, 1, 32, 32, generator=gen) * 2 - 1


class Calls:
    """Records every forward call of a network: its first input and its output (logits, or the tuple)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        net.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.inputs.append(args[0].detach().clone())
        logits = output[0] if isinstance(output, tuple) else output
        self.outputs.append(logits.detach().float().reshape(-1).clone())


def step(recipe: Recipe, ctx: StepContext, batch: torch.Tensor | None = None, seed: int = 7,
         at: int = 0) -> dict[str, torch.Tensor]:
    ctx.step = at
    torch.manual_seed(seed)
    return recipe.train_step({"image": images() if batch is None else batch}, ctx)


def d_step_logits(recipe: Recipe, **kwargs) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One step; returns its losses and the discriminator's logits on the real and the fake batch."""
    recipe_, ctx = recipe if isinstance(recipe, tuple) else (recipe, None)
    calls = Calls(recipe_.networks["D"])
    out = step(recipe_, ctx, **kwargs)
    return out, calls.outputs[0], calls.outputs[1]


D_LOSSES: dict[str, Callable] = {"bce": L.d_loss_bce, "lsgan": L.d_loss_least_squares}


# --- the discriminator's targets --------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["bce", "lsgan"])
def test_label_smoothing_sets_the_real_target(loss: str) -> None:
    out, real, fake = d_step_logits(make(loss=loss, label_smoothing=0.2))
    smoothed = D_LOSSES[loss](real, fake, 0.8, 0.0)
    plain = D_LOSSES[loss](real, fake, 1.0, 0.0)
    torch.testing.assert_close(out["loss_d"], smoothed)
    assert not torch.allclose(out["loss_d"], plain), "label smoothing had no effect on the discriminator loss"


@pytest.mark.parametrize("loss", ["bce", "lsgan"])
def test_without_label_options_the_targets_are_one_and_zero(loss: str) -> None:
    out, real, fake = d_step_logits(make(loss=loss))
    torch.testing.assert_close(out["loss_d"], D_LOSSES[loss](real, fake, 1.0, 0.0))


def test_label_flips_swap_the_targets() -> None:
    # With a flip probability this close to 1 every target of the 8 samples flips (seeded: it does here).
    out, real, fake = d_step_logits(make(label_flip=0.999))
    torch.testing.assert_close(out["loss_d"], L.d_loss_bce(real, fake, 0.0, 1.0))


def test_label_noise_jitters_the_targets_within_its_range() -> None:
    a = 0.5
    out, real, fake = d_step_logits(make(label_noise=a))
    # BCE with logits is linear in the target: softplus(x) - t * x; each target lies in its noisy range.
    def bounds(x: torch.Tensor, lo: float, hi: float) -> tuple[torch.Tensor, torch.Tensor]:
        at_lo, at_hi = F.softplus(x) - lo * x, F.softplus(x) - hi * x
        return torch.minimum(at_lo, at_hi).mean(), torch.maximum(at_lo, at_hi).mean()

    real_lo, real_hi = bounds(real, 1 - a, 1.0)
    fake_lo, fake_hi = bounds(fake, 0.0, a)
    assert real_lo + fake_lo <= out["loss_d"] <= real_hi + fake_hi
    assert not torch.allclose(out["loss_d"], L.d_loss_bce(real, fake, 1.0, 0.0)), "label noise was ignored"


# --- what the discriminator sees --------------------------------------------------------------------------


def test_instance_noise_is_added_to_the_discriminator_input_and_annealed() -> None:
    recipe, ctx = make(instance_noise=0.3, instance_noise_steps=10)
    batch = images()
    calls = Calls(recipe.networks["D"])
    step(recipe, ctx, batch, at=5)  # sigma = 0.3 * (1 - 5 / 10)
    added = calls.inputs[0] - batch
    assert added.std().item() == pytest.approx(0.15, rel=0.05)
    assert added.mean().abs().item() < 0.01
    calls.inputs.clear()
    step(recipe, ctx, batch, at=10)  # annealed to zero
    torch.testing.assert_close(calls.inputs[0], batch, rtol=0, atol=0)


def test_without_instance_noise_or_diffaugment_the_discriminator_sees_the_batch() -> None:
    recipe, ctx = make()
    batch = images()
    calls = Calls(recipe.networks["D"])
    fakes = Calls(recipe.networks["G"])
    step(recipe, ctx, batch)
    torch.testing.assert_close(calls.inputs[0], batch, rtol=0, atol=0)
    assert fakes.inputs, "the generator was never called"


def test_diffaugment_transforms_real_and_fake_inputs_of_the_discriminator() -> None:
    recipe, ctx = make(diffaugment="translation,cutout")
    batch = images()
    seen = Calls(recipe.networks["D"])
    made = Calls(recipe.networks["G"])
    generated: list[torch.Tensor] = []
    recipe.networks["G"].register_forward_hook(lambda m, a, out: generated.append(out.detach().clone()))
    step(recipe, ctx, batch)
    assert made.inputs
    assert seen.inputs[0].shape == batch.shape and not torch.equal(seen.inputs[0], batch), "real not augmented"
    assert not torch.equal(seen.inputs[1], generated[0]), "fake not augmented"


def test_flip_mirrors_some_real_images_and_leaves_the_fakes_alone() -> None:
    recipe, ctx = make(flip=True)
    batch = images()
    seen = Calls(recipe.networks["D"])
    generated: list[torch.Tensor] = []
    recipe.networks["G"].register_forward_hook(lambda m, a, out: generated.append(out.detach().clone()))
    step(recipe, ctx, batch)
    real_in = seen.inputs[0]
    flipped = [torch.equal(real_in[i], batch[i].flip(-1)) for i in range(BATCH)]
    kept = [torch.equal(real_in[i], batch[i]) for i in range(BATCH)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    torch.testing.assert_close(seen.inputs[1], generated[0], rtol=0, atol=0)


def test_flip_mirrors_every_critic_batch_and_feature_matching_sees_the_mirrored_batch() -> None:
    def mirrored_rows(seen: torch.Tensor, batch: torch.Tensor) -> list[bool]:
        flipped = [torch.equal(seen[i], batch[i].flip(-1)) for i in range(BATCH)]
        assert all(f or torch.equal(seen[i], batch[i]) for i, f in enumerate(flipped)), "not a mirror of the batch"
        return flipped

    recipe, ctx = make(flip=True, n_critic=2)
    seen = Calls(recipe.networks["D"])
    step(recipe, ctx, images())
    assert any(mirrored_rows(seen.inputs[2], images(seed=101)))  # the second critic step's own batch
    recipe, ctx = make(flip=True, feature_matching=1.0)
    seen = Calls(recipe.networks["D"])
    step(recipe, ctx, images())
    assert any(mirrored_rows(seen.inputs[0], images()))
    torch.testing.assert_close(seen.inputs[-1], seen.inputs[0], rtol=0, atol=0)  # the real side of the matching


def test_flip_mirrors_the_image_inside_an_uneven_padding() -> None:
    recipe, _ = make(flip=True)
    recipe.train_size, recipe.data_size = 11, 8  # as pad_to=11 on 8 px data: 1 column before, 2 after
    image = torch.arange(8.0).expand(BATCH, 1, 11, 8)
    framed = F.pad(image, (1, 2), value=-1.0)
    torch.manual_seed(0)
    out = recipe._mirror(framed)
    assert (out[..., :1] == -1).all() and (out[..., 9:] == -1).all(), "the padding stays where it was"
    windows = out[..., 1:9]
    flipped = [torch.equal(windows[i], image[i].flip(-1)) for i in range(BATCH)]
    assert any(flipped) and not all(flipped)
    assert all(f or torch.equal(windows[i], image[i]) for i, f in enumerate(flipped))


def test_lr_decay_start_takes_both_rates_linearly_towards_zero_over_the_rest_of_the_run() -> None:
    recipe, ctx = make(lr_decay_start=0.5)
    ctx.total_steps = 10
    cfg = recipe.config
    rates = {}
    for at in (0, 5, 8, 9):  # step 9 is the last of a 10-step run (steps count from 0)
        step(recipe, ctx, at=at)
        rates[at] = (ctx.optimizers["G"].param_groups[0]["lr"], ctx.optimizers["D"].param_groups[0]["lr"])
    assert rates[0] == rates[5] == (cfg.lr_g, cfg.lr_d) and cfg.lr_d != cfg.lr_g
    assert rates[8] == pytest.approx((0.4 * cfg.lr_g, 0.4 * cfg.lr_d))
    assert rates[9] == pytest.approx((0.2 * cfg.lr_g, 0.2 * cfg.lr_d))  # 1 / ((1 - 0.5) * 10)
    constant, ctx = make()  # the default, 1.0: the rates never move
    ctx.total_steps = 10
    step(constant, ctx, at=10)
    assert ctx.optimizers["G"].param_groups[0]["lr"] == constant.config.lr_g
    with pytest.raises(ConfigError, match="lr_decay_start"):
        make(lr_decay_start=1.5)


def test_lecam_adds_its_weighted_penalty_anchored_at_the_running_means() -> None:
    recipe, ctx = make(lecam=0.5, lecam_decay=0.9)
    out, real, fake = d_step_logits((recipe, ctx))
    # First step: the anchors are this batch's means.
    first = L.lecam_penalty(real, fake, real.mean(), fake.mean())
    torch.testing.assert_close(out["lecam"], first)
    torch.testing.assert_close(out["loss_d"], L.d_loss_bce(real, fake) + 0.5 * first)
    anchors = recipe.lecam_anchors.values.clone()
    out, real, fake = d_step_logits((recipe, ctx), seed=8)
    a_r, a_f = 0.9 * anchors + 0.1 * torch.stack([real.mean(), fake.mean()])
    torch.testing.assert_close(out["lecam"], L.lecam_penalty(real, fake, a_r, a_f))
    assert set(recipe.extra_state()) == {"lecam/values", "lecam/updates"}
    plain, _ = make()
    assert plain.extra_state() == {} and "lecam" not in plain.loss_names()
    # The penalty reaches the discriminator's weights: the same step with and without it ends elsewhere.
    weights = {}
    for weight in (0.0, 0.5):
        recipe, ctx = make(lecam=weight)
        step(recipe, ctx)
        weights[weight] = torch.cat([p.detach().reshape(-1) for p in recipe.networks["D"].parameters()])
    assert not torch.equal(weights[0.0], weights[0.5])
    recipe, ctx = make(lecam=0.5, loss="wgan-gp", n_critic=3)
    step(recipe, ctx)
    assert recipe.lecam_anchors.updates == 3 and recipe.lecam_anchors.values.dtype == torch.float32
    for bad in ({"lecam": -1.0}, {"lecam": 0.3, "lecam_decay": 1.0}):
        with pytest.raises(ConfigError, match="lecam"):
            make(**bad)


@pytest.mark.parametrize(("size", "options", "expected"), [
    (32, {}, 0.0),  # small images: the two-minute default is measured without it
    (64, {}, 0.1),  # bce from 64 px: the presets alone let the discriminator win there
    (32, {"pad_to": 64}, 0.1),  # the size the networks train at decides
    (64, {"lecam": 0.0}, 0.0),  # an explicit choice wins
    (64, {"lecam": 0.3}, 0.3),
    (64, {"loss": "hinge"}, 0.0),  # measured for bce only
])
def test_lecam_is_on_for_bce_from_64_px_unless_chosen(size: int, options: dict, expected: float) -> None:
    info = DataInfo(source="preset-test", channels=1, height=size, width=size)
    recipe = build_recipe("unconditional", {**TINY, **options}, info)
    assert recipe.config.lecam == expected
    assert ("lecam" in recipe.loss_names()) == (expected > 0)


def test_the_anomaly_recipe_keeps_lecam_off_at_64_px() -> None:
    # Its studies (docs/anomaly.md) were measured without LeCam; the unconditional preset must not leak into them.
    from synthmed.recipes.anomaly import AnomalyConfig, AnomalyGAN

    info = DataInfo(source="preset-test", channels=1, height=64, width=64)
    for loss in ("bce", "wgan-gp"):
        assert AnomalyGAN(AnomalyConfig(loss=loss, g_channels=8, d_channels=8), info).config.lecam == 0.0


def test_a_discriminator_that_has_won_is_reported_once() -> None:
    import warnings

    from synthmed.recipes.unconditional import CollapseWatch

    def run(loss: float, steps: int, **options) -> list[str]:
        recipe, ctx = make(**options)
        recipe.collapse_watch = CollapseWatch(every=2, checks=3, advice=recipe.collapse_watch.advice)
        recipe._d_loss = lambda real, fake: real.sum() * 0 + loss  # the adversarial part the watch reads
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for at in range(steps):
                step(recipe, ctx, at=at)
        return [str(w.message) for w in caught if "discriminator has won" in str(w.message)]

    said = run(0.001, 12)  # checks at steps 0, 2, 4 (the third in a row warns), 6, 8, 10
    assert len(said) == 1 and said[0].startswith("step 4:") and "lecam=0.1" in said[0]
    with_lecam = run(0.001, 12, lecam=0.5)  # LeCam's own term does not hide a win
    assert len(with_lecam) == 1 and "a larger -o lecam (now 0.5)" in with_lecam[0]
    assert not run(0.5, 12)  # 0.5 is no win
    assert not run(0.001, 4)  # steps 0-3: two checks in a row are not yet a collapse


def test_minibatch_discrimination_couples_the_samples_of_a_batch() -> None:
    def sample_zero_depends_on_sample_one(**options) -> bool:
        recipe, _ = make(**options)
        d = recipe.networks["D"].eval()  # eval: batch norm uses running statistics, so only the layer couples
        x = images()
        y = x.clone()
        y[1] = -y[1]
        with torch.no_grad():
            return not torch.allclose(d(x)[0], d(y)[0])

    assert sample_zero_depends_on_sample_one(minibatch_discrimination=True)
    assert not sample_zero_depends_on_sample_one(minibatch_discrimination=False)


def test_minibatch_std_puts_the_layer_in_the_discriminator() -> None:
    recipe, ctx = make(minibatch_std=4)
    layers = [m for m in recipe.networks["D"].modules() if isinstance(m, MinibatchStdDev)]
    assert len(layers) == 1 and layers[0].group_size == 4 and recipe.config.minibatch_std == 4
    out = step(recipe, ctx)
    assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    plain, _ = make()
    assert plain.config.minibatch_std == 0  # off by default: existing runs build the same discriminator
    assert not any(isinstance(m, MinibatchStdDev) for m in plain.networks["D"].modules())


@pytest.mark.parametrize(("options", "message"), [
    ({"minibatch_std": 1}, r"^minibatch_std is 0 \(off\) or a group of at least 2 samples \(got 1\)$"),
    ({"minibatch_std": -2}, r"^minibatch_std is 0 \(off\) or a group of at least 2 samples \(got -2\)$"),
    ({"minibatch_std": 4, "loss": "wgan-gp"},
     "^minibatch_std couples samples, which breaks WGAN-GP's per-sample penalty$"),
    ({"minibatch_std": 4, "minibatch_discrimination": True},
     "^minibatch_std and minibatch_discrimination do not combine; choose one$"),
])
def test_minibatch_std_refusals_are_one_line_config_errors(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make(**options)


def test_pack_samples_joins_consecutive_samples_along_channels_by_hand() -> None:
    x = torch.arange(5 * 2 * 2 * 2, dtype=torch.float32).reshape(5, 2, 2, 2)  # 5 RGB-like samples of 2 channels
    packed = pack_samples(x, 2)
    assert packed.shape == (2, 4, 2, 2)  # sample 4 is the remainder and is left out
    torch.testing.assert_close(packed[0], torch.cat([x[0], x[1]]), rtol=0, atol=0)
    torch.testing.assert_close(packed[1], torch.cat([x[2], x[3]]), rtol=0, atol=0)
    assert pack_samples(x, 1) is x
    grey = torch.rand(6, 1, 4, 4).contiguous(memory_format=torch.channels_last)
    three = pack_samples(grey, 3)
    assert three.shape == (2, 3, 4, 4) and three.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(three[1, 2], grey[5, 0], rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"^pack=4 needs batches of at least 4 samples \(got 3\)$"):
        pack_samples(x[:3], 4)


def test_pack_makes_the_discriminator_judge_groups_in_both_steps() -> None:
    recipe, ctx = make(pack=2)
    first_conv = next(m for m in recipe.networks["D"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 2
    batch = images()
    calls = Calls(recipe.networks["D"])
    generated: list[torch.Tensor] = []
    recipe.networks["G"].register_forward_hook(lambda m, a, out: generated.append(out.detach().clone()))
    out = step(recipe, ctx, batch)
    assert [tuple(x.shape) for x in calls.inputs] == [(BATCH // 2, 2, 32, 32)] * 3  # real, fake, generator step
    torch.testing.assert_close(calls.inputs[0], pack_samples(batch, 2), rtol=0, atol=0)
    torch.testing.assert_close(calls.inputs[1], pack_samples(generated[0], 2), rtol=0, atol=0)
    assert all(len(logits) == BATCH // 2 for logits in calls.outputs)
    assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    plain, _ = make()
    assert plain.config.pack == 1  # off by default: existing runs build the same discriminator


@pytest.mark.parametrize("options", [{"pack": 2, "feature_matching": 1.0}, {"pack": 2, "r1_weight": 1.0},
                                     {"pack": 2, "loss": "wgan-gp", "n_critic": 2}, {"pack": 3, "minibatch_std": 2}])
def test_pack_combines_with_the_penalties_and_feature_matching(options: dict) -> None:
    recipe, ctx = make(**options)
    out = step(recipe, ctx)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_pack_below_one_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^pack is the number of samples the discriminator judges together, "
                                          r"at least 1 \(got 0\)$"):
        make(pack=0)


def test_mode_seeking_adds_its_term_on_the_generators_own_images() -> None:
    plain, plain_ctx = make(diffaugment="translation", mode_seeking=0.0)
    seeking, seeking_ctx = make(mode_seeking=0.5, diffaugment="translation")  # the term sees G's images, not D's
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    seeking.networks["G"].register_forward_hook(
        lambda m, args, out: captured.append((args[0].detach().clone(), out.detach().clone())))
    without, with_term = step(plain, plain_ctx), step(seeking, seeking_ctx)
    (z, generated), = captured  # one generator pass serves both steps
    expected = L.mode_seeking_loss(generated, z)
    torch.testing.assert_close(with_term["mode_seeking"], expected)
    assert set(with_term) == set(seeking.loss_names()) and set(without) == set(plain.loss_names())  # all logged
    torch.testing.assert_close(with_term["loss_g"], without["loss_g"] + 0.5 * expected)
    torch.testing.assert_close(with_term["loss_d"], without["loss_d"])  # the discriminator's step is untouched
    changed = [not torch.equal(a, b) for a, b in zip(plain.networks["G"].parameters(),
                                                      seeking.networks["G"].parameters(), strict=True)]
    assert any(changed), "the term must reach the generator's update"
    # Off by default: a bce preset below 64 px in session 10, withdrawn in session 11 when it made LGG FLAIR and PH2
    # at 28 px worse (docs/default-quality.md).
    assert make()[0].config.mode_seeking == 0.0
    assert make(loss="hinge")[0].config.mode_seeking == 0.0
    at_64 = build_recipe("unconditional", TINY, DataInfo(source="wiring-test", channels=1, height=64, width=64))
    assert at_64.config.mode_seeking == 0.0  # LGG FLAIR collapsed to stripes with it at 64 px (session 10)


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_mode_seeking_weight_below_zero_is_a_one_line_config_error(weight: float) -> None:
    with pytest.raises(ConfigError, match=r"^mode_seeking is a weight >= 0 \(got (-1.0|nan)\)$"):
        make(mode_seeking=weight)


def test_mode_seeking_refuses_a_batch_of_one() -> None:
    recipe, ctx = make(mode_seeking=1.0)
    with pytest.raises(ConfigError, match="at least 2 samples"):
        step(recipe, ctx, batch=images()[:1])


# --- optimisers and step counts ---------------------------------------------------------------------------


def learning_rates(**options) -> tuple[float, float]:
    _, ctx = make(**options)
    return ctx.optimizers["G"].param_groups[0]["lr"], ctx.optimizers["D"].param_groups[0]["lr"]


def test_ttur_gives_the_discriminator_four_times_the_generators_learning_rate() -> None:
    assert learning_rates(loss="bce") == (2e-4, 8e-4)  # TTUR is the recipe's default for bce (issue 16)
    assert learning_rates(loss="bce", ttur=False) == (2e-4, 2e-4)  # DCGAN's equal rates on request
    assert learning_rates(loss="bce", ttur=True) == (2e-4, 8e-4)
    assert learning_rates(loss="bce", ttur=True, lr_g=1e-4) == (1e-4, 4e-4)
    assert learning_rates(loss="bce", ttur=True, lr_d=3e-4) == (2e-4, 3e-4)  # an explicit lr_d wins
    assert learning_rates(loss="hinge") == (1e-4, 4e-4)  # the hinge preset (SAGAN)
    assert learning_rates(loss="lsgan") == (2e-4, 2e-4)  # no TTUR default outside bce: it was measured for bce only
    assert learning_rates(loss="wgan-gp") == (1e-4, 1e-4)


def test_the_learning_rate_an_optimiser_holds_is_the_one_it_steps_with() -> None:
    recipe, ctx = make(loss="bce", ttur=True, lr_g=1e-3, betas=(0.0, 0.99))
    before = {name: [p.detach().clone() for p in recipe.networks[name].parameters()] for name in ("G", "D")}
    step(recipe, ctx)
    for name, lr in (("G", 1e-3), ("D", 4e-3)):
        moved = max((p.detach() - b).abs().max().item()
                    for p, b in zip(recipe.networks[name].parameters(), before[name], strict=True))
        # Adam's first step moves each weight by about lr (the update is m / sqrt(v) = sign(g) when beta1 = 0).
        assert moved == pytest.approx(lr, rel=0.01), name


def count_steps(ctx: StepContext) -> dict[str, int]:
    counts = dict.fromkeys(ctx.optimizers, 0)
    for name, optimizer in ctx.optimizers.items():
        optimizer.register_step_post_hook(lambda opt, args, kwargs, name=name: counts.__setitem__(name,
                                                                                               counts[name] + 1))
    return counts


@pytest.mark.parametrize(("options", "critic_steps"), [
    ({"loss": "wgan-gp"}, 5),  # the paper's preset
    ({"loss": "wgan-gp", "n_critic": 2}, 2),
    ({"loss": "bce", "n_critic": 3}, 3),
    ({"loss": "bce"}, 1),
])
def test_n_critic_discriminator_steps_per_generator_step(options: dict, critic_steps: int) -> None:
    recipe, ctx = make(**options)
    counts = count_steps(ctx)
    step(recipe, ctx)
    assert counts == {"D": critic_steps, "G": 1}
    assert ctx.batches_drawn == critic_steps - 1, "each extra critic step must draw a fresh real batch"


# --- composition of the losses ----------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [10.0, 3.0])
def test_gradient_penalty_weight_scales_the_penalty_in_the_critic_loss(weight: float) -> None:
    recipe, ctx = make(loss="wgan-gp", n_critic=1, gp_weight=weight)
    out = step(recipe, ctx)
    assert out["gp"] > 0
    torch.testing.assert_close(out["loss_d"], out["d_fake"] - out["d_real"] + weight * out["gp"])


def loss_difference(key: str, off: dict, on: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The same step from the same weights and noise with an option off and on: (on - off of ``key``, on's)."""
    without = step(*make(**off))
    with_option = step(*make(**on))
    return with_option[key] - without[key], with_option


@pytest.mark.parametrize("gamma", [1.0, 4.0])
def test_r1_weight_adds_half_gamma_times_the_penalty(gamma: float) -> None:
    diff, out = loss_difference("loss_d", {"loss": "bce"}, {"loss": "bce", "r1_weight": gamma})
    assert out["r1"] > 0
    torch.testing.assert_close(diff, 0.5 * gamma * out["r1"])


@pytest.mark.parametrize("weight", [1.0, 2.5])
def test_feature_matching_weight_adds_to_the_generator_loss(weight: float) -> None:
    diff, out = loss_difference("loss_g", {"loss": "bce"}, {"loss": "bce", "feature_matching": weight})
    assert out["feature_matching"] > 0
    torch.testing.assert_close(diff, weight * out["feature_matching"])
    # The discriminator's step is untouched by a generator-side term.
    torch.testing.assert_close(step(*make(loss="bce"))["loss_d"], out["loss_d"])


@pytest.mark.parametrize(("loss", "g_loss"), [
    ("bce", L.g_loss_nonsaturating), ("lsgan", L.g_loss_least_squares), ("hinge", L.g_loss_hinge),
    ("wgan-gp", L.g_loss_wasserstein),
])
def test_each_loss_name_selects_its_generator_loss(loss: str, g_loss: Callable) -> None:
    recipe, ctx = make(loss=loss, n_critic=1, mode_seeking=0.0)  # the adversarial part alone
    calls = Calls(recipe.networks["D"])
    out = step(recipe, ctx)
    torch.testing.assert_close(out["loss_g"], g_loss(calls.outputs[-1]))


@pytest.mark.parametrize(("loss", "d_loss"), [
    ("bce", L.d_loss_bce), ("lsgan", L.d_loss_least_squares), ("hinge", L.d_loss_hinge),
])
def test_each_loss_name_selects_its_discriminator_loss(loss: str, d_loss: Callable) -> None:
    out, real, fake = d_step_logits(make(loss=loss))
    torch.testing.assert_close(out["loss_d"], d_loss(real, fake))
