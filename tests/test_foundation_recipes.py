"""Three recipes of the kinds the next capabilities need, written only against the foundation: paired images
(pix2pix's shape), unpaired domains of different sizes (CycleGAN's, with image pools in the checkpoint) and
tabular records (medGAN's). Each trains 20 steps through the unchanged trainer and resumes exactly; a recipe
given the wrong kind of data is refused before a run directory exists. These recipes are tests, not shipped.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import synthmed
from synthmed import losses as L
from synthmed.cli import app
from synthmed.data.sets import DataSpec
from synthmed.errors import ConfigError
from synthmed.optim import adam
from synthmed.recipes import Preview, Recipe, StepContext, frozen, register_recipe
from synthmed.training import checkpoint as ckpt

STEPS = 20
TRAIN = {"batch_size": 8, "log_every": 5, "sample_every": 10, "checkpoint_every": 1000, "ema_beta": 0.0,
         "device": "cpu"}


def _conv_net(c_in: int, c_out: int, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, width, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(width, c_out, 3, padding=1))


def _critic(c_in: int, width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 1, 4, 2, 1))


@dataclass
class _PairedConfig:
    """Args:
        l1_weight: Weight of the L1 term between output and target.
    """

    l1_weight: float = 10.0


@register_recipe
class _Paired(Recipe):
    """pix2pix's shape: G(image) -> target with L1, D judges (image, target) pairs."""

    name = "test-paired"
    Config = _PairedConfig

    @classmethod
    def data_spec(cls, config):
        return DataSpec("paired", {"image": None, "target": None})

    def __init__(self, config, data_info):
        super().__init__(config, data_info)
        c_in, c_out = data_info.channels, data_info.target_channels
        self.networks["G"] = _conv_net(c_in, c_out)
        self.networks["D"] = _critic(c_in + c_out)

    def configure_optimizers(self):
        return {n: adam(self.networks[n].parameters(), 2e-4, (0.5, 0.999), self.device) for n in ("G", "D")}

    def loss_names(self):
        return ["loss_d", "loss_g", "l1"]

    def train_step(self, batch, ctx: StepContext):
        G, D = self.networks["G"], self.networks["D"]
        image, target = batch["image"], batch["target"]
        fake = torch.tanh(G(image))
        loss_d = L.d_loss_bce(D(torch.cat([image, target], 1)), D(torch.cat([image, fake.detach()], 1)))
        ctx.optimize("D", loss_d)
        with frozen(D):
            l1 = L.l1_loss(fake, target)
            loss_g = L.g_loss_nonsaturating(D(torch.cat([image, fake], 1))) + self.config.l1_weight * l1
            ctx.optimize("G", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "l1": l1.detach()}

    def prepare_data(self, data):
        self.preview_batch = data.batch(torch.arange(4))
        return data

    def preview_inputs(self, n, seed):
        return dict(self.preview_batch)

    @torch.no_grad()
    def preview(self, inputs):
        output = torch.tanh(self.networks["G"](inputs["image"].to(self.device)))
        return Preview(columns={"input": inputs["image"], "output": output, "target": inputs["target"]})


@dataclass
class _UnpairedConfig:
    """Args:
        cycle_weight: Weight of the cycle-consistency terms.
        pool_size: Past fakes kept per domain (Shrivastava et al.; CycleGAN uses 50).
    """

    cycle_weight: float = 10.0
    pool_size: int = 6


