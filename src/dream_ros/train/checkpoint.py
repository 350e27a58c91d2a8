"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the bare model's weights, the optimizer state, the counters the schedules are
computed from (images seen, steps, wall hours; the learning rate and label width are functions of
images seen, so no scheduler object needs saving), the validation history and provenance. Files
are written atomically so an interrupted save never leaves a corrupt ``last.pt``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import ConfigError

LAST = "last.pt"
BEST = "best.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(run_dir: Path, state: Dict[str, Any], best: bool = False) -> Path:
    path = Path(run_dir) / LAST
    atomic_torch_save(state, path)
    if best:
        atomic_torch_save(state, Path(run_dir) / BEST)
    return path


def load_checkpoint(path: Path) -> Optional[Dict[str, Any]]:
    """Load a checkpoint file, or ``last.pt`` of a run directory; None if the run has none yet."""
    import torch
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.exists():
        return None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: say which one
        raise ConfigError("cannot read checkpoint %s: %s" % (path, exc))
    if not isinstance(state, dict) or "model" not in state or "counters" not in state:
        raise ConfigError("%s is not a dream_ros training checkpoint" % path)
    _restore_dropped_moments(state)
    return state


# The repository's limit for one file is 25 MB; a compact state aims under it with some margin.
STATE_BUDGET_MB = 24.0
# Adam's first moment is dropped last: an exponential average over ~1 / (1 - beta1) = 10 steps,
# it is back to normal a few dozen steps after a resume (zeros meanwhile: smaller first steps,
# a short warm-up). The second moment averages ~1,000 steps and is kept.
DROPPABLE_MOMENT = "exp_avg"


def _is_float_array(value) -> bool:
    import torch
    return torch.is_tensor(value) and value.is_floating_point() and value.dim() > 0


def _float_tensors(tree):
    return (value for value in tree.values() if _is_float_array(value))


def _state_mb(state) -> float:
    tensors = list(_float_tensors(state["model"]))
    tensors += [v for per in state.get("optimizer", {}).get("state", {}).values()
                for v in _float_tensors(per)]
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def save_compact_checkpoint(src: Path, dst: Path, budget_mb: float = STATE_BUDGET_MB) -> Path:
    """Write ``src`` (a checkpoint file or a run directory's ``last.pt``) to ``dst`` small enough
    for git (models/train_state/), shrinking only as far as ``budget_mb`` needs, in this order:

    1. the optimizer's floating-point state (Adam's moments: two tensors the size of the
       weights) in bfloat16, not float16: squared-gradient moments of 1e-10 and less would
       underflow to 0 in float16 and blow up Adam's step;
    2. the weights in float16 (as the shipped model file has them);
    3. Adam's first moment left out (``DROPPABLE_MOMENT``); ``load_checkpoint`` puts zeros back.

    ``state["compact"]`` records what was done. Resuming needs nothing special: the model's and
    torch's Optimizer.load_state_dict cast everything back to each parameter's dtype."""
    import torch
    state = load_checkpoint(src)
    if state is None:
        raise ConfigError("no checkpoint at %s" % src)
    moments = list(state.get("optimizer", {}).get("state", {}).values())
    for per_param in moments:
        for key, value in per_param.items():
            if _is_float_array(value):
                per_param[key] = value.to(torch.bfloat16)
    compact = {"moments": "bfloat16", "weights": "float32", "dropped": []}
    if _state_mb(state) > budget_mb:
        for key in list(state["model"]):
            value = state["model"][key]
            if torch.is_tensor(value) and value.is_floating_point():
                state["model"][key] = value.half()
        compact["weights"] = "float16"
    if _state_mb(state) > budget_mb:
        for per_param in moments:
            per_param.pop(DROPPABLE_MOMENT, None)
        compact["dropped"] = [DROPPABLE_MOMENT]
    state["compact"] = compact
    atomic_torch_save(state, Path(dst))
    return Path(dst)


def _restore_dropped_moments(state: Dict[str, Any]) -> None:
    """Zeros for the moments a compact state left out (save_compact_checkpoint), shaped as the
    kept second moment: torch's Adam expects every moment of a parameter it has seen."""
    import torch
    dropped = (state.get("compact") or {}).get("dropped") or []
    for per_param in state.get("optimizer", {}).get("state", {}).values():
        for key in dropped:
            if key not in per_param and torch.is_tensor(per_param.get("exp_avg_sq")):
                per_param[key] = torch.zeros_like(per_param["exp_avg_sq"], dtype=torch.float32)


def average_checkpoints(sources, dst: Path) -> Path:
    """Write to ``dst`` a checkpoint whose weights are the mean of the ``sources``' (checkpoint
    files or run directories; every floating-point tensor, BatchNorm statistics included) and whose
    counters, optimizer state and history are the last source's, so it exports and resumes like
    that one. The sources' paths are recorded in ``provenance.weight_average_of``. Late in a
    decaying schedule the mean of a few snapshots is a cheap ensemble: session 8 shipped one."""
    import torch
    sources = [Path(s) for s in sources]
    if len(sources) < 2:
        raise ConfigError("averaging needs at least two checkpoints, got %d" % len(sources))
    states = []
    for src in sources:
        state = load_checkpoint(src)
        if state is None:
            raise ConfigError("no checkpoint at %s" % src)
        states.append(state)
    base = states[-1]
    for src, state in zip(sources, states):
        if set(state["model"]) != set(base["model"]) or any(
                state["model"][k].shape != v.shape for k, v in base["model"].items()):
            raise ConfigError("%s holds a different network than %s: cannot average"
                              % (src, sources[-1]))
    base["model"] = {k: (sum(s["model"][k].float() for s in states) / len(states)).to(v.dtype)
                     if v.is_floating_point() else v for k, v in base["model"].items()}
    base.setdefault("provenance", {})["weight_average_of"] = [str(s) for s in sources]
    atomic_torch_save(base, Path(dst))
    return Path(dst)
