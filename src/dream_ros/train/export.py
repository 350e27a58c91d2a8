"""Export a training run's checkpoint as a shipped model file (fp16 weights) plus its model card.

The model file goes through ``network.model_file.save_model`` so the detector loads it like any
other model; the training provenance (data, seeds, images seen, hours, commands) and the metrics
travel inside it and are repeated in the human-readable card next to it.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import ConfigError, InputError
from . import checkpoint as ckpt

MAX_MODEL_BYTES = 25 * 1024 * 1024


def _load(run_or_ckpt: str, which: str) -> Dict[str, Any]:
    p = Path(run_or_ckpt)
    if p.is_dir():
        p = p / (ckpt.BEST if which == "best" else ckpt.LAST)
        if not p.exists() and which == "best":
            p = p.with_name(ckpt.LAST)
    state = ckpt.load_checkpoint(p)
    if state is None:
        raise InputError("no checkpoint at %s" % p)
    state["_path"] = str(p)
    return state


def provenance_of(state: Dict[str, Any]) -> Dict[str, Any]:
    c = state["counters"]
    m = state.get("metrics") or {}
    tc = state.get("train_config") or {}
    return {
        "checkpoint": state.get("_path"),
        "images_seen": int(c.get("images_seen", 0)),
        "wall_hours": round(float(c.get("wall_hours", 0.0)), 3),
        "steps": int(c.get("steps", 0)),
        "epochs": int(c.get("epoch", 0)),
        "sessions": int(c.get("sessions", 0)),
        "data": list(state.get("provenance", {}).get("data", [])),
        "n_frames_indexed": m.get("n_frames"),
        "seed": state.get("provenance", {}).get("seed"),
        "init": state.get("provenance", {}).get("init"),
        "init_training": state.get("provenance", {}).get("init_training") or {},
        "commands": list(state.get("provenance", {}).get("commands", [])),
        "hyperparameters": {k: tc.get(k) for k in (
            "batch_size", "lr", "weight_decay", "warmup_images", "schedule_images", "lr_floor",
            "sigma_start", "sigma_anneal_images", "fg_weight", "augment", "zoom_prob",
            "val_fraction", "val_data", "input_size", "epoch_images")},
        "exported_utc": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _with_init(prov: Dict[str, Any], key: str, fmt: str) -> str:
    """This run's figure, or 'run + the --init model's = total' when it started from a model."""
    mine, before = prov[key], (prov.get("init_training") or {}).get(key) or 0
    if not before:
        return fmt % mine
    return "%s in this run + %s in the --init model (%s) = %s" % (
        fmt % mine, fmt % before, prov["init_training"].get("arch"), fmt % (mine + before))


def build_net(state: Dict[str, Any]):
    from .loop import _build
    net = _build(state["arch"], len(state["keypoint_names"]))
    net.load_state_dict(state["model"])
    return net.eval()


def export_run(run_or_ckpt: str, to: str, which: str = "best", card: Optional[str] = None,
               extra_metrics: Optional[str] = None, sigma_data: Optional[str] = None,
               int8_data: Optional[str] = None) -> Path:
    state = _load(run_or_ckpt, which)
    net = build_net(state)
    state["keypoint_sigma_px"] = keypoint_sigma(state, net, sigma_data)
    state["int8"] = int8_network(state, net, int8_data or sigma_data)
    metrics = {("val_" + k if not k.startswith("val") else k): v
               for k, v in (state.get("metrics") or {}).items()
               if k not in ("images_seen", "epoch", "wall_hours", "n_frames")}
    if extra_metrics:
        try:
            metrics.update(json.loads(Path(extra_metrics).read_text()))
        except (OSError, ValueError) as exc:
            raise InputError("--extra-metrics %s: %s" % (extra_metrics, exc))
    prov = provenance_of(state)
    out = Path(to)
    _save(out, net, state, prov, metrics)
    size = out.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ConfigError("exported model is %.1f MB, over the %d MB git limit"
                          % (size / 1e6, MAX_MODEL_BYTES // (1024 * 1024)))
    print("exported %s (%d images seen, %.2f h) -> %s (%.2f MB)"
          % (state["_path"], prov["images_seen"], prov["wall_hours"], out, size / 1e6))
    if card:
        write_card(Path(card), out, state, prov, metrics)
        print("model card -> %s" % card)
    return out


# decoding settings of our codec re-tuned after runs had started (they do not change the labels):
# the export writes today's, so the model file and its card show the decoding it is used with
RETUNED_DECODE = ("threshold", "refine_sigma")


def _current_codec(state: dict) -> dict:
    """The run's codec with parameters added or re-tuned since the run started at today's
    defaults (e.g. ``refine_sigma``, ``threshold``); DREAM-style codecs stay as they are."""
    from ..network.codec import BeliefMapCodec
    codec = dict(state["codec"])
    if codec.get("label_mode", "subpixel") != "dream":
        defaults = BeliefMapCodec().to_dict()
        codec.update({k: defaults[k] for k in RETUNED_DECODE})
    return BeliefMapCodec.from_dict(codec).to_dict()


def keypoint_sigma(state: Dict[str, Any], net, sigma_data: Optional[str] = None) -> List[float]:
    """Per keypoint, the median pixel error of the pipeline on 640x480 validation frames: from
    ``sigma_data`` (an NDDS set) when given, else from the checkpoint's own pipeline validation,
    else measured on the run's --val-pipeline-data set if it is on this machine; [] when none
    is available (the pose then weighs the keypoints alike)."""
    from .pipeline_val import pipeline_metrics
    data = sigma_data
    if data is None:
        saved = (state.get("metrics") or {}).get("pipeline_keypoint_median_px")
        if saved:
            return _usable_sigma(saved)
        data = (state.get("train_config") or {}).get("val_pipeline_data")
        if not data or not Path(data).is_dir():
            print("no validation set for the keypoints' pixel errors: "
                  "the pose will weigh them alike")
            return []
    elif not Path(data).is_dir():
        raise InputError("--sigma-data %s is not a directory" % data)
    return _usable_sigma(pipeline_metrics(net, model_config(state), data)
                         ["pipeline_keypoint_median_px"])


def int8_network(state: Dict[str, Any], net, data: Optional[str] = None) -> Dict[str, Any]:
    """{"onnx": int8 ONNX bytes, "data": DIR, "inputs": N} calibrated on ``data`` (default: the
    run's pipeline validation set, if on this machine); {} for data "none" or none found."""
    from ..network.quantize import calibration_inputs, quantize_network
    if data is None:
        data = (state.get("train_config") or {}).get("val_pipeline_data")
        if not data or not Path(data).is_dir():
            print("no 640x480 set to calibrate an int8 network on: the model gets none "
                  "(add one later with `python -m dream_ros quantize`)")
            return {}
    elif data == "none":
        return {}
    elif not Path(data).is_dir():
        raise InputError("--int8-data %s is not a directory" % data)
    cfg = model_config(state)
    inputs = calibration_inputs(cfg, data)
    return {"onnx": quantize_network(net, cfg, inputs), "data": str(data), "inputs": len(inputs)}


def _usable_sigma(values) -> List[float]:
    """[] unless every keypoint has a positive finite error (one never found: no weighting)."""
    v = [float(x) if x is not None else float("nan") for x in values]
    return [round(x, 3) for x in v] if all(np.isfinite(x) and x > 0 for x in v) else []


def model_config(state: Dict[str, Any], training=None, metrics=None):
    """The ModelConfig of a run's state (robot, keypoints, arch, sizes, preprocessing, codec):
    what the detector needs to run the net as a model file would."""
    from ..network.model_file import ModelConfig
    from ..robot import RobotModel
    from .loop import _default_spec
    kinematics = RobotModel.load(state.get("robot", "panda"))
    robot = kinematics.config
    links = {k.name: k.link for k in robot.keypoints}
    names = list(state["keypoint_names"])
    chain_order = kinematics.keypoint_chain_order() if names == kinematics.keypoint_names else []
    spec = dict(state.get("spec") or _default_spec(state["arch"], state["input_size"]))
    return ModelConfig(
        robot=robot.name, keypoint_names=names, keypoint_frames=[links.get(n, n) for n in names],
        arch=state["arch"], input_size=tuple(state["input_size"]),
        output_size=tuple(state["output_size"]), mean=tuple(spec["mean"]), std=tuple(spec["std"]),
        preprocessing=spec["preprocessing"], half_pixel=spec["half_pixel"],
        codec=_current_codec(state), training=training or {}, metrics=metrics or {},
        keypoint_sigma_px=list(state.get("keypoint_sigma_px") or []),
        keypoint_chain_order=chain_order,
        onnx_int8=(state.get("int8") or {}).get("onnx", b""))


def _save(out: Path, net, state, prov, metrics) -> None:
    from ..network.model_file import save_model
    cfg = model_config(state, prov, metrics)
    if tuple(cfg.output_size) != tuple(state["output_size"]):
        raise ConfigError("model config output %s differs from the trained %s"
                          % (cfg.output_size, state["output_size"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(out, net, cfg, fp16=True)


def _export_source(checkpoint: str) -> str:
    """The --export argument that selects this checkpoint again: the run dir for its best/last."""
    p = Path(checkpoint)
    return str(p.parent) if p.name in (ckpt.BEST, ckpt.LAST) else str(p)


def _export_options(checkpoint: str, int8: Optional[Dict[str, Any]]) -> str:
    """The --which and --int8-data options that export the same checkpoint and int8 network."""
    opts = " --which last" if Path(checkpoint).name == ckpt.LAST else ""
    return opts + (" --int8-data %s" % int8["data"] if int8 else " --int8-data none")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "%.4f" % v
    return str(v)


def write_card(path: Path, model_path: Path, state, prov, metrics) -> None:
    n_params = sum(v.numel() for v in state["model"].values() if v.is_floating_point())
    hist = state.get("history") or []
    lines = [
        "# %s — Panda keypoint model trained on this project's synthetic data" % model_path.name,
        "",
        "Generated by `python -m dream_ros train --export` from the run's checkpoint; "
        "edit the run, not this file (hand-written notes go in the Notes section at the end).",
        "",
        "| | |", "|---|---|",
        "| file | `%s` (%.2f MB, fp16 weights) |" % (model_path, model_path.stat().st_size / 1e6),
        "| architecture | `%s` (%.2f M parameters), input %dx%d RGB (%s), output %dx%d belief maps |"
        % (state["arch"], n_params / 1e6, state["input_size"][0], state["input_size"][1],
           (state.get("spec") or {}).get("preprocessing", "letterbox"),
           state["output_size"][0], state["output_size"][1]),
        "| keypoints | %s |" % ", ".join(state["keypoint_names"]),
        "| label codec | %s |" % json.dumps(_current_codec(state)),
        "| keypoint errors the pose weighs by (px, median on validation; each detection's scaled by "
        "its peak height) | %s |"
        % (", ".join("%.2f" % v for v in state.get("keypoint_sigma_px") or [])
           or "none: all alike"),
        "| int8 network (ONNX Runtime, CPU) | %s |" % (
            "%.2f MB, activation ranges from %d inputs of `%s` (frames and zoom crops)"
            % (len(state["int8"]["onnx"]) / 1e6, state["int8"]["inputs"], state["int8"]["data"])
            if state.get("int8") else "none: fp32 only"),
        "| images seen (cumulative) | %s |" % _with_init(prov, "images_seen", "%d"),
        "| training time (cumulative wall clock) | %s on a 2-core CPU shared with rendering |"
        % _with_init(prov, "wall_hours", "%.2f h"),
        "| steps / epochs / sessions | %d / %d / %d |" % (prov["steps"], prov["epochs"], prov["sessions"]),
        "| data | %s (%s frames indexed at export) |" % (", ".join(prov["data"]), prov["n_frames_indexed"]),
        "| seed (training) | %s |" % prov["seed"],
        "| fine-tuned from | %s |" % (prov["init"] or "scratch"),
        "| exported | %s from `%s` |" % (prov["exported_utc"], prov["checkpoint"]),
        "",
        "## Metrics",
        "",
        ("Validation (`val_*`): %s, pixel errors at the renders' raw resolution, one network "
         "pass, DREAM's peak rules via the codec. Other rows: `--extra-metrics` (see Notes)."
         % ("the fixed sets " + ", ".join("`%s`" % d for d in prov["hyperparameters"]["val_data"])
            if prov["hyperparameters"].get("val_data")
            else "held-out frames of the training renders (hash split)")),
        "",
        "| metric | value |", "|---|---|",
    ]
    for k in sorted(metrics):
        lines.append("| %s | %s |" % (k, _fmt(metrics[k])))
    lines += ["", "## Hyperparameters", "", "```json", json.dumps(prov["hyperparameters"], indent=1),
              "```", "", "## Exact commands (in order; each resumed the previous checkpoint)", ""]
    for c in prov["commands"]:
        lines.append("    %s" % c)
    lines += ["", "Export:", "",
              "    python -m dream_ros train --export %s --to %s --card %s%s"
              % (_export_source(prov["checkpoint"]), model_path, path,
                 _export_options(prov["checkpoint"], state.get("int8"))),
              "", "## Validation history", "",
              "| images seen | hours | val PCK AUC (0-20 px) | median px | detected | val MSE |",
              "|---|---|---|---|---|---|"]
    for h in hist[-25:]:
        lines.append("| %d | %.2f | %s | %s | %s | %s |" % (
            h.get("images_seen", 0), h.get("wall_hours", 0.0), _fmt(h.get("pck_auc", float("nan"))),
            _fmt(h.get("median_px", float("nan"))), _fmt(h.get("detected", float("nan"))),
            _fmt(h.get("val_mse", float("nan")))))
    notes = ""
    if path.exists():
        old = path.read_text()
        marker = "\n## Notes\n"
        if marker in old:
            notes = old[old.index(marker):]
    text = "\n".join(lines) + "\n" + (notes or "\n## Notes\n\n(none yet)\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=str(path.parent))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
