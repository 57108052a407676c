"""The command line: help, sample/explore, and bad input ending in one line, exit != 0, no run directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from synthmed.cli import app

runner = CliRunner()
TINY_ARGS = ["--batch-size", "16", "-o", "g_channels=8", "-o", "d_channels=8", "-o", "latent_dim=16", "--quiet",
             "--sample-every", "1000", "--checkpoint-every", "1000"]


def test_help_lists_every_command_with_one_line() -> None:
    import typer

    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})  # wide: a one-line summary must not wrap
    assert result.exit_code == 0, result.output
    commands = typer.main.get_command(app).commands  # whatever the app registers
    assert {"train", "sample", "explore", "evaluate"} <= set(commands)
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Commands" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("╰"))
    rows = [line.strip(" │") for line in lines[start + 1 : end]]
    assert len(rows) == len(commands), rows  # one line per command: no missing one, no wrapped description
    for row, (name, command) in zip(rows, commands.items(), strict=True):
        listed, _, description = row.partition(" ")
        summary = (command.help or "").strip().splitlines()[0]
        assert listed == name and description.strip() == summary and len(summary) > 10, (name, row, summary)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "3", *TINY_ARGS])
    assert result.exit_code == 0, result.output
    return out


def test_sample_writes_pngs_and_npz(trained_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", str(trained_run), "-n", "5", "--out", str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "png").iterdir())
    assert len(files) == 5
    with Image.open(files[0]) as img:
        assert img.size == (28, 28) and img.mode == "L"
    result = runner.invoke(app, ["sample", str(trained_run), "-n", "7", "--out", str(tmp_path / "npz"),
                                 "--format", "npz"])
    assert result.exit_code == 0, result.output
    arrays = np.load(tmp_path / "npz" / "samples.npz")
    assert arrays["images"].shape == (7, 28, 28) and arrays["images"].dtype == np.uint8


def test_sample_is_reproducible_by_seed(trained_run: Path) -> None:
    import synthmed

    model = synthmed.load(trained_run)
    assert (model.sample(4, seed=1) == model.sample(4, seed=1)).all()
    assert not (model.sample(4, seed=1) == model.sample(4, seed=2)).all()


def test_sample_refuses_a_non_empty_folder(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["sample", str(trained_run), "-n", "2", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_explore_writes_a_grid_of_walks(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "walks.png"
    result = runner.invoke(app, ["explore", str(trained_run), "--out", str(out), "--walks", "3", "--steps", "5"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        # 28 px tiles with 2 px padding, 5 columns by 3 rows, enlarged 4x for viewing.
        assert img.size == ((5 * (28 + 2) + 2) * 4, (3 * (28 + 2) + 2) * 4)


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir()
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    wrong_keys = tmp / "wrong.npz"
    np.savez(wrong_keys, pixels=np.zeros((4, 8, 8), np.uint8))
    empty_dicom = tmp / "empty.dcm"
    empty_dicom.write_bytes(b"")
    missing = tmp / "does-not-exist"
    return {
        "missing path": (["--data", str(missing)], str(missing)),
        "empty folder": (["--data", str(empty)], str(empty)),
        "corrupt png": (["--data", str(corrupt)], str(corrupt / "scan.png")),
        "npz wrong keys": (["--data", str(wrong_keys)], str(wrong_keys)),
        "unknown medmnist name": (["--data", "medmnist:notamnist"], "notamnist"),
        "unknown medmnist size": (["--data", "medmnist:dermamnist", "--size", "99"], "99"),
        "zero-byte dicom": (["--data", str(empty_dicom)], str(empty_dicom)),
        "unknown arch": (["--arch", "unet"], "unet"),
        "unknown augmentation": (["--diffaugment", "colour"], "colour"),
        "unknown norm": (["-o", "d_norm=spectral"], "spectral"),
        "unsupported size": (["--size", "48"], "pad_to"),
        "option of the wrong type": (["-o", "gp_weight=lots"], "gp_weight"),
        "incompatible options": (["--loss", "wgan-gp", "--label-smoothing", "0.1"], "wgan-gp"),
    }


@pytest.mark.parametrize("case", ["missing path", "empty folder", "corrupt png", "npz wrong keys",
                                  "unknown medmnist name", "unknown medmnist size", "zero-byte dicom",
                                  "unknown arch", "unknown augmentation", "unknown norm", "unsupported size",
                                  "option of the wrong type", "incompatible options"])
def test_bad_input_gives_one_line_naming_the_file_and_no_run_directory(tmp_path: Path, case: str) -> None:
    args, must_name = _bad_inputs(tmp_path)[case]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out), "--steps", "2", *args, *TINY_ARGS])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("synthmed: error: ") and must_name in lines[0]
    assert "Traceback" not in result.output
    assert not out.exists(), "a run directory was left behind"


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    done = subprocess.run([sys.executable, "-m", "synthmed", "train", "--data", str(missing), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and str(missing) in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_resume_of_something_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 2 and "not a synthmed run directory" in result.stderr


def test_resume_refuses_changed_options(trained_run: Path) -> None:
    result = runner.invoke(app, ["train", "--resume", str(trained_run), "--loss", "hinge"])
    assert result.exit_code == 2 and "keeps its configuration" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(trained_run), "--data", "elsewhere.npz"])
    assert result.exit_code == 2 and "--data" in result.stderr


def test_threads_option_reaches_the_trainer(tmp_path: Path) -> None:
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "one-thread"
    try:
        result = runner.invoke(app, ["train", "--out", str(out), "--steps", "2", "--threads", "1", *TINY_ARGS])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "num_threads: 1" in (out / "config.yaml").read_text()
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--threads", "0", *TINY_ARGS])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists(), bad.output
    assert bad.stderr.strip() == "synthmed: error: --threads must be at least 1 (got 0)", bad.stderr


def test_resume_takes_a_thread_count(trained_run: Path, tmp_path: Path) -> None:
    """Threads are how this machine runs the work, not the run's configuration: a resume on another machine (or
    beside other work) must be able to set them (it was refused as a changed option: bug)."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that 1 afterwards is the option's doing, not torch's default on one core
    try:
        result = runner.invoke(app, ["train", "--resume", str(run), "--steps", "4", "--threads", "1"])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    training = json.loads((run / "metrics.json").read_text())["training"]
    assert training["step"] == 4 and training["last_session"]["threads"] == 1
    assert "num_threads: 1" in (run / "config.yaml").read_text()


