"""Checkpoints as safetensors (all tensors) + JSON (everything else), never pickle.

A checkpoint ``step_00001600`` is two files written atomically (temp file, fsync, rename): the
``.safetensors`` first, then the ``.json`` that names it with its SHA-256. A checkpoint counts only when its
JSON exists and the hash matches, so a run killed mid-write always resumes from the last complete one.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from synthmed.errors import SynthmedError
from synthmed.io import atomic_write, atomic_write_text, sha256_file

FORMAT = "synthmed-checkpoint/1"
_NAME = re.compile(r"^step_(\d{8})\.json$")


def _flatten_optimizer(name: str, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Move an optimiser state_dict's tensors into ``tensors``; return the JSON-able rest."""
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        entry: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/{index}/{key}"] = value
                entry[key] = {"tensor": f"optim/{name}/{index}/{key}"}
            else:
                entry[key] = value
        plain["state"][str(index)] = entry
    return plain


def _unflatten_optimizer(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for index, values in plain["state"].items():
        state[int(index)] = {
            key: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for key, value in values.items()
        }
    groups = []
    for group in plain["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    directory: Path,
    step: int,
    networks: torch.nn.ModuleDict,
    optimizers: dict[str, torch.optim.Optimizer],
    extra_tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> Path:
    """Write ``step_XXXXXXXX.safetensors`` + ``.json``; returns the JSON path."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in networks.state_dict().items():
        tensors[f"net/{key}"] = value
    optim_plain = {name: _flatten_optimizer(name, opt.state_dict(), tensors) for name, opt in optimizers.items()}
    for key, value in extra_tensors.items():
        tensors[f"extra/{key}"] = value
    # safetensors wants contiguous, unshared CPU tensors.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}

    stem = f"step_{step:08d}"
    weights_path = directory / f"{stem}.safetensors"
    atomic_write(weights_path, lambda tmp: save_file(tensors, str(tmp)))
    record = dict(meta)
    record.update(
        format=FORMAT,
        step=step,
        weights=weights_path.name,
        sha256=sha256_file(weights_path),
        optimizers=optim_plain,
    )
    json_path = directory / f"{stem}.json"
    atomic_write_text(json_path, json.dumps(record, indent=1, sort_keys=True))
    return json_path


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (JSON present), oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def prune_checkpoints(directory: Path, keep: int, protect: set[str] | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (JSON first, so a half-deleted one is never used)."""
    protect = protect or set()
    for json_path in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        if json_path.name in protect:
            continue
        json_path.unlink(missing_ok=True)
        json_path.with_suffix(".safetensors").unlink(missing_ok=True)


def load_checkpoint(json_path: Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint; raises :class:`SynthmedError` naming the file if it is incomplete or corrupt."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SynthmedError(f"{json_path}: cannot read checkpoint ({exc})") from exc
    if record.get("format") != FORMAT:
        raise SynthmedError(f"{json_path}: not a synthmed checkpoint (format {record.get('format')!r})")
    weights_path = json_path.with_name(record["weights"])
    if not weights_path.is_file():
        raise SynthmedError(f"{weights_path}: checkpoint weights are missing")
    if verify and sha256_file(weights_path) != record["sha256"]:
        raise SynthmedError(f"{weights_path}: checkpoint is corrupt (SHA-256 does not match its JSON)")
    return record, load_file(str(weights_path))


def load_latest_valid(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The newest checkpoint whose weights match their hash; older ones are tried when the newest is damaged."""
    found = list_checkpoints(directory)
    if not found:
        raise SynthmedError(f"{directory}: no complete checkpoint")
    problems = []
    for json_path in reversed(found):
        try:
            record, tensors = load_checkpoint(json_path)
        except SynthmedError as exc:
            problems.append(str(exc))
            continue
        if problems:
            warnings.warn(f"skipped damaged checkpoint(s): {'; '.join(problems)}; using {json_path.name}",
                          stacklevel=2)
        return record, tensors
    raise SynthmedError(f"{directory}: every checkpoint is damaged ({problems[0]})")


def remove_stale_temporaries(run_dir: Path) -> None:
    """Delete temp files a hard kill left behind mid-write (they can be as large as a checkpoint)."""
    for tmp in run_dir.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def restore_networks(networks: torch.nn.ModuleDict, tensors: dict[str, torch.Tensor], source: Path | None = None
                     ) -> None:
    state = {k[len("net/"):]: v for k, v in tensors.items() if k.startswith("net/")}
    try:
        networks.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        where = f"{source}: " if source else ""
        raise SynthmedError(f"{where}checkpoint does not match the recipe's networks ({first})") from None


def restore_optimizers(
    optimizers: dict[str, torch.optim.Optimizer], record: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    for name, opt in optimizers.items():
        opt.load_state_dict(_unflatten_optimizer(record["optimizers"][name], tensors))
        _match_parameter_layouts(opt)


def _match_parameter_layouts(opt: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    safetensors stores tensors contiguous, so a channels-last model's moments come back NCHW. Elementwise ops do not
    mind, but fused optimiser kernels walk parameter, gradient and moments in memory order: with mixed layouts they
    would pair different elements (a resumed run then drifted from the uninterrupted one).
    """
    for group in opt.param_groups:
        for param in group["params"]:
            state = opt.state.get(param, {})
            for key, value in state.items():
                if (isinstance(value, torch.Tensor) and value.shape == param.shape
                        and value.stride() != param.stride()):
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def extra_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("extra/"):]: v for k, v in tensors.items() if k.startswith("extra/")}
