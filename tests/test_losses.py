"""Each loss against a case small enough to work out by hand (the arithmetic is written in the test)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from synthmed import losses
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.recipes import build_recipe
from synthmed.recipes.step import StepContext

LOG3 = math.log(3.0)  # sigmoid(log 3) = 3/4, sigmoid(-log 3) = 1/4


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def close(actual: torch.Tensor, expected: float) -> None:
    assert actual.dim() == 0
    assert actual.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_d_loss_bce_zero_logits_is_two_log_two() -> None:
    # sigmoid(0) = 1/2: BCE = -log(1/2) = log 2 on each side, whatever the target.
    close(losses.d_loss_bce(t(0.0, 0.0), t(0.0, 0.0)), 2 * math.log(2))
    close(losses.d_loss_bce(t(0.0), t(0.0), real_target=0.9), 2 * math.log(2))


def test_d_loss_bce_hand_case_and_label_smoothing() -> None:
    real, fake = t(LOG3, LOG3), t(-LOG3, -LOG3)
    # real: -log(3/4); fake (target 0): -log(1 - 1/4) = -log(3/4)
    close(losses.d_loss_bce(real, fake), 2 * math.log(4 / 3))
    # one-sided smoothing, real target 0.9: -(0.9 log(3/4) + 0.1 log(1/4))
    smoothed = -(0.9 * math.log(3 / 4) + 0.1 * math.log(1 / 4))
    close(losses.d_loss_bce(real, fake, real_target=0.9), smoothed + math.log(4 / 3))


def test_d_loss_bce_per_sample_targets() -> None:
    real, fake = t(LOG3, LOG3), t(-LOG3, -LOG3)
    # real targets (1, 0) ("flipped" second label): mean(-log(3/4), -log(1/4)); fake targets (0, 1):
    # mean(-log(3/4), -log(1/4)) too.
    per_side = (math.log(4 / 3) + math.log(4)) / 2
    close(losses.d_loss_bce(real, fake, real_target=t(1.0, 0.0), fake_target=t(0.0, 1.0)), 2 * per_side)
    # (N, 1) logits with (N, 1) targets
    close(
        losses.d_loss_bce(real[:, None], fake[:, None], real_target=t(1.0, 0.0)[:, None]),
        per_side + math.log(4 / 3),
    )


def test_g_loss_nonsaturating() -> None:
    # -log sigmoid(log 3) = log(4/3); -log sigmoid(0) = log 2
    close(losses.g_loss_nonsaturating(t(LOG3, 0.0)), (math.log(4 / 3) + math.log(2)) / 2)


def test_hinge() -> None:
    real, fake = t(2.0, 0.5, -1.0), t(-2.0, 0.0, 0.5)
    # relu(1 - real) = (0, 0.5, 2) -> 2.5/3; relu(1 + fake) = (0, 1, 1.5) -> 2.5/3
    close(losses.d_loss_hinge(real, fake), 5 / 3)
    # -mean(fake) = -(-2 + 0 + 0.5)/3
    close(losses.g_loss_hinge(fake), 0.5)


def test_wasserstein() -> None:
    real, fake = t(1.0, 3.0), t(0.5, -1.5)
    close(losses.d_loss_wasserstein(real, fake), -0.5 - 2.0)  # mean(fake) - mean(real)
    close(losses.g_loss_wasserstein(fake), 0.5)


def test_least_squares() -> None:
    real, fake = t(1.0, 3.0), t(0.0, 2.0)
    # 0.5 mean((0, 2)^2) + 0.5 mean((0, 2)^2) = 0.5 * 2 + 0.5 * 2
    close(losses.d_loss_least_squares(real, fake), 2.0)
    # 0.5 mean((-1, 1)^2) = 0.5
    close(losses.g_loss_least_squares(fake), 0.5)


# Gradient penalty


def _linear_critic(w: torch.Tensor, keepdim: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    def critic(x: torch.Tensor) -> torch.Tensor:
        out = (x * w).flatten(1).sum(1)
        return out[:, None] if keepdim else out

    return critic


@pytest.mark.parametrize("keepdim", [False, True])
def test_gradient_penalty_linear_critic(keepdim: bool) -> None:
    # f(x) = sum(w * x): grad = w at every x_hat, ||w|| = ||(3, 4)|| = 5, penalty = (5 - 1)^2 = 16.
    w = t(3.0, 0.0, 0.0, 4.0).view(1, 1, 2, 2).requires_grad_(True)
    real, fake = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    gp = losses.gradient_penalty(_linear_critic(w, keepdim), real, fake)
    close(gp, 16.0)
    # create_graph: the penalty differentiates w.r.t. the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp.backward()
    torch.testing.assert_close(w.grad, (2 * 4 * w / 5).detach())


def test_gradient_penalty_quadratic_critic_given_epsilon() -> None:
    # f(x) = sum(x^2): grad = 2 x_hat. real = 1, fake = 0 -> x_hat_i = eps_i on all 4 pixels,
    # ||grad_i|| = 2 eps_i * sqrt(4) = 4 eps_i = (1, 2) for eps = (0.25, 0.5) -> mean((0)^2, (1)^2) = 0.5
    real, fake = torch.ones(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    gp = losses.gradient_penalty(lambda x: x.square().flatten(1).sum(1), real, fake, epsilon=t(0.25, 0.5))
    close(gp, 0.5)


def test_gradient_penalty_draws_one_epsilon_per_sample() -> None:
    seen: list[torch.Tensor] = []

    def critic(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return x.square().flatten(1).sum(1)

    real, fake = torch.ones(8, 1, 3, 3, dtype=torch.float64), torch.zeros(8, 1, 3, 3, dtype=torch.float64)
    gp = losses.gradient_penalty(critic, real, fake)
    x_hat = seen[0].flatten(1)
    eps = x_hat[:, 0]  # x_hat_i = eps_i * 1 + (1 - eps_i) * 0
    assert torch.equal(x_hat, eps[:, None].expand_as(x_hat))  # one epsilon per sample, shared by its pixels
    assert ((eps >= 0) & (eps <= 1)).all() and eps.unique().numel() == 8  # different across samples
    # ||2 x_hat_i|| = 2 eps_i * sqrt(9) = 6 eps_i
    close(gp, ((6 * eps - 1) ** 2).mean().item())


def test_gradient_penalty_does_not_reach_generator() -> None:
    g_param = torch.ones((), requires_grad=True)
    fake = torch.randn(4, 1, 2, 2) * g_param
    w = torch.randn(1, 1, 2, 2, requires_grad=True)
    losses.gradient_penalty(_linear_critic(w), torch.randn(4, 1, 2, 2), fake).backward()
    assert g_param.grad is None and w.grad is not None


def test_gradient_penalty_with_layer_norm_dcgan_critic() -> None:
    from synthmed.nn import DCGANDiscriminator

    critic = DCGANDiscriminator(in_channels=1, image_size=16, base_channels=4, norm="layer")
    gp = losses.gradient_penalty(critic, torch.randn(3, 1, 16, 16), torch.randn(3, 1, 16, 16))
    gp.backward()
    assert torch.isfinite(gp) and all(p.grad is not None for p in critic.parameters())

    # The penalty takes each sample's own input gradient, so the critic must not couple samples: with layer norm
    # (per sample) sample 0's score has exactly zero gradient with respect to samples 1 and 2; batch norm (in
    # training mode, as the critic runs) couples them, which shows the check can fail.
    def input_gradient_of_first_score(norm: str) -> torch.Tensor:
        torch.manual_seed(0)
        model = DCGANDiscriminator(in_channels=1, image_size=16, base_channels=4, norm=norm).train()
        x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1), requires_grad=True)
        (grad,) = torch.autograd.grad(model(x).flatten()[0], x)
        return grad

    layer, batch = input_gradient_of_first_score("layer"), input_gradient_of_first_score("batch")
    assert layer[0].abs().max() > 0 and torch.equal(layer[1:], torch.zeros_like(layer[1:]))
    assert batch[1].abs().max() > 1e-4 * batch[0].abs().max()


def test_r1_penalty_quadratic() -> None:
    # D(x) = sum(x^2): grad = 2x, ||2x||^2 = 4 sum(x^2) = (4 * 5, 4 * 9) -> mean 28
    x = t(1.0, 2.0, 0.0, 3.0).view(2, 1, 1, 2).requires_grad_(True)
    logits = x.square().flatten(1).sum(1)
    close(losses.r1_penalty(logits, x), 28.0)


def test_lecam_penalty_hand_case() -> None:
    # a_R = 1, a_F = -1. Real (3, 0): relu(3 + 1)^2 = 16, relu(0 + 1)^2 = 1 -> 8.5.
    # Fake (-2, 1): relu(1 + 2)^2 = 9, relu(1 - 1)^2 = 0 -> 4.5. Sum 13.
    close(losses.lecam_penalty(t(3.0, 0.0), t(-2.0, 1.0), 1.0, -1.0), 13.0)
    # Outputs already on their side of the other class's anchor cost nothing.
    close(losses.lecam_penalty(t(-2.0), t(2.0), 1.0, -1.0), 0.0)


def test_lecam_penalty_treats_the_anchors_as_constants() -> None:
    anchor = torch.tensor(1.0, requires_grad=True)
    real = t(3.0).requires_grad_(True)
    losses.lecam_penalty(real, t(-2.0), anchor, anchor - 2).backward()
    assert anchor.grad is None and real.grad is not None
    close(real.grad[0], 8.0)  # d/dr (r - a_F)^2 = 2 (3 + 1)


def test_logit_anchors_start_at_the_first_means_then_decay() -> None:
    anchors = losses.LogitAnchors(decay=0.9)  # kept in float32, as the logits they average
    a_r, a_f = anchors.update(torch.tensor(2.0), torch.tensor(-1.0))
    assert (a_r.item(), a_f.item()) == (2.0, -1.0)
    a_r, a_f = anchors.update(torch.tensor(4.0), torch.tensor(1.0))
    assert a_r.item() == pytest.approx(0.9 * 2.0 + 0.1 * 4.0, rel=1e-6)  # 2.2
    assert a_f.item() == pytest.approx(0.9 * -1.0 + 0.1 * 1.0, rel=1e-6)  # -0.8
    restored = losses.LogitAnchors(decay=0.9)
    restored.load_state(anchors.state("lecam"), "lecam")
    assert restored.updates == 2 and torch.equal(restored.values, anchors.values)
    a_r, _ = restored.update(torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.bfloat16))
    assert a_r.dtype == torch.float32 and a_r.item() == pytest.approx(0.9 * 2.2, rel=1e-6)
    untouched = losses.LogitAnchors(decay=0.9)
    untouched.load_state({}, "lecam")  # a checkpoint of a run without the penalty
    assert untouched.updates == 0
    with pytest.raises(ValueError, match="decay"):
        losses.LogitAnchors(decay=1.0)


# Reconstruction and feature losses


def test_l1_and_cycle() -> None:
    # |(1, -2) - (0, 1)| = (1, 3) -> 2
    close(losses.l1_loss(t(1.0, -2.0), t(0.0, 1.0)), 2.0)
    close(losses.cycle_consistency_loss(t(1.0, -2.0), t(0.0, 1.0)), 2.0)


def test_multiscale_l1() -> None:
    a = [t(1.0, 2.0), t(3.0).view(1, 1)]
    b = [t(1.0, 0.0), t(0.0).view(1, 1)]
    # scale 1: mean(0, 2) = 1; scale 2: 3 -> mean over scales 2
    close(losses.multiscale_l1_loss(a, b), 2.0)
    with pytest.raises(ValueError, match="equally many"):
        losses.multiscale_l1_loss(a, b[:1])
    with pytest.raises(ValueError):
        losses.multiscale_l1_loss([], [])


def test_soft_dice_pools_the_batch() -> None:
    # Two images, one class. Image 1: p = (1, 0.5), t = (1, 1); image 2: p = (0.5, 0), t = (0, 0) (no foreground).
    # Pooled: overlap 1.5, sum p 2, sum t 2 -> Dice 0.75, loss 0.25 (a per-image Dice would be 0/0 on image 2).
    p = torch.tensor([[[1.0, 0.5]], [[0.5, 0.0]]])
    y = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]]])
    close(losses.soft_dice_loss(p, y, eps=0.0), 0.25)
    # Two classes averaged: class 0 as above (0.75), class 1 perfect on an empty truth and prediction (eps) -> 1.
    p2, y2 = torch.cat([p, torch.zeros_like(p)], 1), torch.cat([y, torch.zeros_like(y)], 1)
    assert losses.soft_dice_loss(p2, y2).item() == pytest.approx(1.0 - (0.75 + 1.0) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        losses.soft_dice_loss(p, y[:1])


def test_feature_matching() -> None:
    real = t(1.0, 2.0, 3.0, 4.0).view(2, 2).requires_grad_(True)
    fake = t(0.0, 0.0, 2.0, 2.0).view(2, 2).requires_grad_(True)
    # batch means (2, 3) and (1, 1): mean((1, 2)^2) = 2.5
    loss = losses.feature_matching_loss(real, fake)
    close(loss, 2.5)
    loss.backward()
    assert real.grad is None  # real side detached
    # d/dfake_ik = 2 (mean_fake_k - mean_real_k) / K / N = 2 * (-1, -2) / 2 / 2
    torch.testing.assert_close(fake.grad, t(-0.5, -1.0, -0.5, -1.0).view(2, 2))
    # feature maps are flattened per sample
    close(losses.feature_matching_loss(real.view(2, 1, 2, 1), fake.view(2, 1, 2, 1)), 2.5)


# The registry of adversarial losses

# The presets documented at the top of synthmed/recipes/unconditional.py (each loss's paper):
# lr_g, lr_d, betas, n_critic, d_norm, spectral_norm.
DOCUMENTED_PRESETS = {
    "bce": (2e-4, 2e-4, (0.5, 0.999), 1, "batch", False),
    "lsgan": (2e-4, 2e-4, (0.5, 0.999), 1, "batch", False),
    "wgan-gp": (1e-4, 1e-4, (0.0, 0.9), 5, "layer", False),
    "hinge": (1e-4, 4e-4, (0.0, 0.9), 1, "none", True),
}


def test_registered_losses_carry_their_functions_and_documented_presets() -> None:
    assert list(losses.ADVERSARIAL_LOSSES) == list(DOCUMENTED_PRESETS)
    for name, (lr_g, lr_d, betas, n_critic, d_norm, spectral_norm) in DOCUMENTED_PRESETS.items():
        assert losses.get_adversarial_loss(name).preset == losses.OptimizerPreset(
            lr_g=lr_g, lr_d=lr_d, betas=betas, n_critic=n_critic, d_norm=d_norm, spectral_norm=spectral_norm
        ), name
    table = {name: (e.d_loss, e.g_loss, e.targets, e.critic) for name, e in losses.ADVERSARIAL_LOSSES.items()}
    assert table == {
        "bce": (losses.d_loss_bce, losses.g_loss_nonsaturating, True, False),
        "lsgan": (losses.d_loss_least_squares, losses.g_loss_least_squares, True, False),
        "wgan-gp": (losses.d_loss_wasserstein, losses.g_loss_wasserstein, False, True),
        "hinge": (losses.d_loss_hinge, losses.g_loss_hinge, False, False),
    }
    with pytest.raises(AttributeError):
        losses.get_adversarial_loss("bce").preset.lr_g = 1.0  # type: ignore[misc]  # frozen
    with pytest.raises(ConfigError, match=r"^unknown loss 'wgan'; choose one of bce, lsgan, wgan-gp, hinge$"):
        losses.get_adversarial_loss("wgan")
    with pytest.raises(ValueError, match="already registered"):
        losses.register_adversarial_loss("bce", losses.d_loss_bce, losses.g_loss_nonsaturating,
                                         losses.OptimizerPreset(1e-4, 1e-4, (0.5, 0.9)))


@pytest.fixture
def toy_loss():
    """An L1 loss on the logits with real/fake targets, registered for one test; records the targets it gets."""
    saved = dict(losses.ADVERSARIAL_LOSSES)
    seen: list[tuple[object, object]] = []

    def d_loss(real: torch.Tensor, fake: torch.Tensor, real_target, fake_target) -> torch.Tensor:
        seen.append((real_target, fake_target))
        return (real - real_target).abs().mean() + (fake - fake_target).abs().mean()

    entry = losses.register_adversarial_loss(
        "toy-l1", d_loss, lambda fake: (fake - 1.0).abs().mean(),
        losses.OptimizerPreset(lr_g=3e-4, lr_d=5e-4, betas=(0.1, 0.8), d_norm="instance"), targets=True,
    )
    yield entry, seen
    losses.ADVERSARIAL_LOSSES.clear()
    losses.ADVERSARIAL_LOSSES.update(saved)


def test_a_registered_loss_is_usable_by_name(toy_loss) -> None:
    entry, seen = toy_loss
    assert losses.get_adversarial_loss("toy-l1") is entry
    info = DataInfo(source="toy", channels=1, height=16, width=16)
    tiny = {"g_channels": 4, "d_channels": 4, "latent_dim": 4}
    torch.manual_seed(0)
    recipe = build_recipe("unconditional", {"loss": "toy-l1", "label_smoothing": 0.2, **tiny}, info)
    cfg = recipe.config
    assert (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.n_critic, cfg.d_norm, cfg.spectral_norm) == (
        3e-4, 5e-4, (0.1, 0.8), 1, "instance", False)
    assert recipe.loss_names() == ["loss_d", "loss_g", "d_real", "d_fake"]
    logits: list[torch.Tensor] = []
    recipe.networks["D"].register_forward_hook(lambda m, a, out: logits.append(out.detach().float().reshape(-1)))
    ctx = StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers())
    out = recipe.train_step({"image": torch.rand(4, 1, 16, 16) * 2 - 1}, ctx)
    assert seen == [(0.8, 0.0)]  # label smoothing reached the registered loss's targets
    torch.testing.assert_close(out["loss_d"], (logits[0] - 0.8).abs().mean() + logits[1].abs().mean())
    torch.testing.assert_close(out["loss_g"], (logits[-1] - 1.0).abs().mean())
    # The recipe's messages list the registry: the new loss takes label options, hinge still does not.
    with pytest.raises(ConfigError, match="apply to the bce, lsgan and toy-l1 losses, not hinge"):
        build_recipe("unconditional", {"loss": "hinge", "label_smoothing": 0.1, **tiny}, info)


def test_mode_seeking_by_hand() -> None:
    # pairs (sample 0, sample 2) and (1, 3); a fifth sample has no partner and is left out
    images = torch.tensor([0.0, 2.0, 1.0, 0.0, 9.0]).view(5, 1, 1, 1)
    latents = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 3.0], [0.0, 1.0], [5.0, 5.0]])
    # image distance mean(|0 - 1|, |2 - 0|) = 1.5; latent distance mean(1, 3, 0, 1) = 1.25; ratio 1.2
    assert losses.mode_seeking_loss(images, latents).item() == pytest.approx(1 / (1.2 + 1e-5))
    collapsed = torch.zeros(4, 1, 1, 1)  # every latent drawn to the same image: the largest penalty
    assert losses.mode_seeking_loss(collapsed, latents[:4]).item() == pytest.approx(1e5)
    with pytest.raises(ValueError, match="at least 2 samples"):
        losses.mode_seeking_loss(images[:1], latents[:1])
