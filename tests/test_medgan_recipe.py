"""The medgan recipe (Choi et al. 2017) and its paper's variants: minibatch averaging by hand, autoencoder
pre-training lowers its loss, binary and count outputs (counts never binarised), the variants' networks, exact
resume across the phase change, and the validation score behind ``--eval-every``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import synthmed
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn.minibatch import MinibatchAveraging, MinibatchDiscrimination
from synthmed.nn.records import RecordGenerator, ResidualLayer
from synthmed.recipes import build_recipe
from synthmed.recipes.base import RecordsRecipe
from synthmed.recipes.medgan import VARIANTS, MedGAN
from synthmed.training import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embedding_dim": 16, "noise_dim": 16, "generator_dims": (16, 16), "discriminator_dims": (32, 16)}
TRAIN = {"batch_size": 32, "sample_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 20, "seed": 0}


def write_records(path: Path, n: int = 120, d: int = 12, counts: bool = False, seed: int = 0) -> Path:
    """Records with structure (codes come in correlated groups), one row per patient."""
    rng = np.random.default_rng(seed)
    groups = rng.random((n, 3)) < 0.35
    members = rng.random((3, d)) < 0.4
    p = 0.05 + 0.7 * ((groups.astype(float) @ members.astype(float)) > 0)
    values = (rng.random((n, d)) < p).astype(int)
    if counts:
        values = values * rng.integers(1, 5, size=(n, d))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", *(f"code_{j}" for j in range(d))])
        writer.writerows([i, *row] for i, row in enumerate(values.tolist()))
    return path


def _info(d: int = 12, values: str = "binary") -> DataInfo:
    return DataInfo(source="toy.csv", channels=d, height=1, width=1, kind="records",
                    columns=tuple(f"code_{j}" for j in range(d)), vocabulary={"values": values})


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _train(data: Path, out: Path, steps: int, **options: object) -> Path:
    merged = {**TRAIN, **TINY, **options}
    return Path(synthmed.train(data, recipe="medgan", out=out, steps=steps, progress=False, **merged).run_dir)


# --- layers -----------------------------------------------------------------------------------------------
def test_minibatch_averaging_appends_the_batch_mean_by_hand() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]], requires_grad=True)
    out = MinibatchAveraging()(x)
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 2.0, 1.0], [3.0, 2.0, 2.0, 1.0]]))
    out[0, 2].backward()  # the mean's first entry depends on both records, by 1/2 each
    assert torch.equal(x.grad, torch.tensor([[0.5, 0.0], [0.5, 0.0]]))
    single = torch.tensor([[4.0, 5.0]])
    assert torch.equal(MinibatchAveraging()(single), torch.tensor([[4.0, 5.0, 4.0, 5.0]]))


def test_a_collapsed_batch_looks_different_to_minibatch_averaging() -> None:
    """What averaging is for: the same record in a diverse batch and in a collapsed one gets different inputs."""
    record = torch.tensor([1.0, 0.0, 1.0])
    diverse = torch.stack([record, torch.tensor([0.0, 1.0, 0.0])])
    collapsed = torch.stack([record, record])
    layer = MinibatchAveraging()
    assert not torch.equal(layer(diverse)[0], layer(collapsed)[0])


def test_shortcut_layers_add_their_input_and_refuse_unequal_widths() -> None:
    layer = ResidualLayer(4, 4, torch.nn.ReLU(), batch_norm=False, shortcut=True)
    h = torch.randn(3, 4)
    assert torch.allclose(layer(h), torch.relu(layer.linear(h)) + h)
    with pytest.raises(ValueError, match="equal widths"):
        ResidualLayer(4, 8, torch.nn.ReLU(), batch_norm=False, shortcut=True)
    assert isinstance(RecordGenerator(8, 8, (8,)).layers[0].norm, torch.nn.BatchNorm1d)


# --- the variants -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_builds_the_papers_networks(variant: str) -> None:
    recipe = build_recipe("medgan", {"variant": variant, **TINY}, _info())
    pretrained, batch_features, residual = VARIANTS[variant]
    assert [p.name for p in recipe.phases()] == (["autoencoder", "gan"] if pretrained else ["gan"])
    layer = recipe.networks["D"].batch_layer
    expected = {"none": torch.nn.Identity, "averaging": MinibatchAveraging,
                "discrimination": MinibatchDiscrimination}[batch_features]
    assert isinstance(layer, expected)
    layers = list(recipe.networks["G"].layers)
    assert len(layers) == 3  # two hidden layers and the code layer
    assert all(layer.shortcut is residual and isinstance(layer.norm, torch.nn.BatchNorm1d) is residual
               for layer in layers)


def test_shortcuts_need_equal_widths_one_line() -> None:
    with pytest.raises(ConfigError, match="shortcuts.*must be equal"):
        build_recipe("medgan", {**TINY, "noise_dim": 8}, _info())
    build_recipe("medgan", {**TINY, "noise_dim": 8, "variant": "gan-pa"}, _info())  # no shortcuts: any widths


@pytest.mark.parametrize(("options", "message"), [
    ({"variant": "wgan"}, "variant must be one of"),
    ({"values": "ordinal"}, "values must be one of"),
    ({"n_critic": 0}, "n_critic must be at least 1"),
    ({"l2": -1.0}, "l2 must be 0 or more"),
])
def test_bad_options_are_one_line_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_recipe("medgan", {**TINY, **options}, _info())


# --- training through the trainer --------------------------------------------------------------------------
def test_autoencoder_pretraining_lowers_the_reconstruction_loss(tmp_path: Path) -> None:
    run = _train(write_records(tmp_path / "toy.csv"), tmp_path / "run", 80, ae_steps=60, checkpoint_every=1000,
                 lr_ae=1e-2)
    rows = _losses(run)
    assert [r["phase"] for r in rows] == ["autoencoder"] * 60 + ["gan"] * 20
    ae = [float(r["loss_ae"]) for r in rows[:60]]
    records = np.loadtxt(tmp_path / "toy.csv", delimiter=",", skiprows=1)[:, 1:]
    p = records.mean(0).clip(1e-6, 1 - 1e-6)
    marginal = float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).sum())  # the best code-by-code guess, per record
    # Lower than at the start and than any model that ignores how codes occur together.
    assert np.mean(ae[-10:]) < np.mean(ae[:5]) - 0.5 and np.mean(ae[-10:]) < marginal
    assert all(r["loss_d"] and r["loss_g"] for r in rows[60:])


def test_binary_runs_generate_zeros_and_ones(tmp_path: Path) -> None:
    run = _train(write_records(tmp_path / "toy.csv"), tmp_path / "run", 30, ae_steps=10)
    model = synthmed.load(run)
    assert isinstance(model.recipe, RecordsRecipe) and model.recipe.values == "binary"
    for sampling in ("round", "draw"):
        records = model.recipe.sample(200, seed=1, sampling=sampling)
        assert records.shape == (200, 12)
        assert set(torch.unique(records).tolist()) <= {0.0, 1.0}
    for sampling in ("round", "draw"):
        first = model.recipe.sample(50, seed=3, sampling=sampling)
        assert torch.equal(first, model.recipe.sample(50, seed=3, sampling=sampling))
        assert not torch.equal(first, model.recipe.sample(50, seed=4, sampling=sampling))


def test_count_runs_generate_counts_and_are_never_binarised(tmp_path: Path) -> None:
    data = write_records(tmp_path / "counts.csv", counts=True)
    run = _train(data, tmp_path / "run", 40, ae_steps=30, checkpoint_every=1000)
    model = synthmed.load(run)
    assert model.recipe.values == "count"  # values=auto took the data's kind
    outputs = model.recipe.generate(torch.randn(300, 16))
    assert bool((outputs >= 0).all()) and float(outputs.max()) > 1.0  # ReLU outputs, not probabilities
    records = model.recipe.sample(300, seed=0)
    assert bool((records == records.round()).all()) and float(records.max()) > 1.0
    drawn = model.recipe.sample(300, seed=0, sampling="draw")
    assert bool((drawn == drawn.round()).all()) and bool((drawn >= 0).all())
    with pytest.raises(ConfigError, match="hold counts.*values=binary would binarise"):
        _train(data, tmp_path / "binary", 2, values="binary")
    assert not (tmp_path / "binary").exists()


def test_the_recipe_refuses_counts_it_was_told_are_binary() -> None:
    """A DataInfo without the data's kind (made in memory): prepare_data checks the records themselves."""
    from synthmed.data.sets import TensorSet

    info = DataInfo(source="mem", channels=2, height=1, width=1, kind="records", columns=("a", "b"))
    recipe = build_recipe("medgan", TINY, info)
    data = TensorSet(tensors={"record": torch.tensor([[0.0, 1.0], [3.0, 0.0]])}, info=info, kind="records",
                     columns=("a", "b"))
    with pytest.raises(ConfigError, match="column 'a' holds 3: values=binary needs 0/1"):
        recipe.prepare_data(data)


