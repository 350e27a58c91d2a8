"""Model files: ours (one ``.pt``) and DREAM's (``.pth`` + ``.yaml``), one loader for both.

Our format: a single file written with ``torch.save`` holding plain types and tensors only (so it
loads with ``torch.load(weights_only=True)``, no pickled code)::

    {"format": "dream_ros.model", "version": 1,
     "config": ModelConfig.to_dict(),          # robot, keypoints, arch, input, codec, provenance...
     "state_dict": {name: tensor},             # floating tensors stored fp16 by default
     "onnx_int8": uint8 tensor}                # optional: the int8 network (network/quantize.py)

Floating weights are cast back to fp32 on load. Shipped defaults live at
``models/<robot>_default.pt``; ``load_model("panda")`` loads that file.

DREAM's format (dream-compat.md §1-2): a DataParallel ``state_dict`` (keys prefixed ``module.``)
in ``X.pth`` and its config in ``X.yaml`` beside it, every mapping written as ``!!omap``.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import yaml
from torch import nn

from dream_ros.errors import ConfigError
from dream_ros.network.codec import BeliefMapCodec, dream_peak_offset
from dream_ros.network.dream_arch import (DREAM_ARCHS, build_dream_network, dream_arch_from_config,
                                          dream_output_size)
from dream_ros.network.ours import NETWORK_INFO, build_network
from dream_ros.network.preprocess import MODES, Preprocessor
from dream_ros.resources import MODELS_DIR

FORMAT = "dream_ros.model"
VERSION = 1
DEFAULT_MODEL_SUFFIX = "_default.pt"


@dataclass
class ModelConfig:
    robot: str                               # our robot config name (config/robots/<robot>.yaml)
    keypoint_names: List[str]                # channel order
    keypoint_frames: List[str]               # link frame of each keypoint (URDF / TF name)
    arch: str                                # ours (see ours.NETWORK_INFO) or one of DREAM_ARCHS
    input_size: Tuple[int, int]              # network input (W, H)
    output_size: Tuple[int, int]             # belief maps (W, H) at input_size
    mean: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    preprocessing: str = "letterbox"         # one of preprocess.MODES
    half_pixel: Optional[bool] = None        # preprocess pixel-centre rule; None = mode's default
    codec: Dict[str, Any] = field(default_factory=dict)   # BeliefMapCodec parameters
    training: Dict[str, Any] = field(default_factory=dict)  # provenance: data, epochs, commit...
    metrics: Dict[str, Any] = field(default_factory=dict)   # evaluation results
    # per keypoint, the median pixel error on 640x480 validation frames (export measures it):
    # the pose weighs keypoints by it. Empty: all alike.
    keypoint_sigma_px: List[float] = field(default_factory=list)
    # keypoint indices from base to tip (RobotModel.keypoint_chain_order): the zoom pass's
    # half-arm crops. Empty: looked up from the robot config (keypoint_chain_order below).
    keypoint_chain_order: List[int] = field(default_factory=list)
    source_format: str = FORMAT              # FORMAT or "dream"
    extra: Dict[str, Any] = field(default_factory=dict)     # e.g. DREAM's full YAML config
    # the network quantized to int8 as serialised ONNX (network/quantize.py); empty: none. The
    # detector runs it with ONNX Runtime on the CPU. A copy of the weights when it was made:
    # training exports and `quantize` make a new one; fine-tuning starts without.
    onnx_int8: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        self.input_size = (int(self.input_size[0]), int(self.input_size[1]))
        self.output_size = (int(self.output_size[0]), int(self.output_size[1]))
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        if len(self.keypoint_names) != len(self.keypoint_frames):
            raise ConfigError(f"model config: {len(self.keypoint_names)} keypoint names but "
                              f"{len(self.keypoint_frames)} frames")
        if not self.keypoint_names:
            raise ConfigError("model config has no keypoints")
        if self.preprocessing not in MODES:
            raise ConfigError(f"model config preprocessing {self.preprocessing!r} not in {MODES}")
        if self.arch not in NETWORK_INFO and self.arch not in DREAM_ARCHS:
            raise ConfigError(f"model config arch {self.arch!r} is neither ours "
                              f"({sorted(NETWORK_INFO)}) nor DREAM's ({list(DREAM_ARCHS)})")
        BeliefMapCodec.from_dict(self.codec)   # validates
        self.keypoint_sigma_px = [float(v) for v in self.keypoint_sigma_px]
        self.keypoint_chain_order = [int(k) for k in self.keypoint_chain_order]
        if self.keypoint_chain_order and \
                sorted(self.keypoint_chain_order) != list(range(len(self.keypoint_names))):
            raise ConfigError(f"model config keypoint_chain_order must order the keypoints "
                              f"0..{len(self.keypoint_names) - 1} once each, got "
                              f"{self.keypoint_chain_order}")
        if not isinstance(self.onnx_int8, (bytes, bytearray)):
            raise ConfigError(f"model config onnx_int8 must be bytes (serialised ONNX), got "
                              f"{type(self.onnx_int8).__name__}")
        self.onnx_int8 = bytes(self.onnx_int8)
        if self.keypoint_sigma_px and (len(self.keypoint_sigma_px) != len(self.keypoint_names)
                                       or not all(v > 0 for v in self.keypoint_sigma_px)):
            raise ConfigError(f"model config keypoint_sigma_px needs {len(self.keypoint_names)} "
                              f"positive values, got {self.keypoint_sigma_px}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    @property
    def is_dream(self) -> bool:
        return self.arch in DREAM_ARCHS

    def make_codec(self) -> BeliefMapCodec:
        return BeliefMapCodec.from_dict(self.codec)

    def make_preprocessor(self) -> Preprocessor:
        return Preprocessor(self.preprocessing, self.input_size, self.mean, self.std,
                            half_pixel=self.half_pixel)

    def build_network(self) -> nn.Module:
        if self.is_dream:
            return build_dream_network(self.arch, self.num_keypoints)
        return build_network(self.arch, self.num_keypoints)

    def to_dict(self) -> Dict[str, Any]:
        """Plain fields; the int8 network is left out (save_model stores it as raw bytes)."""
        d = asdict(dataclasses.replace(self, onnx_int8=b""))
        del d["onnx_int8"]
        for k in ("input_size", "output_size", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"model config has unknown fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:   # missing required fields
            raise ConfigError(f"model config incomplete: {exc}")

    @classmethod
    def for_ours(cls, robot: str, keypoint_names: List[str], keypoint_frames: List[str],
                 arch: str = "dream_lite_s4", input_size: Optional[Tuple[int, int]] = None,
                 **kw) -> "ModelConfig":
        """Config of one of our architectures with its defaults (stride, input, codec)."""
        if arch not in NETWORK_INFO:
            raise ConfigError(f"{arch!r} is not one of our architectures {sorted(NETWORK_INFO)}")
        info = NETWORK_INFO[arch]
        w, h = input_size or info["default_input"]
        kw.setdefault("codec", BeliefMapCodec().to_dict())
        return cls(robot=robot, keypoint_names=list(keypoint_names),
                   keypoint_frames=list(keypoint_frames), arch=arch, input_size=(w, h),
                   output_size=(w // info["stride"], h // info["stride"]), **kw)


def keypoint_chain_order(config: ModelConfig, kinematics=None) -> List[int]:
    """The model's keypoints from base to tip: the config's own order, else its robot config's
    (when that lists the same keypoints), else the channel order. ``kinematics``: the config's
    RobotModel when the caller has it loaded already."""
    if config.keypoint_chain_order:
        return list(config.keypoint_chain_order)
    if kinematics is None:
        from dream_ros.robot import RobotModel
        try:
            kinematics = RobotModel.load(config.robot)
        except Exception:      # a robot config this machine lacks: nothing to order by
            return list(range(config.num_keypoints))
    if list(kinematics.keypoint_names) != list(config.keypoint_names):
        return list(range(config.num_keypoints))
    return kinematics.keypoint_chain_order()


# ---------------------------------------------------------------------- saving
def save_model(path: Union[str, Path], net: nn.Module, config: ModelConfig,
               fp16: bool = True) -> Path:
    """Write our model file atomically. ``fp16`` halves the file; weights load back as fp32."""
    path = Path(path)
    sd = OrderedDict()
    for k, v in net.state_dict().items():
        v = v.detach().cpu()
        sd[k] = v.half() if (fp16 and v.is_floating_point()) else v.clone()
    blob = {"format": FORMAT, "version": VERSION, "config": config.to_dict(), "state_dict": sd}
    if config.onnx_int8:
        # a uint8 tensor: pickled bytes would grow by half (latin-1 text) and an empty one is
        # refused by torch.load(weights_only=True)
        blob["onnx_int8"] = torch.frombuffer(bytearray(config.onnx_int8), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return path


# ---------------------------------------------------------------------- loading
def load_model(path_or_robot: Union[str, Path], device: Union[str, torch.device] = "cpu"
               ) -> Tuple[nn.Module, ModelConfig]:
    """(network in eval mode with fp32 weights, ModelConfig) from our file, a robot name
    (``models/<robot>_default.pt``) or a DREAM ``.pth`` with its ``.yaml`` beside it."""
    path = resolve_model_path(path_or_robot)
    blob = _torch_load(path)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        if int(blob.get("version", 0)) > VERSION:
            raise ConfigError(f"{path}: model file version {blob.get('version')} is newer than "
                              f"this code understands ({VERSION})")
        config = ModelConfig.from_dict(blob["config"])
        state = blob["state_dict"]
        int8 = blob.get("onnx_int8")
        if isinstance(int8, torch.Tensor) and int8.dtype == torch.uint8 and int8.numel():
            config.onnx_int8 = int8.numpy().tobytes()
    elif (isinstance(blob, dict) and blob
          and all(isinstance(v, torch.Tensor) for v in blob.values())):
        config = dream_config_from_yaml(_dream_yaml_path(path))
        state = blob
    else:
        raise ConfigError(f"{path} is neither a dream_ros model file nor a DREAM state_dict")
    net = config.build_network()
    load_state_strict(net, state, str(path))
    return net.to(device).eval(), config


def check_model_fits_robot(model_ref: Any, config: "ModelConfig", robot, fix: str) -> None:
    """ConfigError unless the model detects exactly the robot's keypoints and, when it names its
    robot, that robot. ``fix`` tells the user what to change (the node's parameters or the CLI's
    options); the node and offline calibrate share this so both refuse the same models."""
    names, robot_names = list(config.keypoint_names), list(robot.keypoint_names)
    foreign = [n for n in names if n not in robot_names]
    if foreign:
        raise ConfigError("model %s detects keypoints %s but robot %r has %s (not the robot's: "
                          "%s): the model is for another robot; %s"
                          % (model_ref, names, robot.config.name, robot_names, ", ".join(foreign),
                             fix))
    if len(set(names)) != len(robot_names):
        raise ConfigError("model %s detects %d keypoints but robot %r has %d (the model lacks %s): "
                          "the model was trained for another keypoint set; %s, or use a robot "
                          "config with the model's keypoints"
                          % (model_ref, len(set(names)), robot.config.name, len(robot_names),
                             ", ".join(n for n in robot_names if n not in names), fix))
    if config.robot and str(config.robot) not in (robot.config.name, robot.config.dream_name):
        raise ConfigError("model %s was trained for robot %r, not %r: %s"
                          % (model_ref, config.robot, robot.config.name, fix))


def robot_for_model(model_ref: Any, config: "ModelConfig", robot, fix: str):
    """The robot model whose keypoints the model detects: ``robot`` itself when the model fits it
    (check_model_fits_robot), else the model's own robot config when that config describes the
    same robot (same URDF, base frame and joints) with other keypoints (``panda_extended`` for a
    node started with ``robot:=panda``). ConfigError, as check_model_fits_robot's, otherwise."""
    try:
        check_model_fits_robot(model_ref, config, robot, fix)
        return robot
    except ConfigError as mismatch:
        variant = _same_robot_variant(config.robot, robot)
        if variant is None:
            raise
        try:
            check_model_fits_robot(model_ref, config, variant, fix)
        except ConfigError:
            raise mismatch
        return variant


