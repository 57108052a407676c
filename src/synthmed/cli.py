"""The ``synthmed`` command. Each command parses its options and calls the Python API in :mod:`synthmed.api`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from synthmed.errors import SynthmedError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    help="synthmed: generative adversarial networks for medical data.",
)


def _fail(message: str, code: int = 2) -> None:
    # One line on stderr, never a traceback, for any problem the user can fix.
    print(f"synthmed: error: {' '.join(message.split())}", file=sys.stderr)
    raise typer.Exit(code)


def _parse_option(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        _fail(f"--option expects KEY=VALUE (got {text!r})")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), yaml.safe_load(value)


@app.command()
def train(
    data: str = typer.Option(None, "--data", "-d", help="Data: a folder, an .npz, a DICOM/NIfTI file, "
                             "medmnist:NAME, or omitted for the embedded BreastMNIST."),
    size: int = typer.Option(None, help="Resize images to SIZE x SIZE (centre-cropped to square first)."),
    channels: str = typer.Option(None, help="Channels to keep, by index or name (e.g. 1 or flair)."),
    split: str = typer.Option("train", help="Split to train on (train, val or all); the test split is refused."),
    folder_groups: str = typer.Option("auto", help="Image folders: sub-folders are 'class'es or 'patient's."),
    recipe: str = typer.Option("unconditional", help="Recipe (task) to train."),
    arch: str = typer.Option(None, help="Network family: dcgan or resnet."),
    loss: str = typer.Option(None, help="Adversarial loss: bce, lsgan, wgan-gp or hinge."),
    steps: int = typer.Option(None, help="Training steps (generator iterations) [default: 3000]."),
    max_minutes: float = typer.Option(None, help="Stop after this many minutes (checkpoint saved)."),
    batch_size: int = typer.Option(None, help="Batch size per process [default: 64]."),
    seed: int = typer.Option(None, help="Random seed; runs are deterministic on CPU [default: 0]."),
    out: Path = typer.Option(None, help="Run directory [default: runs/NAME]."),
    name: str = typer.Option("", help="Run name [default: data-arch-loss-timestamp]."),
    resume: str = typer.Option(None, help="Continue this run (directory or name) from its last checkpoint."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:1 or mps [default: auto]."),
    precision: str = typer.Option(None, help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="CPU threads (torch.set_num_threads) [default: torch's, one per core]; "
                                     "1 is faster when other work shares the cores."),
    sample_every: int = typer.Option(None, help="Write a sample grid every N steps [default: 250]."),
    checkpoint_every: int = typer.Option(None, help="Write a checkpoint every N steps [default: 500]."),
    ema_beta: float = typer.Option(None, help="EMA decay of the sampling generator; 0 disables [default: 0.999]."),
    diffaugment: str = typer.Option(None, help="DiffAugment policy, e.g. translation,cutout,color."),
    label_smoothing: float = typer.Option(None, help="One-sided label smoothing (real target 1 - s)."),
    label_noise: float = typer.Option(None, help="Uniform noise on discriminator targets."),
    label_flip: float = typer.Option(None, help="Probability of flipping a discriminator target."),
    instance_noise: float = typer.Option(None, help="Instance noise std, annealed to 0."),
    ttur: bool = typer.Option(None, "--ttur/--no-ttur", help="Discriminator learning rate 4x the generator's."),
    feature_matching: float = typer.Option(None, help="Weight of the feature-matching generator loss."),
    minibatch_discrimination: bool = typer.Option(None, "--minibatch-discrimination/--no-minibatch-discrimination",
                                                  help="Minibatch discrimination layer in D."),
    eval_every: int = typer.Option(None, help="Score FID every N steps and keep checkpoints/best.*."),
    eval_features: str = typer.Option(None, help="Feature space of that FID: radiomics or inception."),
    eval_samples: int = typer.Option(None, help="Synthetic images per evaluation [default: 500]."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Any recipe option as KEY=VALUE (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a GAN and write a run directory (checkpoints, sample grids, losses, curves)."""
    from synthmed import api
    from synthmed.train.trainer import TrainingInterrupted

    given = {k: v for k, v in {
        "size": size, "channels": channels, "steps": steps, "max_minutes": max_minutes,
        "batch_size": batch_size, "seed": seed, "device": device, "precision": precision, "num_threads": threads,
        "sample_every": sample_every, "checkpoint_every": checkpoint_every, "ema_beta": ema_beta,
        "arch": arch, "loss": loss, "diffaugment": diffaugment, "label_smoothing": label_smoothing,
        "label_noise": label_noise, "label_flip": label_flip, "instance_noise": instance_noise, "ttur": ttur,
        "feature_matching": feature_matching, "minibatch_discrimination": minibatch_discrimination,
        "eval_every": eval_every, "eval_features": eval_features, "eval_samples": eval_samples,
    }.items() if v is not None}
    if split != "train":
        given["split"] = split
    if folder_groups != "auto":
        given["folder_groups"] = folder_groups
    for text in option or []:
        key, value = _parse_option(text)
        given[key] = value
    if resume is not None:
        fixed = [flag for flag, value in (("--data", data), ("--out", out), ("--name", name),
                                          ("--recipe", None if recipe == "unconditional" else recipe)) if value]
        if fixed:
            _fail(f"a resumed run keeps its data, recipe and directory; drop {', '.join(fixed)}")
    try:
        if resume is not None:
            result = api.train(resume_run=resume, progress=not quiet, **given)
        else:
            result = api.train(data, recipe=recipe, out=out, name=name, progress=not quiet, **given)
    except TrainingInterrupted as stop:
        print(f"synthmed: {stop}", file=sys.stderr)
        raise typer.Exit(130) from None
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"run: {result.run_dir}  steps: {result.steps}  stopped: {result.stopped_because}  "
          f"time: {result.wall_seconds:.0f} s")