def test_generator_and_decoder_learn_in_the_gan_phase_and_the_encoder_does_not(tmp_path: Path) -> None:
    run = _train(write_records(tmp_path / "toy.csv"), tmp_path / "run", 8, ae_steps=5)
    at_switch, last = (ckpt.load_checkpoint(run / "checkpoints" / f"step_{s:08d}.json")[1] for s in (5, 8))
    changed = {k.split(".")[0] for k in last if k.startswith("net/") and not torch.equal(last[k], at_switch[k])}
    assert {"net/G", "net/decoder", "net/D"} <= changed and "net/E" not in changed


@pytest.mark.parametrize("split_at", [3, 5, 6])
def test_resume_across_the_phase_change_is_exact(tmp_path: Path, split_at: int) -> None:
    data = write_records(tmp_path / "toy.csv")
    straight = _train(data, tmp_path / "straight", 9, ae_steps=5)
    _train(data, tmp_path / "split", split_at, ae_steps=5)
    synthmed.train(resume_run=tmp_path / "split", steps=9, progress=False)
    a = ckpt.load_checkpoint(straight / "checkpoints" / "step_00000009.json")[1]
    b = ckpt.load_checkpoint(tmp_path / "split" / "checkpoints" / "step_00000009.json")[1]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _losses(tmp_path / "split") == _losses(straight)