def _same_robot_variant(name: Optional[str], robot):
    """RobotModel of config ``name`` when it is another config of ``robot``'s robot, else None."""
    from dream_ros.robot import RobotModel
    from dream_ros.robot_config import available_robots
    if not name or name == robot.config.name or name not in available_robots():
        return None
    variant = RobotModel.load(name)
    same = (Path(variant.urdf_path).resolve() == Path(robot.urdf_path).resolve()
            and variant.base_frame == robot.base_frame
            and variant.joint_names == robot.joint_names)
    return variant if same else None


def resolve_model_path(path_or_robot: Union[str, Path]) -> Path:
    p = Path(path_or_robot)
    if p.suffix in (".pt", ".pth") or p.exists() or os.sep in str(path_or_robot):
        if not p.is_file():
            raise ConfigError(f"model file not found: {p}")
        return p
    cand = default_model_path(str(path_or_robot))
    if not cand.is_file():
        # another keypoint set of a robot (panda_extended) runs that robot's shipped model
        # (panda's, an 11-keypoint panda_extended model since session 13); the callers'
        # robot_for_model check decides whose keypoints it detects
        base = _dream_name_of(str(path_or_robot))
        if base and default_model_path(base).is_file():
            return default_model_path(base)
        have = sorted(q.name[:-len(DEFAULT_MODEL_SUFFIX)]
                      for q in MODELS_DIR.glob("*" + DEFAULT_MODEL_SUFFIX))
        raise ConfigError(f"no default model for robot {str(path_or_robot)!r}: {cand} is missing "
                          f"(robots with a default model: {have or 'none'}); pass a model file")
    return cand