@register_recipe
class _Unpaired(Recipe):
    """CycleGAN's shape: two generators, two critics, cycle losses and image pools of past fakes (extra state)."""

    name = "test-unpaired"
    Config = _UnpairedConfig

    @classmethod
    def data_spec(cls, config):
        return DataSpec("unpaired", {"image": None, "target": None})

    def __init__(self, config, data_info):
        super().__init__(config, data_info)
        a, b = data_info.channels, data_info.target_channels
        self.networks.update({"G_AB": _conv_net(a, b), "G_BA": _conv_net(b, a), "D_A": _critic(a),
                              "D_B": _critic(b)})
        side = data_info.height
        self.pools = {"A": torch.zeros(config.pool_size, a, side, side),
                      "B": torch.zeros(config.pool_size, b, side, side)}
        self.pool_fill = torch.zeros(2, dtype=torch.long)

    def configure_optimizers(self):
        nets = self.networks
        return {"G": adam([*nets["G_AB"].parameters(), *nets["G_BA"].parameters()], 2e-4, (0.5, 0.999), self.device),
                "D": adam([*nets["D_A"].parameters(), *nets["D_B"].parameters()], 2e-4, (0.5, 0.999), self.device)}

    def loss_names(self):
        return ["loss_g", "loss_d", "cycle"]

    def _through_pool(self, domain: str, index: int, fakes: torch.Tensor) -> torch.Tensor:
        """Half the time a stored past fake replaces a new one (the pool's randomness is the global RNG's)."""
        pool = self.pools[domain].to(fakes.device)
        out = fakes.detach().clone()
        for i in range(out.shape[0]):
            fill = int(self.pool_fill[index])
            if fill < pool.shape[0]:
                pool[fill] = out[i]
                self.pool_fill[index] += 1
            elif torch.rand(()) < 0.5:
                j = int(torch.randint(pool.shape[0], ()))
                pool[j], out[i] = out[i].clone(), pool[j].clone()
        self.pools[domain] = pool
        return out

    def train_step(self, batch, ctx: StepContext):
        n = self.networks
        a, b = batch["image"], batch["target"]
        fake_b, fake_a = torch.tanh(n["G_AB"](a)), torch.tanh(n["G_BA"](b))
        with frozen(n["D_A"]), frozen(n["D_B"]):
            cycle = L.cycle_consistency_loss(a, torch.tanh(n["G_BA"](fake_b))) + \
                L.cycle_consistency_loss(b, torch.tanh(n["G_AB"](fake_a)))
            loss_g = L.g_loss_least_squares(n["D_B"](fake_b)) + L.g_loss_least_squares(n["D_A"](fake_a)) + \
                self.config.cycle_weight * cycle
            ctx.optimize("G", loss_g)
        pooled_b, pooled_a = self._through_pool("B", 1, fake_b), self._through_pool("A", 0, fake_a)
        loss_d = L.d_loss_least_squares(n["D_B"](b), n["D_B"](pooled_b)) + \
            L.d_loss_least_squares(n["D_A"](a), n["D_A"](pooled_a))
        ctx.optimize("D", loss_d)
        return {"loss_g": loss_g.detach(), "loss_d": loss_d.detach(), "cycle": cycle.detach()}

    def extra_state(self):
        return {"pool_a": self.pools["A"], "pool_b": self.pools["B"], "pool_fill": self.pool_fill}

    def load_extra_state(self, state):
        self.pools = {"A": state["pool_a"].clone(), "B": state["pool_b"].clone()}
        self.pool_fill = state["pool_fill"].clone()

    def prepare_data(self, data):
        self.preview_a = data.domain_a.batch(torch.arange(4))["image"]
        return data

    def preview_inputs(self, n, seed):
        return {"image": self.preview_a}

    @torch.no_grad()
    def preview(self, inputs):
        a = inputs["image"].to(self.device)
        fake_b = torch.tanh(self.networks["G_AB"](a))
        return Preview(columns={"A": a, "A->B": fake_b, "A->B->A": torch.tanh(self.networks["G_BA"](fake_b))})


@dataclass
class _RecordsConfig:
    """Args:
        latent_dim: Length of the noise vector.
        hidden: Width of the hidden layers.
    """

    latent_dim: int = 16
    hidden: int = 32