def test_a_thread_count_below_one_is_refused_by_the_api_too(trained_run: Path, tmp_path: Path) -> None:
    # The CLI checked --threads; the Python API let 0 through (ignored, yet written to config.yaml) and a negative
    # count reached torch as a bare RuntimeError.
    import shutil

    import synthmed
    from synthmed.errors import ConfigError

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    for bad in (0, -2):
        with pytest.raises(ConfigError, match=f"--threads must be at least 1 \\(got {bad}\\)"):
            synthmed.train(out=tmp_path / f"run{bad}", steps=1, num_threads=bad, progress=False)
        assert not (tmp_path / f"run{bad}").exists()
        with pytest.raises(ConfigError, match="at least 1"):
            synthmed.train(resume_run=run, steps=4, num_threads=bad, progress=False)


def test_help_keeps_the_bracketed_defaults() -> None:
    """Rich read "[default: 3000]" as a markup tag and dropped it from every --help (bug)."""
    from synthmed.training.config import TrainConfig

    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    # The help text is written out (importing the config would load torch for every --help): it must follow it.
    assert f"(generator iterations) [default: {TrainConfig().steps}]" in text
    text = runner.invoke(app, ["experiment", "augmentation", "--help"], env={"COLUMNS": "200"}).output
    assert "[default: the embedded BreastMNIST]" in " ".join(text.replace("│", " ").split())