def _dream_name_of(robot: str) -> Optional[str]:
    """The robot class (``dream_name``) of one of our robot configs when it differs from the
    config's own name, else None."""
    from dream_ros.robot_config import available_robots, load_robot_config
    if robot not in available_robots():
        return None
    base = load_robot_config(robot).dream_name
    return base if base and base != robot else None


def _torch_load(path: Path):
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:   # corrupt file, pickled code, not a torch file
        # torch's message advises weights_only=False, i.e. running code from the file: not for us
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise ConfigError(f"cannot read model file {path}: it is corrupt, truncated or not a "
                          f"model file of ours or DREAM's ({first[:200]})")


def strip_prefix(state: Dict[str, torch.Tensor], prefix: str = "module.") -> "OrderedDict":
    return OrderedDict((k[len(prefix):] if k.startswith(prefix) else k, v)
                       for k, v in state.items())


def load_state_strict(net: nn.Module, state: Dict[str, torch.Tensor], origin: str = "") -> None:
    """Copy ``state`` (``module.`` prefix allowed, fp16 allowed) into ``net`` after a strict check
    naming every missing, unexpected and mis-shaped key. Missing BatchNorm ``num_batches_tracked``
    entries are tolerated (DREAM's files may lack them)."""
    state = strip_prefix(state)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        arch = getattr(net, "arch", type(net).__name__)
        lines = [f"weights {origin} do not fit the network {arch}"
                 f" ({len(missing)} missing, {len(unexpected)} unexpected, "
                 f"{len(shapes)} wrong shape):"]
        lines += [f"  missing: {k}" for k in missing]
        lines += [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  shape {s}" for s in shapes]
        if shapes:
            lines.append("  (a wrong last-layer shape usually means a different keypoint count)")
        raise ConfigError("\n".join(lines))
    full = OrderedDict()
    for k, v in own.items():
        src = state.get(k, v)
        full[k] = src.to(v.dtype) if v.is_floating_point() else src
    net.load_state_dict(full, strict=True)


# ---------------------------------------------------------------------- DREAM's YAML
def _dream_yaml_path(pth: Path) -> Path:
    for cand in (pth.with_suffix(".yaml"), pth.with_suffix(".yml")):
        if cand.is_file():
            return cand
    raise ConfigError(f"{pth} is a DREAM state_dict but its config {pth.with_suffix('.yaml')} "
                      "is missing: DREAM models need the .yaml beside the .pth")


def omap_to_dict(obj: Any) -> Any:
    """PyYAML reads ``!!omap`` as a list of (key, value) tuples: make ordered dicts, recursively."""
    if isinstance(obj, list):
        if obj and all(isinstance(e, tuple) and len(e) == 2 for e in obj):
            return OrderedDict((k, omap_to_dict(v)) for k, v in obj)
        return [omap_to_dict(e) for e in obj]
    if isinstance(obj, dict):
        return OrderedDict((k, omap_to_dict(v)) for k, v in obj.items())
    return obj


def _get(d: Any, dotted: str, default: Any = KeyError) -> Any:
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            if default is KeyError:
                raise ConfigError(f"DREAM config lacks required key {dotted!r}")
            return default
        cur = cur[part]
    return cur


def dream_config_from_yaml(path: Union[str, Path]) -> ModelConfig:
    """ModelConfig from DREAM's model YAML (dream-compat.md §2)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read DREAM config {path}: {exc}")
    cfg = omap_to_dict(raw)
    if not isinstance(cfg, dict):
        raise ConfigError(f"DREAM config {path} is not a mapping")
    robot = str(_get(cfg, "manipulator.name"))
    kps = _get(cfg, "manipulator.keypoints")
    if not isinstance(kps, list) or not kps:
        raise ConfigError(f"DREAM config {path}: manipulator.keypoints must be a non-empty list")
    names, frames = [], []
    for i, kp in enumerate(kps):
        if not isinstance(kp, dict) or "name" not in kp:
            raise ConfigError(f"DREAM config {path}: keypoint {i} has no name")
        names.append(str(kp["name"]))
        frames.append(str(kp.get("ros_frame") or kp["name"]))
    arch_cfg = _get(cfg, "architecture")
    arch = dream_arch_from_config(arch_cfg)
    heads = _get(cfg, "architecture.input_heads")
    if not heads or heads[0] != "image_rgb":
        raise ConfigError(f"DREAM config {path}: input_heads[0] must be image_rgb, got {heads}")
    norm = _get(cfg, "architecture.image_normalization")
    mode = str(_get(cfg, "architecture.image_preprocessing"))
    if mode not in MODES or mode == "letterbox":
        raise ConfigError(f"DREAM config {path}: image_preprocessing {mode!r} not supported "
                          "(resize, shrink-and-crop or none)")
    in_size = tuple(int(v) for v in _get(cfg, "training.config.net_input_resolution", [400, 400]))
    out_size = dream_output_size(arch, in_size)
    declared = _get(cfg, "training.config.net_output_resolution", None)
    if declared is not None and tuple(int(v) for v in declared) != out_size:
        raise ConfigError(f"DREAM config {path}: net_output_resolution {list(declared)} but "
                          f"{arch} at {list(in_size)} gives {list(out_size)}")
    training = {"source": "DREAM", "config_file": str(path),
                "training": _plain(_get(cfg, "training", {}))}
    return ModelConfig(
        robot=robot, keypoint_names=names, keypoint_frames=frames, arch=arch,
        input_size=in_size, output_size=out_size,
        mean=tuple(norm["mean"]), std=tuple(norm["stdev"]), preprocessing=mode, half_pixel=False,
        codec=BeliefMapCodec.dream(out_size).to_dict(), training=training,
        metrics=_plain(_get(cfg, "training.results", {})), source_format="dream",
        extra={"dream_config": _plain(cfg)})


def _plain(obj: Any) -> Any:
    """OrderedDicts -> dicts (keeps order) so configs survive torch.load(weights_only=True)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


class _OmapDumper(yaml.SafeDumper):
    """Writes every mapping as ``!!omap``, as DREAM's ruamel-written configs are."""


def _represent_omap(dumper: yaml.SafeDumper, data: dict):
    pairs = [yaml.MappingNode("tag:yaml.org,2002:map",
                              [(dumper.represent_data(k), dumper.represent_data(v))],
                              flow_style=False) for k, v in data.items()]
    return yaml.SequenceNode("tag:yaml.org,2002:omap", pairs, flow_style=False)


_OmapDumper.add_representer(dict, _represent_omap)
_OmapDumper.add_representer(OrderedDict, _represent_omap)


def save_dream_model(pth_path: Union[str, Path], net: nn.Module, config: ModelConfig) -> Path:
    """Write a DREAM-architecture model in DREAM's own format for DREAM's tools: ``X.pth``
    (fp32 state_dict, keys prefixed ``module.``) and ``X.yaml`` (``!!omap``), both atomically."""
    if not config.is_dream:
        raise ConfigError(f"{config.arch} is not a DREAM architecture; use save_model")
    pth = Path(pth_path)
    if pth.suffix != ".pth":
        raise ConfigError(f"DREAM weights need a .pth name, got {pth}")
    cfg = config.extra.get("dream_config") or {
        "manipulator": {"name": config.robot, "keypoints": [
            {"name": n, "friendly_name": n, "ros_frame": f}
            for n, f in zip(config.keypoint_names, config.keypoint_frames)]},
        "architecture": {"type": "vgg" if config.arch.startswith("vgg") else "resnet",
                         "deconv_decoder": config.arch == "vgg_f",
                         "full_decoder": config.arch == "resnet_f",
                         "target": "belief_maps", "input_heads": ["image_rgb"],
                         "output_heads": ["belief_maps"],
                         "image_normalization": {"mean": list(config.mean),
                                                 "stdev": list(config.std)},
                         "loss": {"type": "mse"}, "image_preprocessing": config.preprocessing},
        "training": {"config": {"net_input_resolution": list(config.input_size),
                                "net_output_resolution": list(config.output_size)},
                     "platform": {"gpu_ids": None}}}
    sd = OrderedDict(("module." + k, v.detach().cpu().float() if v.is_floating_point() else v)
                     for k, v in net.state_dict().items())
    pth.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(pth, lambda tmp: torch.save(sd, tmp))
    text = yaml.dump(cfg, Dumper=_OmapDumper, default_flow_style=False, sort_keys=False)
    _atomic_write(pth.with_suffix(".yaml"), lambda tmp: Path(tmp).write_text(text))
    return pth


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)    # mkstemp makes 0600 files; a model is for every user
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_model_path(robot: str) -> Path:
    """Where ``load_model(robot)`` looks: models/<robot>_default.pt."""
    return MODELS_DIR / f"{robot}{DEFAULT_MODEL_SUFFIX}"
