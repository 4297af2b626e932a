"""Validation of gameopt optimiser checkpoints, before anything is loaded.

``GameOptimizer.load_state_dict`` loads all of a checkpoint or nothing: this module
checks it against the optimiser first and raises :class:`GameInputError` naming the
first mismatch. Checked: the gameopt class and the base optimiser's class recorded in
the checkpoint (older checkpoints, which lack them, are checked by their contents),
the players, every param group (player, size, the hyper-parameters the base optimiser
needs, numeric values of the right kind and finite), every parameter's state (the
keys, shapes and kinds that this base optimiser makes, finite values), and gameopt's
settings (each optimiser's ``_check_extra_state``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer

from .errors import GameInputError
from .gradients import all_finite
from .step_hooks import unhooked_step

_PROXY_SHAPE = (2, 3)  # a shape no scalar state has: state of this shape is parameter-shaped


def check_checkpoint(opt: Any, sd: dict[str, Any], extra: Any) -> dict[str, Any]:
    """Validate ``sd`` (a state dict without its ``"gameopt"`` entry ``extra``) for ``opt``.

    Returns the gameopt settings to load (``opt._check_extra_state``'s result).
    Raises GameInputError on the first mismatch; changes nothing.
    """
    if not isinstance(extra, Mapping):
        raise GameInputError(f"the checkpoint's 'gameopt' entry must be a dict, got {type(extra).__name__}")
    kind = extra.get("class")
    if kind is not None and kind != opt._kind:
        raise GameInputError(
            f"this checkpoint was written by gameopt.{kind}, not {opt._kind}: build the "
            f"optimiser that wrote it (gameopt.{kind}) to resume from it"
        )
    known = set(opt._extra_state())
    unknown = sorted(set(extra) - known)
    if unknown:
        raise GameInputError(
            f"the checkpoint holds gameopt settings {unknown} that {opt._kind} does not have: it was "
            "written by another gameopt optimiser"
        )
    base = opt.base_optimizer
    base_kind = extra.get("base_class")
    if base_kind is not None and base_kind != type(base).__qualname__:
        raise GameInputError(
            f"this checkpoint holds the state of a {base_kind} base optimiser; this optimiser wraps "
            f"{type(base).__qualname__}. Build it with base_optimizer={base_kind} to resume"
        )
    players = extra.get("players")
    if not isinstance(players, Sequence) or list(players) != list(opt.players):
        raise GameInputError(
            f"checkpoint players {players} do not match this optimiser's players {list(opt.players)}"
        )
    param_of = _check_groups(opt, sd)   # first: the groups frame what the settings refer to
    settings = opt._check_extra_state(dict(extra))
    _check_state(opt, sd, param_of)
    return settings


def _check_groups(opt: Any, sd: dict[str, Any]) -> dict[Any, tuple[torch.Tensor, int]]:
    """Check the param groups; return ``saved id -> (parameter, group index)``."""
    saved = sd.get("param_groups")
    groups = opt.param_groups
    if not isinstance(saved, Sequence) or not all(isinstance(g, Mapping) for g in saved):
        raise GameInputError("the checkpoint's 'param_groups' must be a list of dicts (from state_dict())")
    if len(saved) != len(groups):
        raise GameInputError(
            f"checkpoint has {len(saved)} param groups, this optimiser has {len(groups)}"
        )
    base = opt.base_optimizer
    filled = _filled_by_base(base, saved)
    required = set(base.defaults)
    param_of: dict[Any, tuple[torch.Tensor, int]] = {}
    for i, (ours, theirs, full) in enumerate(zip(groups, saved, filled)):
        where = f"param group {i} (player '{ours['player']}')"
        if theirs.get("player") != ours["player"]:
            raise GameInputError(
                f"param group {i} belongs to player '{ours['player']}' here but to "
                f"'{theirs.get('player')}' in the checkpoint"
            )
        ids = theirs.get("params")
        if not isinstance(ids, Sequence) or len(ids) != len(ours["params"]):
            n = len(ids) if isinstance(ids, Sequence) else ids
            raise GameInputError(
                f"{where} has {len(ours['params'])} parameters here and {n} in the checkpoint"
            )
        for pid, p in zip(ids, ours["params"]):
            if not isinstance(pid, int) or isinstance(pid, bool) or pid in param_of:
                raise GameInputError(f"{where}: parameter ids must be distinct integers, got {pid!r}")
            param_of[pid] = (p, i)
        missing = sorted(k for k in ours if k in required and k not in full)
        if missing:
            raise GameInputError(
                f"{where} in the checkpoint lacks {missing}, which {type(base).__qualname__} needs: "
                "the checkpoint was written for another base optimiser"
            )
        for key, value in theirs.items():
            if key in ours and key not in ("params", "param_names", "player"):
                _check_value(f"{where}, '{key}'", ours[key], value, key)
        opt._check_group(i, theirs)
    return param_of


def _filled_by_base(base: Optimizer, saved: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The saved groups as ``base``'s ``__setstate__`` completes them on load (older torch versions)."""
    copies = [dict(g) for g in saved]
    probe = object.__new__(type(base))
    probe.__dict__["defaults"] = dict(base.defaults)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            type(base).__setstate__(probe, {"state": {}, "param_groups": copies})
    except Exception:  # noqa: BLE001 - an unusual base optimiser: check the groups as saved
        return [dict(g) for g in saved]
    return copies


def _check_value(where: str, ours: Any, theirs: Any, key: str) -> None:
    """A saved hyper-parameter must have the kind of ours (number, bool, tensor, tuple) and be finite."""
    if ours is None:
        return
    if isinstance(ours, bool):
        if not isinstance(theirs, bool):
            raise GameInputError(f"{where} must be True or False, got {theirs!r}")
        return
    if _is_number(ours) or isinstance(ours, torch.Tensor):
        if isinstance(theirs, torch.Tensor):
            ok = theirs.numel() == 1 and (theirs.dtype.is_floating_point or not theirs.dtype.is_complex)
            value = float(theirs) if ok else math.nan
        else:
            ok, value = _is_number(theirs), float(theirs) if _is_number(theirs) else math.nan
        if not ok or not math.isfinite(value):
            raise GameInputError(f"{where} must be a finite number, got {theirs!r}")
        if key == "lr" and value < 0:
            raise GameInputError(f"{where} (the learning rate) must be >= 0, got {value}")
        return
    if isinstance(ours, (tuple, list)):
        if not isinstance(theirs, (tuple, list)) or len(theirs) != len(ours):
            raise GameInputError(f"{where} must be a sequence of {len(ours)} values like {ours!r}, got {theirs!r}")
        for j, (a, b) in enumerate(zip(ours, theirs)):
            _check_value(f"{where}[{j}]", a, b, key)
        return
    if isinstance(ours, str) and not isinstance(theirs, str):
        raise GameInputError(f"{where} must be a string like {ours!r}, got {theirs!r}")


def _check_state(opt: Any, sd: dict[str, Any], param_of: dict[Any, tuple[torch.Tensor, int]]) -> None:
    """Per-parameter state: keys, shapes and kinds as this base optimiser makes them; finite."""
    state = sd.get("state")
    if not isinstance(state, Mapping):
        raise GameInputError("the checkpoint's 'state' must be a dict (from state_dict())")
    base = opt.base_optimizer
    saved_groups = sd["param_groups"]
    templates: dict[tuple[int, torch.dtype, torch.device], dict[str, Any] | None] = {}
    floats: list[tuple[str, torch.Tensor]] = []
    for pid, entry in state.items():
        if pid not in param_of:
            raise GameInputError(
                f"the checkpoint holds state for parameter id {pid!r}, which no param group lists"
            )
        p, gi = param_of[pid]
        where = f"the state of parameter {pid} (player '{opt.param_groups[gi]['player']}', shape {tuple(p.shape)})"
        if not isinstance(entry, Mapping):
            raise GameInputError(f"{where} must be a dict, got {type(entry).__name__}")
        key = (gi, p.dtype, p.device)
        if key not in templates:
            templates[key] = _fresh_state(type(base), saved_groups[gi], p.dtype, p.device)
        template = templates[key]
        if template is not None and set(entry) != set(template):
            raise GameInputError(
                f"{where} has entries {sorted(entry)}, but {type(base).__qualname__} with these "
                f"settings keeps {sorted(template)}: the checkpoint was written by another optimiser"
            )
        for name, value in entry.items():
            what = f"{where}, '{name}'"
            expect = None if template is None else template.get(name)
            if isinstance(value, torch.Tensor):
                _check_tensor(what, value, expect, p)
                if value.dtype.is_floating_point or value.dtype.is_complex:
                    floats.append((what, value))
            elif _is_number(value):
                if not math.isfinite(value):
                    raise GameInputError(f"{what} is not finite ({value})")
                if isinstance(expect, torch.Tensor) and expect.numel() != 1:
                    raise GameInputError(f"{what} must be a tensor of shape {tuple(p.shape)}, got {value!r}")
            elif isinstance(expect, torch.Tensor):
                raise GameInputError(f"{what} must be a tensor, got {type(value).__name__}")
    if floats and not bool(all_finite([t for _, t in floats])):
        bad = next(what for what, t in floats if not bool(all_finite([t])))
        raise GameInputError(f"{bad} holds NaN or Inf: the checkpoint was saved from a diverged run")


def _check_tensor(what: str, value: torch.Tensor, expect: Any, p: torch.Tensor) -> None:
    if value.is_sparse or value.layout != torch.strided:
        raise GameInputError(f"{what} must be a dense tensor")
    if not isinstance(expect, torch.Tensor):
        return
    if expect.dtype.is_floating_point and not (value.dtype.is_floating_point or _is_integer(value.dtype)):
        raise GameInputError(f"{what} must be a real floating-point tensor, got {value.dtype}")
    if tuple(expect.shape) == _PROXY_SHAPE:
        if value.shape != p.shape:
            raise GameInputError(
                f"{what} has shape {tuple(value.shape)}, the parameter {tuple(p.shape)}: the "
                "checkpoint belongs to another model"
            )
    elif expect.numel() == 1 and value.numel() != 1:
        raise GameInputError(f"{what} must hold one value, got shape {tuple(value.shape)}")


def _fresh_state(
    base_type: type[Optimizer], group: Mapping[str, Any], dtype: torch.dtype, device: torch.device
) -> dict[str, Any] | None:
    """The state ``base_type`` makes for a parameter after one step with ``group``'s options.

    Computed on a small proxy parameter of shape ``_PROXY_SHAPE``; None when that
    cannot be done (an optimiser that needs a closure, unusual options, ...).
    """
    proxy = torch.zeros(_PROXY_SHAPE, dtype=dtype, device=device, requires_grad=True)
    options = {k: v for k, v in group.items() if k not in ("params", "param_names", "player")}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = base_type([{"params": [proxy], **options}])
            proxy.grad = torch.zeros_like(proxy)
            unhooked_step(probe)
    except Exception:  # noqa: BLE001 - fall back to checking values only
        return None
    return dict(probe.state.get(proxy, {}))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
