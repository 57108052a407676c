"""GAN Lab's toy distributions, config checks, state, determinism, losses, divergences and a short training run."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from synthmed import losses
from synthmed.data import toy2d
from synthmed.errors import ConfigError
from synthmed.experiments import ganlab
from synthmed.experiments.ganlab import GanLabConfig, GanLabSession, js_divergence, kl_divergence

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"g_hidden": 16, "g_layers": 1, "d_hidden": 16, "d_layers": 1, "batch_size": 32}


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


# --- toy distributions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", toy2d.NAMES)
def test_samples_lie_inside_the_square_and_follow_the_cell_probabilities(name: str) -> None:
    points = toy2d.sample(name, 100_000, torch.Generator().manual_seed(0))
    assert points.shape == (100_000, 2) and points.dtype == torch.float32
    assert float(points.abs().max()) <= toy2d.EXTENT
    cells = toy2d.density_grid(name, bins=20)
    assert cells.shape == (20, 20) and float(cells.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(cells.min()) >= 0.0
    # The sample's histogram is the exact cell law up to sampling noise (total variation; measured 0.008-0.012).
    total_variation = float((toy2d.histogram(points, bins=20) - cells).abs().sum()) / 2
    assert total_variation < 0.02


def test_ring_has_eight_equal_modes_on_the_circle_of_radius_one_and_a_half() -> None:
    points = toy2d.sample("ring", 40_000, torch.Generator().manual_seed(1)).double()
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    modes = 1.5 * torch.stack([angles.cos(), angles.sin()], dim=1)
    distance, nearest = torch.cdist(points, modes).min(dim=1)
    assert float(distance.max()) < 0.08 * 6  # every point within 6 standard deviations of a mode
    counts = torch.bincount(nearest, minlength=8).double()
    assert float((counts / 5000 - 1).abs().max()) < 0.06  # 5000 each, binomial sd ~1.3%
    assert float(points.norm(dim=1).mean()) == pytest.approx(1.5, abs=0.01)


def test_grid_has_twenty_five_modes_at_a_lattice_of_spacing_three_quarters() -> None:
    points = toy2d.sample("grid", 50_000, torch.Generator().manual_seed(2)).double()
    snapped = (points / 0.75).round() * 0.75
    assert float((points - snapped).abs().max()) < 0.07 * 6
    assert set(snapped.unique().tolist()) == {-1.5, -0.75, 0.0, 0.75, 1.5}
    counts = torch.unique(snapped, dim=0, return_counts=True)[1]
    assert len(counts) == 25 and float((counts / 2000.0 - 1).abs().max()) < 0.1


def test_spiral_points_lie_near_its_curve_and_the_gaussian_has_its_moments() -> None:
    spiral = toy2d.sample("spiral", 20_000, torch.Generator().manual_seed(3)).double()
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    curve = torch.stack([(0.2 + 1.5 * t) * (3 * math.pi * t).cos(), (0.2 + 1.5 * t) * (3 * math.pi * t).sin()], 1)
    assert float(torch.cdist(spiral, curve).min(dim=1).values.max()) < 0.06 * 6
    gaussian = toy2d.sample("gaussian", 50_000, torch.Generator().manual_seed(4)).double()
    assert gaussian.mean(0).tolist() == pytest.approx([0.75, 0.5], abs=0.01)
    assert gaussian.std(0).tolist() == pytest.approx([0.3, 0.15], abs=0.01)


def test_density_grid_is_the_truncated_mixture_worked_out_by_hand() -> None:
    # One Gaussian, mean (0.75, 0.5), sd (0.3, 0.15), on 2 x 2 cells of [-2, 2]^2, split at x = 0 and y = 0.
    left = phi(-0.75 / 0.3) - phi(-2.75 / 0.3)
    right = phi(1.25 / 0.3) - phi(-0.75 / 0.3)
    below = phi(-0.5 / 0.15) - phi(-2.5 / 0.15)
    above = phi(1.5 / 0.15) - phi(-0.5 / 0.15)
    inside = (left + right) * (below + above)
    expected = torch.tensor([[below * left, below * right], [above * left, above * right]], dtype=torch.float64)
    assert torch.allclose(toy2d.density_grid("gaussian", bins=2), expected / inside, rtol=1e-9, atol=1e-15)


def test_grid_layout_rows_are_y_from_the_bottom() -> None:
    centres = toy2d.cell_centres(4)  # cell width 1: centres at -1.5, -0.5, 0.5, 1.5
    assert centres[0].tolist() == [-1.5, -1.5] and centres[3].tolist() == [1.5, -1.5]
    assert centres[4].tolist() == [-1.5, -0.5] and centres[15].tolist() == [1.5, 1.5]
    cells = toy2d.histogram(torch.tensor([[1.9, -1.9], [0.1, 0.2], [5.0, 5.0], [float("nan"), 0.0]]), bins=4)
    assert cells[0, 3] == pytest.approx(1 / 3) and cells[2, 2] == pytest.approx(1 / 3)
    assert cells[3, 3] == pytest.approx(1 / 3)  # outside the square: counted in the nearest (corner) cell
    assert float(cells.sum()) == pytest.approx(1.0)


def test_unknown_distribution_is_a_one_line_error_listing_the_names() -> None:
    with pytest.raises(ConfigError) as caught:
        toy2d.sample("moons", 10)
    message = str(caught.value)
    assert "\n" not in message and "'moons'" in message and "ring, grid, spiral, gaussian" in message


# --- divergences ------------------------------------------------------------------------------------------


def test_kl_and_js_hand_cases() -> None:
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    # KL(p || q) = 2 * 0.5 log(0.5 / 0.25) = log 2; the cells where p is 0 add nothing.
    assert kl_divergence(p, q, epsilon=0) == pytest.approx(math.log(2), rel=1e-12)
    # m = (3/8, 3/8, 1/8, 1/8): KL(p || m) = log(4/3); KL(q || m) = 0.5 log(2/3) + 0.5 log 2 = 0.5 log(4/3).
    expected_js = 0.5 * math.log(4 / 3) + 0.5 * 0.5 * math.log(4 / 3)
    assert js_divergence(p, q, epsilon=0) == pytest.approx(expected_js, rel=1e-12)
    assert js_divergence(q, p, epsilon=0) == pytest.approx(expected_js, rel=1e-12)  # symmetric
    disjoint = torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64)
    assert js_divergence(p, disjoint, epsilon=0) == pytest.approx(math.log(2), rel=1e-12)  # the maximum
    assert js_divergence(p, p) == 0.0 and kl_divergence(p, p) == pytest.approx(0.0, abs=1e-15)
    # With the default smoothing KL of disjoint histograms stays finite: 0.5 log((0.5+e)/e) twice, renormalised.
    eps = ganlab.SMOOTHING
    smoothed = (0.5 + eps) / (1 + 4 * eps)
    expected_kl = 2 * smoothed * math.log((0.5 + eps) / eps) + 2 * (eps / (1 + 4 * eps)) * math.log(eps / (0.5 + eps))
    assert kl_divergence(p, disjoint) == pytest.approx(expected_kl, rel=1e-9)
    assert js_divergence(p, disjoint) < math.log(2)


# --- config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "field"), [
    ({"g_hidden": 257}, "g_hidden"), ({"d_hidden": 0}, "d_hidden"), ({"g_layers": 7}, "g_layers"),
    ({"d_layers": 0}, "d_layers"), ({"batch_size": 1025}, "batch_size"), ({"batch_size": 1}, "batch_size"),
    ({"latent_dim": 17}, "latent_dim"), ({"n_critic": 11}, "n_critic"), ({"n_critic": 0}, "n_critic"),
    ({"lr_g": 0}, "lr_g"), ({"lr_d": 0.5}, "lr_d"), ({"lr_g": float("nan")}, "lr_g"),
    ({"gp_weight": -1}, "gp_weight"), ({"seed": -1}, "seed"), ({"g_hidden": True}, "g_hidden"),
    ({"g_hidden": "64"}, "g_hidden"), ({"g_hidden": 64.0}, "g_hidden"), ({"lr_d": "fast"}, "lr_d"),
    ({"loss": "vanilla"}, "loss"), ({"distribution": "moons"}, "distribution"), ({"loss": 3}, "loss"),
    ({"hidden": 3}, "hidden"),
])
def test_bad_settings_are_one_line_config_errors_naming_the_setting(values: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        GanLabConfig.from_mapping(values)
    message = str(caught.value)
    assert "\n" not in message and field in message


def test_config_defaults_and_preset_n_critic() -> None:
    assert GanLabConfig.from_mapping(None) == GanLabConfig()
    assert GanLabConfig(loss="wgan-gp").critic_updates == 5 == losses.ADVERSARIAL_LOSSES["wgan-gp"].preset.n_critic
    assert GanLabConfig(loss="bce").critic_updates == 1
    assert GanLabConfig(loss="wgan-gp", n_critic=2).resolved()["n_critic"] == 2
    with pytest.raises(ConfigError, match="object"):
        GanLabConfig.from_mapping([1, 2])  # type: ignore[arg-type]


# --- sessions ---------------------------------------------------------------------------------------------


def test_state_shapes_ranges_and_strict_json() -> None:
    session = GanLabSession(GanLabConfig(**TINY))
    session.step(3)
    state = session.state()
    text = json.dumps(state, allow_nan=False)  # strict JSON: raises on NaN or Infinity
    assert json.loads(text)["step"] == 3
    assert len(state["real"]) == len(state["fake"]) == ganlab.SHOWN_POINTS
    assert all(len(p) == 2 for p in state["real"] + state["fake"])
    verdict = state["verdict"]
    assert verdict["grid"] == ganlab.GRID and len(verdict["values"]) == ganlab.GRID
    assert all(len(row) == ganlab.GRID for row in verdict["values"])
    assert all(0.0 <= v <= 1.0 for row in verdict["values"] for v in row)
    vectors = state["gradients"]["vectors"]
    assert len(vectors) == ganlab.SHOWN_POINTS
    assert max(math.hypot(*v) for v in vectors) == pytest.approx(1.0, abs=1e-3)  # the longest arrow is unit length
    assert state["losses"]["step"] == [1, 2, 3] and len(state["losses"]["loss_d"]) == 3
    assert state["divergences"]["step"] == [0]  # the next estimate is at step 10
    assert 0.0 < state["divergences"]["js"][0] <= math.log(2)
    assert state["config"]["n_critic"] == 1 and state["extent"] == toy2d.EXTENT
    assert state["divergence_note"] == ganlab.DIVERGENCE_NOTE and "KL(real || fake)" in state["divergence_note"]
    assert state["diverged"] is False
    assert session.state(grid=8)["verdict"]["grid"] == 8
    assert session.state()["step"] == 3  # drawing trains nothing


def test_verdict_is_sigmoid_of_d_on_the_cell_centres_for_bce_and_rescaled_for_critics() -> None:
    session = GanLabSession(GanLabConfig(**TINY))
    session.step(2)
    grid = 5
    verdict = session.state(grid=grid)["verdict"]
    with torch.no_grad():
        scores = session.discriminator(toy2d.cell_centres(grid)).squeeze(-1).double()
    assert verdict["kind"] == "probability"
    # values[j][i] is the cell of y bin j (bottom first) and x bin i: flat index j * grid + i.
    assert verdict["values"][0][4] == pytest.approx(float(torch.sigmoid(scores[4])), abs=1e-4)
    assert verdict["values"][3][1] == pytest.approx(float(torch.sigmoid(scores[16])), abs=1e-4)
    hinge = GanLabSession(GanLabConfig(loss="hinge", **TINY))
    hinge.step(2)
    hinge.discriminator.eval()
    rescaled = hinge.state(grid=grid)["verdict"]
    with torch.no_grad():
        raw = hinge.discriminator(toy2d.cell_centres(grid)).squeeze(-1).double()
    low, high = float(raw.min()), float(raw.max())
    assert rescaled["kind"] == "rescaled" and rescaled["score_range"] == pytest.approx([low, high], abs=1e-5)
    flat = [v for row in rescaled["values"] for v in row]
    assert min(flat) == 0.0 and max(flat) == 1.0
    assert flat[7] == pytest.approx((float(raw[7]) - low) / (high - low), abs=1e-4)


def test_gradient_arrows_point_where_g_loss_falls() -> None:
    session = GanLabSession(GanLabConfig(**TINY))
    session.step(5)
    state = session.state()
    fake = torch.tensor(state["fake"], dtype=torch.float32)
    arrows = torch.tensor(state["gradients"]["vectors"], dtype=torch.float32)
    with torch.no_grad():
        before = F.softplus(-session.discriminator(fake)).squeeze(-1)  # each point's non-saturating G loss
        after = F.softplus(-session.discriminator(fake + 1e-3 * arrows)).squeeze(-1)
    moved = arrows.norm(dim=1) > 1e-3
    assert int(moved.sum()) > 100
    assert float((after[moved] < before[moved]).double().mean()) > 0.95


def test_same_seed_same_run_other_seed_other_run() -> None:
    def run(seed: int, loss: str) -> dict:
        session = GanLabSession(GanLabConfig(seed=seed, loss=loss, **TINY))
        session.step(12)
        return session.state()

    global_before = torch.random.get_rng_state()
    for loss in ("bce", "wgan-gp"):
        assert run(7, loss) == run(7, loss)
    assert torch.equal(torch.random.get_rng_state(), global_before)  # torch's global RNG is left alone
    other = run(8, "bce")
    assert other["fake"] != run(7, "bce")["fake"] and other["real"] != run(7, "bce")["real"]


def test_training_uses_the_registered_losses_and_gradient_penalty(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"d": 0, "g": 0, "gp": 0}
    entry = losses.ADVERSARIAL_LOSSES["wgan-gp"]

    def d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        calls["d"] += 1
        return entry.d_loss(real, fake)

    def g_loss(fake: torch.Tensor) -> torch.Tensor:
        calls["g"] += 1
        return entry.g_loss(fake)

    original_penalty = losses.gradient_penalty

    def penalty(*args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
        calls["gp"] += 1
        return original_penalty(*args, **kwargs)

    monkeypatch.setitem(losses.ADVERSARIAL_LOSSES, "wgan-gp", losses.AdversarialLoss(
        "wgan-gp", d_loss, g_loss, entry.preset, critic=True))
    monkeypatch.setattr(losses, "gradient_penalty", penalty)
    session = GanLabSession(GanLabConfig(loss="wgan-gp", n_critic=3, **TINY))
    session.step(4)
    assert calls == {"d": 12, "g": 4, "gp": 12}  # n_critic D updates, each with the penalty, per G update
    session.state()
    assert calls["g"] == 5  # the arrows are the gradient of the same G loss


def test_one_bce_step_matches_a_hand_written_update() -> None:
    config = GanLabConfig(distribution="grid", seed=3, **TINY)
    session = GanLabSession(config)
    generator, discriminator = copy.deepcopy(session.generator), copy.deepcopy(session.discriminator)
    session.step(1)

    # The same draws in the same order, from a generator seeded like the session's.
    rng = torch.Generator().manual_seed(config.seed)
    betas = losses.ADVERSARIAL_LOSSES["bce"].preset.betas
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.lr_d, betas=betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.lr_g, betas=betas)
    real = toy2d.sample("grid", config.batch_size, rng)
    fake = generator(torch.randn(config.batch_size, 2, generator=rng)).detach()
    # BCE by hand: -log sigmoid(D(real)) - log(1 - sigmoid(D(fake))) = softplus(-D(real)) + softplus(D(fake)).
    loss_d = F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake)).mean()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = F.softplus(-discriminator(generator(torch.randn(config.batch_size, 2, generator=rng)))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

    for mine, theirs in [(discriminator, session.discriminator), (generator, session.generator)]:
        for a, b in zip(mine.parameters(), theirs.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6)
    assert session.losses.loss_d[0] == pytest.approx(loss_d.item(), rel=1e-5)
    assert session.losses.loss_g[0] == pytest.approx(loss_g.item(), rel=1e-5)


@pytest.mark.parametrize("loss", list(losses.ADVERSARIAL_LOSSES))
def test_every_loss_trains_without_nan(loss: str) -> None:
    session = GanLabSession(GanLabConfig(loss=loss, distribution="spiral", **TINY))
    session.step(20)
    state = session.state()
    assert not state["diverged"] and len(state["losses"]["loss_d"]) == 20
    assert all(v is not None and math.isfinite(v) for v in state["losses"]["loss_d"] + state["losses"]["loss_g"])
    assert all(v is not None for point in state["fake"] for v in point)
    assert state["divergences"]["step"] == [0, 10, 20]


def test_training_brings_g_towards_one_gaussian() -> None:
    # Seed 0, the default networks, G at lr 3e-4 (D 1e-3), 300 steps: JS 0.691 -> 0.231 measured (seeds 0-4 end at
    # 0.15-0.28; with G at 1e-3 a single Gaussian makes G circle around it); the floor (10000 real points against the
    # exact cells) is 0.003.
    session = GanLabSession(GanLabConfig(distribution="gaussian", loss="bce", lr_g=3e-4, seed=0))
    start = session.divergences[0][2]
    session.step(300)
    end = session.current_divergences()[1]
    assert start > 0.6
    assert end < 0.4 * start
    assert session.divergence_floor[1] < 0.01


def test_non_finite_numbers_go_out_as_null() -> None:
    session = GanLabSession(GanLabConfig(**TINY))
    with torch.no_grad():
        session.generator[-1].bias.fill_(float("nan"))
    session.step(1)
    state = session.state()
    json.dumps(state, allow_nan=False)
    assert state["fake"][0] == [None, None] and state["diverged"] is True
    assert state["losses"]["loss_g"][0] is None


def test_histories_stay_bounded_and_evenly_spaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ganlab, "HISTORY_LIMIT", 4)
    history = ganlab._LossHistory()
    for step in range(1, 9):
        history.add(step, float(step), -float(step))
    # 1..4 fill it: merged to 2, 4 (means 1.5, 3.5), stride 2; then windows (5, 6) and (7, 8) fill it again.
    assert history.steps == [4, 8] and history.stride == 4
    assert history.loss_d == [2.5, 6.5] and history.loss_g == [-2.5, -6.5]
    session = GanLabSession(GanLabConfig(**TINY))
    session.step(100)
    # 0, 10, 20, 30, 40 is one too many: every 20th kept (0, 20, 40), then 60, 80 overflow it again: every 40th.
    steps = session.state()["divergences"]["step"]
    assert steps == [0, 40, 80] and session.divergence_every == 40