@register_recipe
class _Records(Recipe):
    """medGAN's shape: an MLP generator of code vectors (sigmoid), an MLP critic, code-frequency previews."""

    name = "test-records"
    Config = _RecordsConfig

    @classmethod
    def data_spec(cls, config):
        return DataSpec("records", {"record": None})

    def __init__(self, config, data_info):
        super().__init__(config, data_info)
        d, h = data_info.channels, config.hidden
        self.networks["G"] = nn.Sequential(nn.Linear(config.latent_dim, h), nn.ReLU(), nn.Linear(h, d))
        self.networks["D"] = nn.Sequential(nn.Linear(d, h), nn.LeakyReLU(0.2), nn.Linear(h, 1))
        self.real_frequencies = torch.zeros(d)

    def configure_optimizers(self):
        return {n: adam(self.networks[n].parameters(), 1e-3, (0.5, 0.999), self.device) for n in ("G", "D")}

    def loss_names(self):
        return ["loss_d", "loss_g"]

    def _generate(self, n: int, device) -> torch.Tensor:
        return torch.sigmoid(self.networks["G"](torch.randn(n, self.config.latent_dim, device=device)))

    def train_step(self, batch, ctx: StepContext):
        real = batch["record"]
        fake = self._generate(real.shape[0], real.device)
        D = self.networks["D"]
        loss_d = L.d_loss_bce(D(real), D(fake.detach()))
        ctx.optimize("D", loss_d)
        with frozen(D):
            loss_g = L.g_loss_nonsaturating(D(fake))
            ctx.optimize("G", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def prepare_data(self, data):
        self.real_frequencies = (data.tensors["record"] > 0).float().mean(0)
        return data

    def preview_inputs(self, n, seed):
        return {"z": torch.randn(256, self.config.latent_dim, generator=torch.Generator().manual_seed(seed))}

    @torch.no_grad()
    def preview(self, inputs):
        fake = torch.sigmoid(self.networks["G"](inputs["z"].to(self.device))) > 0.5
        return Preview(frequencies={"real": self.real_frequencies.cpu(), "synthetic": fake.float().mean(0).cpu()},
                       names=self.data_info.columns)


# --- data the recipes train on --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paired_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """24 grey images and their vessel-like binary masks, matched by name (``7_image.png`` / ``7_mask.png``)."""
    root = tmp_path_factory.mktemp("paired")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        picture = rng.integers(0, 255, (16, 16), dtype=np.uint8)
        Image.fromarray(picture).save(images / f"{i}_image.png")
        Image.fromarray(((picture > 128) * 255).astype(np.uint8)).save(masks / f"{i}_mask.png")
    return images, masks


@pytest.fixture(scope="module")
def unpaired_arrays(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Domain A: 40 images; domain B: 23 images of other content (two npz files, different sizes)."""
    root = tmp_path_factory.mktemp("unpaired")
    rng = np.random.default_rng(1)
    a, b = root / "a.npz", root / "b.npz"
    np.savez(a, images=rng.integers(0, 128, (40, 16, 16), dtype=np.uint8))
    np.savez(b, images=rng.integers(100, 255, (23, 16, 16), dtype=np.uint8))
    return a, b


@pytest.fixture(scope="module")
def records_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 patients x 12 binary diagnosis codes with a patient id column."""
    path = tmp_path_factory.mktemp("records") / "codes.csv"
    rng = np.random.default_rng(2)
    codes = [f"ICD_{i:02d}" for i in range(12)]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", *codes])
        for p in range(60):
            writer.writerow([f"p{p:03d}", *(rng.random(12) < np.linspace(0.05, 0.6, 12)).astype(int)])
    return path


def _runs(kind: str, folders) -> tuple[str | Path, dict]:
    if kind == "paired":
        return folders[0], {"recipe": "test-paired", "target": str(folders[1]), "split": "all"}
    if kind == "unpaired":
        return folders[0], {"recipe": "test-unpaired", "target": str(folders[1]), "kind": "unpaired",
                            "split": "all"}
    return folders, {"recipe": "test-records"}


def _losses(run: Path) -> list[dict[str, str]]:
    with open(run / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("kind", ["paired", "unpaired", "records"])
def test_recipe_of_each_kind_trains_and_resumes_exactly(tmp_path: Path, kind: str, request) -> None:
    folders = request.getfixturevalue({"paired": "paired_folders", "unpaired": "unpaired_arrays",
                                       "records": "records_csv"}[kind])
    data, options = _runs(kind, folders)
    straight = synthmed.train(data, out=tmp_path / "straight", steps=STEPS, progress=False, **TRAIN, **options)
    assert straight.steps == STEPS
    rows = _losses(straight.run_dir)
    assert len(rows) == STEPS and all(float(v) == float(v) for r in rows for k, v in r.items() if k != "phase")
    assert (straight.run_dir / "samples" / "step_00000010.png").is_file()

    synthmed.train(data, out=tmp_path / "split", steps=8, progress=False, **TRAIN, **options)
    resumed = synthmed.train(resume_run=tmp_path / "split", steps=STEPS, progress=False)
    assert resumed.steps == STEPS
    assert _losses(tmp_path / "split") == rows
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight.run_dir / "checkpoints"))[1]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints"))[1]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if kind == "unpaired":
        assert "extra/sampler_a/order" in a and "extra/sampler_b/order" in a and "extra/recipe/pool_a" in a
        assert a["extra/sampler_a/order"].numel() != a["extra/sampler_b/order"].numel()


def test_previews_show_what_the_recipe_says(tmp_path: Path, paired_folders, records_csv) -> None:
    paired = synthmed.train(paired_folders[0], out=tmp_path / "p", steps=2, progress=False,
                            target=str(paired_folders[1]), recipe="test-paired", split="all", **TRAIN).run_dir
    picture = Image.open(paired / "samples" / "step_00000002.png")
    assert picture.width / picture.height == pytest.approx(3 / 4, abs=0.05)  # 4 rows: input | output | target
    records = synthmed.train(records_csv, out=tmp_path / "r", steps=2, progress=False, recipe="test-records",
                             **TRAIN).run_dir
    assert Image.open(records / "samples" / "step_00000002.png").size[0] > 100  # a matplotlib plot


def test_wrong_kind_of_data_is_refused_before_a_run_directory(tmp_path: Path, records_csv) -> None:
    with pytest.raises(ConfigError, match=r"recipe 'test-paired' needs paired data \(image -> target\); "
                                          r"breastmnist gives images: pass --target"):
        synthmed.train(out=tmp_path / "a", steps=2, progress=False, recipe="test-paired", **TRAIN)
    with pytest.raises(ConfigError, match="recipe 'unconditional' needs images; .*codes.csv gives tabular records"):
        synthmed.train(records_csv, out=tmp_path / "b", steps=2, progress=False, **TRAIN)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="--eval-every scores generated images .*codes.csv gives records"):
        synthmed.train(records_csv, out=tmp_path / "c", steps=2, progress=False, recipe="test-records",
                       eval_every=1, **TRAIN)
    assert not (tmp_path / "c").exists()