@app.command()
def sample(
    run: str = typer.Argument(..., help="Run directory (or name under runs/)."),
    n: int = typer.Option(64, "-n", help="Number of images."),
    out: Path = typer.Option(..., "--out", help="New or empty output folder."),
    fmt: str = typer.Option("png", "--format", help="png (one file per image) or npz (one file)."),
    seed: int = typer.Option(0, help="Seed of the latent vectors."),
    checkpoint: str = typer.Option(None, help="'best' (with --eval-every) or a checkpoint JSON [default: latest]."),
) -> None:
    """Generate N images from a trained run into a folder (PNG files or one npz)."""
    from synthmed import api

    try:
        path = api.sample(run, n, out, fmt=fmt, seed=seed, checkpoint=checkpoint)
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"wrote {n} images to {path}")


@app.command()
def explore(
    run: str = typer.Argument(..., help="Run directory (or name under runs/)."),
    out: Path = typer.Option(None, "--out", help="PNG to write [default: RUN/explore.png]."),
    walks: int = typer.Option(6, help="Number of walks (rows)."),
    steps: int = typer.Option(10, help="Images per walk (columns)."),
    seed: int = typer.Option(0, help="Seed of the walks' end points."),
) -> None:
    """Picture of latent walks: spherical interpolation between random seeds, one walk per row."""
    from synthmed import api

    try:
        path = api.explore(run, out, walks=walks, steps=steps, seed=seed)
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"wrote {path}")


@app.command()
def evaluate(
    real: str = typer.Option(None, "--real", help="Held-out real images (folder, npz, medmnist:NAME) [default: the "
                             "test split of a run's data]."),
    fake: str = typer.Option(..., "--fake", help="Synthetic images: a folder, an npz, or a run directory."),
    train: str = typer.Option(None, "--train", help="Real training images (domain features, memorisation) [default: "
                              "a run's training data]."),
    features: str = typer.Option("domain,radiomics", help="Feature spaces: any of domain, radiomics, inception."),
    out: Path = typer.Option(..., "--out", help="New or empty folder for metrics.json, report.md and pictures."),
    real_split: str = typer.Option("auto", help="Split of --real: auto = test where the source has splits, else all."),
    fake_split: str = typer.Option("all", help="Split of --fake to use when it is a data source."),
    train_split: str = typer.Option("train", help="Split of --train to use."),
    size: int = typer.Option(None, help="Resize every set to SIZE px."),
    channels: str = typer.Option(None, help="Channels to keep (index or name)."),
    n_fake: int = typer.Option(None, help="Synthetic images to sample from a run [default: as many as real]."),
    domain_model: Path = typer.Option(None, help="A saved domain feature network (JSON) instead of fitting one."),
    weights: Path = typer.Option(None, help="Inception TorchScript weights (inception-2015-12-05.pt)."),
    bootstrap: int = typer.Option(100, help="Bootstrap resamples for the FID interval (0: none)."),
    seed: int = typer.Option(0, help="Seed of sampling, subsets and bootstrap."),
    device: str = typer.Option("cpu", help="Device for feature extraction (cpu, cuda)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fidelity, diversity and memorisation of synthetic images, each in a named feature space."""
    from synthmed.metrics.evaluate import evaluate as run_evaluation

    try:
        result = run_evaluation(
            real, fake, train=train, features=tuple(features.split(",")), out=out, real_split=real_split,
            fake_split=fake_split, train_split=train_split, size=size, channels=channels, n_fake=n_fake,
            domain_model=domain_model, inception_weights=weights, bootstrap=bootstrap, seed=seed, device=device,
            progress=not quiet,
        )
    except SynthmedError as exc:
        _fail(str(exc))
    for m in result.metrics:
        if m.name in ("fid", "kid", "precision", "recall") or m.name.startswith("ms_ssim"):
            spread = f" [{m.interval[0]:.4g}, {m.interval[1]:.4g}]" if m.interval else (
                f" +- {m.std:.3g}" if m.std is not None else "")
            print(f"{m.extractor:>10}  {m.name:<12} {m.value:.4g}{spread}")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"synthmed: warning: {' '.join(str(message).split())}\n"


def main() -> None:
    import warnings

    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    app()


if __name__ == "__main__":
    main()
