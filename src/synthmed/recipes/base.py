"""The recipe interface: which networks, which losses, and what one training step does.

The trainer (``synthmed.training``) owns everything that is the same for every GAN: device, mixed precision,
data-parallel gradient averaging, EMA, checkpoints, logging, budgets and signals. A recipe owns everything that
differs: it builds its networks, its optimisers, and performs one training step through a
:class:`~synthmed.recipes.step.StepContext`. Adding a GAN variant means adding or editing a recipe, never the
trainer. See ``docs/architecture.md`` for how each planned recipe maps onto this interface.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from synthmed.data.dataset import DataInfo
from synthmed.data.sets import DataSpec, TrainingSet
from synthmed.errors import ConfigError
from synthmed.recipes.step import StepContext


@dataclass(frozen=True)
class Phase:
    """A stage of training with its own step function behaviour (e.g. autoencoder pre-training, then GAN).

    ``steps=None`` means "the rest of the run's budget"; only the last phase may leave it open.
    """

    name: str
    steps: int | None = None


@dataclass
class Preview:
    """What a recipe's periodic preview shows; :mod:`synthmed.viz.preview` draws it.

    One of: ``grid`` (N, C, H, W) images in [-1, 1]; ``columns``, named image batches shown side by side per
    sample (input | output | target); ``frequencies``, named (D,) vectors of per-code frequencies (real vs
    synthetic records) with ``names`` the codes.
    """

    grid: torch.Tensor | None = None
    columns: dict[str, torch.Tensor] = field(default_factory=dict)
    frequencies: dict[str, torch.Tensor] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    #: Images per row of ``grid`` (a class-conditional grid: one row per class); ``None``: a square grid.
    nrow: int | None = None


class Recipe(abc.ABC):
    """Base class of all recipes. Subclasses set ``name``, ``Config`` and implement the abstract methods.

    Every hook the trainer or the API calls is declared here; those with a default may be left alone.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    #: Networks that get an exponential-moving-average copy named ``<name>_ema`` (used for sampling).
    ema_sources: ClassVar[tuple[str, ...]] = ()
    #: Convolutional recipes run faster with NHWC tensors on CPU (measured 1.0-1.75x for DCGAN).
    prefers_channels_last: ClassVar[bool] = False
    #: Options added after runs were recorded whose default now depends on the run (the image size, say), with the
    #: value a recorded run that lacks them trained with: loading or resuming such a run fills them in, so it goes on
    #: as it trained instead of taking today's default.
    absent_from_older_runs: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: Any, data_info: DataInfo) -> None:
        self.config = config
        self.data_info = data_info
        self.networks = nn.ModuleDict()
        self.device = torch.device("cpu")

    # --- construction ----------------------------------------------------------------------------------
    def add_ema_copies(self, beta: float) -> None:
        """Create frozen EMA copies of ``ema_sources`` (called by the recipe's constructor when EMA is on)."""
        if beta <= 0:
            return
        for name in self.ema_sources:
            shadow = copy.deepcopy(self.networks[name])
            shadow.requires_grad_(False)
            self.networks[f"{name}_ema"] = shadow

    def ema_pairs(self) -> list[tuple[str, str]]:
        """(network, its EMA copy) pairs the trainer averages after each step; asked again when a phase begins."""
        return [(n, f"{n}_ema") for n in self.ema_sources if f"{n}_ema" in self.networks]

    def to(self, device: torch.device, channels_last: bool = False) -> Recipe:
        self.device = device
        self.networks.to(device)
        if channels_last:
            self.networks.to(memory_format=torch.channels_last)
        return self

    @classmethod
    def data_spec(cls, config: Any) -> DataSpec:
        """The data this recipe trains on (kind, batch keys, channel counts), checked before a run starts.

        Default: images with an ``image`` key of any channel count."""
        return DataSpec("images", {"image": None})

    @abc.abstractmethod
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name; ``StepContext.optimize(name, loss)`` steps them."""

    def phases(self) -> list[Phase]:
        return [Phase("train")]

    def start_phase(self, phase: str, resumed: bool = False) -> None:
        """Hook called when a phase begins: freeze networks, copy weights, build a stage's optimiser state.

        ``resumed`` is True when a run resumes inside ``phase`` from a checkpoint: the networks already hold the
        trained weights, so one-off initialisations (e.g. BAGAN copying its decoder into G) must be skipped.
        Default: nothing to do.
        """
        return None

    def prepare_data(self, data: TrainingSet) -> TrainingSet:
        """Last data transform before training (e.g. pad 28 px to the network's 32 px). Default: unchanged."""
        return data

    def check_batch_size(self, batch_size: int) -> None:
        """Refuse (:class:`~synthmed.errors.ConfigError`) a per-process batch too small for the recipe's options;
        the trainer asks before the run directory exists, so a bad combination never fails at the first step.
        Default: any batch will do."""
        return None

    # --- training --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def loss_names(self) -> list[str]:
        """Every loss ``train_step`` can return, in ``losses.csv`` column order."""

    @abc.abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One training step. Returns detached scalar tensors (never ``.item()``: that syncs the device)."""

    # --- outputs ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Fixed inputs for the periodic preview, drawn from their own generator (never the global RNG)."""

    @abc.abstractmethod
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview | torch.Tensor:
        """What the periodic preview shows: a :class:`Preview`, or images (N, C, H, W) in [-1, 1] for a grid."""

    def refresh_sampling_statistics(self) -> None:
        """Before sampling or scoring: bring statistics the sampling networks keep up to date (e.g. the batch-norm
        statistics of an EMA generator). Default: nothing to do."""
        return None

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Tensors beyond networks and optimisers that a resume needs (e.g. CycleGAN's image pools)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned. Default: there is nothing to restore."""
        return None

    #: Name of the score :meth:`validation_score` returns (higher is better), or None: the recipe has no
    #: validation score, and ``--eval-every`` scores generated images (FID) instead.
    validation_metric: ClassVar[str | None] = None

    def validation_score(self, data: TrainingSet) -> float:
        """The recipe's score on held-out ``data`` (the validation split), higher is better; used with
        ``--eval-every`` to keep the best checkpoint. Only recipes that set :attr:`validation_metric` have one."""
        raise ConfigError(f"recipe {self.name!r} has no validation score")

    def summary(self) -> dict[str, Any]:
        from synthmed.nn import count_parameters

        return {name: count_parameters(net) for name, net in self.networks.items()}


class GenerativeRecipe(Recipe):
    """A recipe whose trained model maps a latent vector to an image (``synthmed sample`` / ``explore``)."""

    latent_dim: int = 0

    @abc.abstractmethod
    def generate(self, z: torch.Tensor, **conditions: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (cropped to the data's size) from latents ``z``; uses the EMA generator if any."""

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256) -> torch.Tensor:
        """``n`` images on the CPU, reproducible from ``seed``, generated in batches."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        chunks = []
        for start in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - start), self.latent_dim, generator=gen)
            chunks.append(self.generate(z.to(self.device)).float().cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)


class ConditionalGenerativeRecipe(GenerativeRecipe):
    """A generator of images of a requested class: ``generate(z, label=labels)``.

    Trains on labelled images (``label`` in every batch, ``data_info.num_classes`` classes). Sampling draws
    latents per class through :meth:`draw_latents` (standard normal here; BAGAN draws from per-class Gaussians),
    so one seed gives the same images whatever else is sampled in other calls.
    """

    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    @classmethod
    def data_spec(cls, config: Any) -> DataSpec:
        return DataSpec("images", {"image": None, "label": None})

    def set_classes(self, data_info: DataInfo) -> None:
        """Take the class count and names from the data; called by subclass constructors."""
        if data_info.num_classes < 2:
            raise ConfigError(
                f"recipe {self.name!r} needs labelled images of at least 2 classes; "
                f"{data_info.source or 'the data'} has {data_info.num_classes} (use class sub-folders, an npz with "
                "labels, or --labels CSV)")
        self.num_classes = int(data_info.num_classes)
        names = tuple(data_info.class_names)
        self.class_names = names if len(names) == self.num_classes else tuple(str(k) for k in range(self.num_classes))

    def class_index(self, value: int | str) -> int:
        """A class given by index or name (``--class 0`` or ``--class malignant``), checked against the run."""
        text = str(value).strip()
        if text in self.class_names:
            return self.class_names.index(text)
        try:
            index = int(text)
        except ValueError:
            index = -1
        if not 0 <= index < self.num_classes:
            named = ", ".join(f"{k}={n}" for k, n in enumerate(self.class_names))
            raise ConfigError(f"class {value!r} is not one of this run's {self.num_classes} classes ({named})")
        return index

    def latents_from_noise(self, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The latents of classes ``labels`` for standard-normal ``noise`` (N, latent_dim): the noise itself here;
        BAGAN maps it through each class's Gaussian. Latent walks interpolate the noise, then call this."""
        return noise

    def draw_latents(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Latents (N, latent_dim) on the CPU for the classes ``labels`` (N,), drawn from ``generator``."""
        noise = torch.randn(labels.shape[0], self.latent_dim, generator=generator)
        return self.latents_from_noise(labels, noise).cpu()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256,
               labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """``n`` images of class ``labels`` (an int, or (n,) classes; default: classes in turn 0, 1, .., K-1, 0, ..)."""
        labels = self.sample_labels(n, labels)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        chunks = []
        for start in range(0, n, batch_size):
            part = labels[start:start + batch_size]
            z = self.draw_latents(part, gen)
            chunks.append(self.generate(z.to(self.device), label=part.to(self.device)).float().cpu())
        return torch.cat(chunks) if chunks else torch.empty(0)

    def sample_labels(self, n: int, labels: torch.Tensor | int | None = None) -> torch.Tensor:
        if labels is None:
            return torch.arange(n) % self.num_classes
        if isinstance(labels, int):
            return torch.full((n,), self.class_index(labels), dtype=torch.long)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if labels.shape[0] != n:
            raise ConfigError(f"{labels.shape[0]} labels for {n} samples")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ConfigError(f"labels must lie in 0..{self.num_classes - 1}")
        return labels

    def class_grid_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Preview inputs: one row per class, ``n // K`` fixed latents per row (1 to 16: a readable picture)."""
        per_row = max(1, min(16, n // self.num_classes))
        labels = torch.arange(self.num_classes).repeat_interleave(per_row)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {"z": self.draw_latents(labels, gen), "label": labels}

    @torch.no_grad()
    def class_grid(self, inputs: dict[str, torch.Tensor]) -> Preview:
        """The preview of :meth:`class_grid_inputs`: a grid with one row per class."""
        self.refresh_sampling_statistics()
        images = self.generate(inputs["z"].to(self.device), label=inputs["label"].to(self.device))
        return Preview(grid=images, nrow=max(1, images.shape[0] // self.num_classes),
                       names=self.class_names)


#: How :meth:`RecordsRecipe.sample` turns a generator's outputs into records.
RECORD_SAMPLING = ("round", "draw")


class RecordsRecipe(Recipe):
    """A recipe whose trained model maps a latent vector to a patient record (``synthmed ehr generate``).

    Records are rows of ``data_info.columns`` codes holding ``binary`` (0/1) or ``count`` values
    (:attr:`values`). :meth:`generate` returns what the network outputs (probabilities or expected counts);
    :meth:`sample` turns them into records.
    """

    latent_dim: int = 0

    @classmethod
    def data_spec(cls, config: Any) -> DataSpec:
        return DataSpec("records", {"record": None})

    @property
    @abc.abstractmethod
    def values(self) -> str:
        """``binary`` or ``count``: what the generated records hold."""

    @property
    def generator_trained(self) -> bool:
        """False while the generator has not trained yet (e.g. a run stopped in a pre-training phase)."""
        return True

    @abc.abstractmethod
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Per-code probabilities in [0, 1] (binary) or expected counts >= 0 (count), (N, D), from latents ``z``;
        uses the EMA networks if any."""

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 1024, sampling: str = "round") -> torch.Tensor:
        """``n`` records (N, D) float32 on the CPU, reproducible from ``seed``.

        Args:
            n: records to generate.
            seed: seed of the latents (and of the draws).
            batch_size: records generated at once.
            sampling: ``round``: a code is present where its probability is >= 0.5, counts rounded to the nearest
                integer (medGAN's paper); ``draw``: each code drawn from Bernoulli(p), each count from
                Poisson(mean), so rare codes keep their frequency instead of vanishing.
        """
        if sampling not in RECORD_SAMPLING:
            raise ConfigError(f"sampling must be one of {', '.join(RECORD_SAMPLING)} (got {sampling!r})")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        chunks = []
        for start in range(0, n, batch_size):
            z = torch.randn(min(batch_size, n - start), self.latent_dim, generator=gen)
            outputs = self.generate(z.to(self.device)).float().cpu()
            chunks.append(self._to_records(outputs, sampling, gen))
        return torch.cat(chunks) if chunks else torch.empty(0, len(self.data_info.columns))

    def _to_records(self, outputs: torch.Tensor, sampling: str, gen: torch.Generator) -> torch.Tensor:
        if self.values == "binary":
            if sampling == "draw":
                return torch.bernoulli(outputs.clamp(0, 1), generator=gen)
            return (outputs >= 0.5).float()
        if sampling == "draw":
            return torch.poisson(outputs.clamp_min(0), generator=gen)
        return outputs.clamp_min(0).round()


DIRECTIONS = ("AtoB", "BtoA")


class TranslationRecipe(Recipe):
    """A recipe whose trained model maps an image of one domain to another (``synthmed translate``).

    Domain A is the data's ``image`` side, domain B its ``target`` side (``DataInfo.intensity`` and
    ``target_intensity`` say how each side's stored values became [-1, 1], so outputs can be written back in
    their units). Paired recipes translate ``AtoB`` only; unpaired ones (CycleGAN) both ways.
    """

    #: The directions :meth:`translate` accepts.
    directions: ClassVar[tuple[str, ...]] = ("AtoB",)

    def check_direction(self, direction: str) -> str:
        """``direction`` if this recipe translates that way; a one-line :class:`ConfigError` otherwise."""
        if direction not in DIRECTIONS:
            raise ConfigError(f"direction {direction!r}: use AtoB or BtoA")
        if direction not in self.directions:
            raise ConfigError(f"recipe {self.name!r} translates {' and '.join(self.directions)} only (a paired model "
                              "learns one direction); for the other, train a run with image and target swapped")
        return direction

    def input_channels(self, direction: str = "AtoB") -> int:
        """Channels of the images :meth:`translate` takes in ``direction``."""
        info = self.data_info
        return info.channels if self.check_direction(direction) == "AtoB" else info.target_channels

    def output_channels(self, direction: str = "AtoB") -> int:
        """Channels of the images :meth:`translate` returns in ``direction``."""
        info = self.data_info
        return info.target_channels if self.check_direction(direction) == "AtoB" else info.channels

    def output_is_mask(self, direction: str = "AtoB") -> bool:
        """True when the output is a mask probability in [0, 1] (a mask target), not an image in [-1, 1]."""
        return self.check_direction(direction) == "AtoB" and self.data_info.target_is_mask

    def input_is_mask(self, direction: str = "AtoB") -> bool:
        """True when the input side is a {0, 1} mask (e.g. a vessel tree -> retina run)."""
        mapping = self.data_info.intensity if self.check_direction(direction) == "AtoB" else \
            self.data_info.target_intensity
        return bool(mapping) and mapping.get("kind") == "mask"

    @property
    def training_size(self) -> int:
        """Side of the images (or random crops) the networks were trained on: the tile size for large inputs."""
        return self.data_info.image_size

    def size_multiple(self, direction: str = "AtoB") -> int:
        """Input sides must be multiples of this (the generator's total down-sampling). Default: 1."""
        return 1

    @abc.abstractmethod
    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Outputs for ``images`` (N, C, H, W) in [-1, 1] on the recipe's device, sides multiples of
        :meth:`size_multiple`: images in [-1, 1], or mask probabilities in [0, 1] (:meth:`output_is_mask`)."""


class SegmentationRecipe(TranslationRecipe):
    """A recipe whose trained model maps an image to a mask of ``num_classes`` classes (``synthmed segment``).

    Binary runs (``num_classes == 2``) predict one foreground probability per pixel; multi-class runs one softmax
    probability per class (class 0 = background). Targets are the data layer's masks: {0, 1}, or class indices
    for label maps (``DataInfo.mask_classes``). As a :class:`TranslationRecipe` its :meth:`translate` returns the
    probabilities, so the translation tooling (tiling, file formats) applies unchanged.
    """

    #: Classes including the background (2 = binary).
    num_classes: int = 2
    validation_metric = "val_dice"

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def output_channels(self, direction: str = "AtoB") -> int:
        self.check_direction(direction)
        return 1 if self.binary else self.num_classes

    def output_is_mask(self, direction: str = "AtoB") -> bool:
        return self.check_direction(direction) == "AtoB"

    @abc.abstractmethod
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities for ``images`` (N, C, H, W) in [-1, 1], sides multiples of :meth:`size_multiple`:
        (N, 1, H, W) foreground probabilities (binary) or (N, K, H, W) class probabilities summing to 1."""

    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        self.check_direction(direction)
        return self.segment(images)

    def labels_from_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Class indices (N, H, W) int64: foreground where p >= 0.5 (binary), else the most probable class."""
        if probabilities.shape[1] == 1:
            return (probabilities[:, 0] >= 0.5).long()
        return probabilities.argmax(1)


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make a recipe available by its ``name`` (``synthmed train --recipe NAME``)."""
    RECIPES[cls.name] = cls
    return cls


def get_recipe(name: str) -> type[Recipe]:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _coerce(cls_name: str, key: str, annotation: Any, value: Any) -> Any:
    """Convert a value from the CLI/YAML (``-o lr_g=1e-4`` arrives as a string) to the field's declared type."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] or [annotation]
    kind = typing.get_origin(kinds[0]) or kinds[0]
    label = " | ".join(getattr(k, "__name__", str(k)) for k in kinds) + (" | None" if optional else "")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"recipe {cls_name!r} option {key}: a value is required")
    try:
        if kind is tuple:
            return _coerce_tuple(kinds[0], value)
        if kind is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind is int and not isinstance(value, bool):
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError(value)
            return int(as_float)
        if kind is float and not isinstance(value, bool):
            return float(value)
        if kind is str:
            return "" if value is False else str(value)  # --no-diffaugment: a text option switched off
    except (TypeError, ValueError):
        raise ConfigError(f"recipe {cls_name!r} option {key}: expected {label}, got {value!r}") from None
    return value


def _coerce_tuple(annotation: Any, value: Any) -> tuple[Any, ...]:
    """A tuple option from a list, a tuple or text ("0.5,0.999"), each item converted to its declared type."""
    items = value if isinstance(value, (list, tuple)) else str(value).strip("()[] ").split(",")
    declared = typing.get_args(annotation)
    if len(declared) == 2 and declared[1] is Ellipsis:
        types_ = [declared[0]] * len(items)
    elif declared:
        if len(declared) != len(items):
            raise ValueError(value)
        types_ = list(declared)
    else:
        types_ = [str] * len(items)
    return tuple(_convert_item(t, item) for t, item in zip(types_, items, strict=True))


def _convert_item(kind: Any, item: Any) -> Any:
    if isinstance(item, str):
        item = item.strip()
    if kind is int:
        as_float = float(item)
        if as_float != int(as_float):
            raise ValueError(item)
        return int(as_float)
    return kind(item)


def make_config(cls: type[Recipe], options: dict[str, Any]) -> Any:
    """Build a recipe's config dataclass from a plain dict: unknown keys and wrong types are clear errors."""
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigError(
            f"recipe {cls.name!r} has no option(s) {', '.join(unknown)}; options: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls.Config)
    values = {key: _coerce(cls.name, key, hints[key], value) for key, value in options.items()}
    return cls.Config(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