def test_images_and_masks_need_a_pair_option_for_a_paired_recipe(tmp_path: Path) -> None:
    npz = tmp_path / "scans.npz"
    rng = np.random.default_rng(3)
    np.savez(npz, images=rng.integers(0, 255, (30, 16, 16), dtype=np.uint8),
             masks=(rng.random((30, 16, 16)) > 0.5).astype(np.uint8))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(npz), "--recipe", "test-paired", "--out", str(run),
                                      "--steps", "2", "--split", "all", "--quiet"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert ("recipe 'test-paired' needs paired data (image -> target); " in result.output
            and "gives images and masks: pass --pair image:mask" in result.output), result.output
    assert not run.exists()
    fixed = CliRunner().invoke(app, ["train", "--data", str(npz), "--recipe", "test-paired", "--out", str(run),
                                     "--steps", "2", "--split", "all", "--pair", "image:mask", "--batch-size", "8",
                                     "--quiet"])
    assert fixed.exit_code == 0, fixed.output


def test_recipe_help_lists_its_options_and_flags_reach_its_config(tmp_path: Path, paired_folders) -> None:
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['synthmed', 'train', '--recipe', "
                            "'unconditional', '--help']; from synthmed.cli import main; main()"],
                           capture_output=True, text=True)
    assert shown.returncode == 0
    for needle in ("Options of recipe 'unconditional'", "--gp-weight", "float = 10.0", "--diffaugment",
                   "WGAN-GP gradient penalty"):
        assert needle in shown.stdout, needle
    run = tmp_path / "flags"
    result = CliRunner().invoke(app, ["train", "--out", str(run), "--steps", "1", "--batch-size", "8", "--quiet",
                                      "--loss", "wgan-gp", "--n-critic", "2", "--betas", "0.1,0.8", "--no-ttur",
                                      "-o", "g_channels=8", "--d-channels=8"])
    assert result.exit_code == 0, result.output
    import yaml

    options = yaml.safe_load((run / "config.yaml").read_text())["recipe_options"]
    assert options["loss"] == "wgan-gp" and options["n_critic"] == 2 and options["betas"] == [0.1, 0.8]
    assert options["ttur"] is False and options["g_channels"] == 8 and options["d_channels"] == 8
    bad = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "bad"), "--gp-wieght", "3"])
    assert bad.exit_code == 2 and "has no option(s) gp_wieght" in bad.output
    assert not (tmp_path / "bad").exists()


def test_every_option_of_every_recipe_has_help() -> None:
    from synthmed.recipes import RECIPES
    from synthmed.recipes.options import describe_options

    shipped = [cls for cls in RECIPES.values() if cls.__module__.startswith("synthmed.")]
    assert shipped
    for cls in [*shipped, _Paired, _Unpaired, _Records]:
        assert describe_options(cls.Config)


def test_tuple_options_take_their_element_types() -> None:
    from synthmed.recipes.base import _coerce

    assert _coerce("r", "x", tuple[int, ...], "3,4") == (3, 4)
    assert _coerce("r", "x", tuple[float, float], "0.5,0.999") == (0.5, 0.999)
    assert _coerce("r", "x", tuple[str, ...], ["a", "b"]) == ("a", "b")
    with pytest.raises(ConfigError, match="expected"):
        _coerce("r", "x", tuple[int, ...], "3,4.5")
    with pytest.raises(ConfigError, match="expected"):
        _coerce("r", "x", tuple[float, float], "1,2,3")


def test_preview_columns_are_drawn_side_by_side(tmp_path: Path) -> None:
    from synthmed.viz.preview import save_preview

    a, b = torch.full((3, 1, 8, 8), -1.0), torch.full((3, 3, 8, 8), 1.0)
    path = save_preview(tmp_path / "p.png", Preview(columns={"in": a, "out": b}))
    picture = np.asarray(Image.open(path).convert("L"))
    assert picture.shape[1] / picture.shape[0] == pytest.approx(2 / 3, abs=0.05)  # 3 rows x 2 columns
    left, right = picture[:, : picture.shape[1] // 2], picture[:, picture.shape[1] // 2:]
    assert np.median(left) < 64 and np.median(right) > 192  # black inputs left, white outputs right