def test_eval_every_keeps_the_best_checkpoint_by_validation_prevalence_r(tmp_path: Path) -> None:
    run = _train(write_records(tmp_path / "toy.csv", n=200), tmp_path / "run", 12, ae_steps=4, eval_every=4,
                 checkpoint_every=4)
    with open(run / "eval.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [4, 8, 12]
    scores = [float(r["val_prevalence_r"]) for r in rows]
    assert all(-1.0 <= s <= 1.0 for s in scores)
    best = ckpt.load_checkpoint(run / "checkpoints" / "best.json")[0]
    assert int(best["step"]) == [4, 8, 12][int(np.argmax(scores))]


def test_validation_score_is_the_prevalence_correlation_by_hand() -> None:
    """A recipe whose generator is replaced by fixed outputs: the score is Pearson r of the prevalences."""
    from synthmed.data.sets import TensorSet

    recipe = build_recipe("medgan", {**TINY, "variant": "gan"}, _info(d=3))
    outputs = torch.tensor([0.9, 0.1, 0.6])  # every synthetic record: codes 0 and 2 present
    recipe.generate = lambda z: outputs.expand(z.shape[0], 3)  # type: ignore[method-assign]
    real = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    data = TensorSet(tensors={"record": real}, info=_info(d=3), kind="records", columns=_info(d=3).columns)
    expected = float(np.corrcoef([0.75, 0.25, 0.25], [1.0, 0.0, 1.0])[0, 1])
    assert recipe.validation_score(data) == pytest.approx(expected)


def test_medgan_is_registered_with_documented_options() -> None:
    from synthmed.recipes.options import describe_options

    names = {o.name for o in describe_options(MedGAN.Config)}
    assert {"variant", "values", "ae_steps", "n_critic", "l2"} <= names
