"""The training loop: data -> labels -> loss -> AdamW, with validation PCK, checkpoints and resume.

Choices made for accuracy per CPU-hour (see docs/reference cpu-training-probe):
- The learning rate and the label width are functions of the cumulative images seen, so a run can
  be stopped and resumed any number of times and continues the same schedule.
- Labels start wide (sigma 4 output cells) and shrink to the codec's sigma, and the squared error is
  weighted up on the Gaussian foreground: both shorten the all-zeros plateau a plain MSE sits on.
- An "epoch" is a bounded random draw (``epoch_images``) from the frames present at its start, so a
  dataset that is still being rendered is re-scanned often and validation/checkpoints come regularly.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from . import checkpoint as ckpt
from . import distributed as dist_util
from .dataset import IMAGE_MEAN, IMAGE_STD, PREPROCESSING, FrameIndex, KeypointDataset


DEFAULT_ARCH = "dream_tiny_s4"   # best accuracy per CPU-hour here (docs in models/panda_default.md)


@dataclasses.dataclass
class TrainConfig:
    data: List[str]
    out: str
    robot: str = "panda"
    arch: Optional[str] = None       # None: the --init model's arch, else DEFAULT_ARCH
    input_size: Optional[Sequence[int]] = None   # None: the arch's (or --init model's) default
    epochs: int = 1000000            # bounded by --max-minutes in practice
    epoch_images: int = 4000
    batch_size: int = 24
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_images: int = 3000
    schedule_images: int = 400000    # cosine decay horizon in cumulative images seen
    lr_floor: float = 0.05           # fraction of lr kept after the horizon
    sigma_start: float = 4.0
    sigma_anneal_images: int = 60000
    fg_weight: float = 10.0
    # loss weight per keypoint name (others 1): lets a grown model's new maps pull the shared
    # layers less than the maps it already had
    keypoint_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    # draw weight per --data directory (others 1): a set's frames are drawn W times as often, e.g.
    # a small set from another generator that the bulk of the frames would drown
    data_weights: Dict[str, float] = dataclasses.field(default_factory=dict)
    augment: str = "strong"
    zoom_prob: float = 0.0           # share of training samples cropped around the robot
    workers: int = 1
    precision: str = "auto"          # autocast: auto | fp32 | bf16 (distributed.resolve_precision)
    threads: int = 2
    val_fraction: float = 0.02
    val_data: List[str] = dataclasses.field(default_factory=list)   # fixed validation sets
    val_pipeline_data: Optional[str] = None   # NDDS set scored by the full pipeline (pipeline_val.py)
    max_val: int = 300
    min_frames: int = 500
    max_minutes: float = 0.0         # 0 = no limit
    max_steps: int = 0               # 0 = no limit (tests)
    ckpt_minutes: float = 10.0
    resume: bool = False
    init: Optional[str] = None
    seed: int = 0
    log_every: int = 50
    device: str = "auto"
    progress: bool = True
    command: str = ""


# ---------------------------------------------------------------------------------- schedules
def lr_at(cfg: TrainConfig, images: float) -> float:
    warm = min(1.0, (images + 1.0) / max(1.0, cfg.warmup_images))
    t = min(1.0, images / max(1.0, cfg.schedule_images))
    return cfg.lr * warm * (cfg.lr_floor + (1.0 - cfg.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


def sigma_at(cfg: TrainConfig, images: float, final_sigma: float) -> float:
    if cfg.sigma_anneal_images <= 0 or cfg.sigma_start <= final_sigma:
        return final_sigma
    f = max(0.0, 1.0 - images / cfg.sigma_anneal_images)
    return final_sigma + (cfg.sigma_start - final_sigma) * f


def weighted_mse(pred, target, fg_weight: float, map_weights=None):
    """MSE weighted by (1 + fg_weight * target): foreground errors count more, mean over all cells.
    map_weights (one per map, or None) scale each map's share."""
    w = 1.0 + fg_weight * target
    if map_weights is not None:
        w = w * map_weights.view(1, -1, 1, 1)
    return (w * (pred - target) ** 2).mean()


def keypoint_weight_vector(weights: Dict[str, float], names: Sequence[str]):
    """The per-map loss weights for --keypoint-weight, in map order; None when all are 1."""
    import torch
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError("--keypoint-weight names %s, not keypoints of this robot (%s)"
                          % (", ".join(unknown), ", ".join(names)))
    bad = {n: w for n, w in weights.items() if not (math.isfinite(w) and w >= 0)}
    if bad:
        raise ConfigError("--keypoint-weight must be finite and >= 0: %s" % bad)
    if all(weights.get(n, 1.0) == 1.0 for n in names):
        return None
    return torch.tensor([float(weights.get(n, 1.0)) for n in names])


def data_weight_map(weights: Dict[str, float], data_dirs: Sequence[str]) -> Dict[str, float]:
    """--data-weight checked against --data, keyed as FrameRecord.source; {} when all are 1."""
    given = {str(Path(d)): float(w) for d, w in weights.items()}
    unknown = sorted(set(given) - {str(Path(d)) for d in data_dirs})
    if unknown:
        raise ConfigError("--data-weight names %s, not among the --data directories (%s)"
                          % (", ".join(unknown), ", ".join(data_dirs)))
    bad = {d: w for d, w in given.items() if not (math.isfinite(w) and w > 0)}
    if bad:
        raise ConfigError("--data-weight must be finite and > 0 (to leave a set out, drop its "
                          "--data): %s" % bad)
    return {} if all(w == 1.0 for w in given.values()) else given


def draw_order(records, n_draw: int, set_weights: Dict[str, float], rng) -> np.ndarray:
    """The frames one epoch draws: a permutation, or with set weights a weighted draw without
    replacement (each frame weighs its set's weight); repeated to n_draw for tiny datasets."""
    if not set_weights:
        order = rng.permutation(len(records))
    else:
        p = np.array([set_weights.get(r.source, 1.0) for r in records], dtype=np.float64)
        order = rng.choice(len(records), size=min(n_draw, len(records)), replace=False,
                           p=p / p.sum())
    return np.resize(order, n_draw)


# ---------------------------------------------------------------------------------- metrics
def pck_summary(err: np.ndarray, n_inframe: int) -> Dict[str, float]:
    """DREAM-style keypoint summary: errors of found in-frame keypoints; missing ones count as fails."""
    out: Dict[str, float] = {"n_inframe": float(n_inframe), "n_found": float(err.size)}
    if n_inframe == 0:
        return out
    t = np.arange(0.0, 20.0, 0.01)
    y = (err[None, :] < t[:, None]).sum(axis=1) if err.size else np.zeros_like(t)
    out["pck_auc"] = float(np.trapezoid(y, dx=0.01) / 20.0 / n_inframe) if hasattr(np, "trapezoid") \
        else float(np.trapz(y, dx=0.01) / 20.0 / n_inframe)
    for thr in (2.5, 5, 10, 20):
        out["pck@%g" % thr] = float((err < thr).sum() / n_inframe)
    out["detected"] = float(err.size / n_inframe)
    if err.size:
        out["median_px"] = float(np.median(err))
        out["mean_px"] = float(np.mean(err))
    return out


def evaluate(net, loader, codec, out_size, device, fg_weight: float) -> Dict[str, float]:
    """Validation loss at the final label width and PCK in raw pixels (codec.decode peaks)."""
    import torch
    net.eval()
    errs, n_in, losses = [], 0, []
    with torch.no_grad():
        for image, xy_out, xy_raw, scale, raw_size in loader:
            image = image.to(device).contiguous(memory_format=torch.channels_last)
            pred = _heatmaps(net(image)).float()
            valid = torch.isfinite(xy_out).all(-1)
            target = codec.encode_torch(xy_out.to(device), valid.to(device), out_size)
            losses.append(float(torch.mean((pred - target) ** 2)))
            xy_pred, _, det = codec.decode(pred.cpu().numpy())
            sc = scale.numpy()[:, None, :]
            xy_pred = xy_pred * sc[..., :2] + sc[..., 2:]
            gt = xy_raw.numpy()
            rs = raw_size.numpy()[:, None, :]
            inframe = np.all(np.isfinite(gt), -1) & np.all((gt >= 0) & (gt <= rs), -1)
            n_in += int(inframe.sum())
            found = inframe & det
            errs.append(np.linalg.norm(xy_pred[found] - gt[found], axis=-1))
    net.train()
    err = np.concatenate(errs) if errs else np.zeros(0)
    res = pck_summary(err, n_in)
    res["val_mse"] = float(np.mean(losses)) if losses else float("nan")
    return res


def _heatmaps(output):
    """Networks may return the maps or a tuple/dict whose first entry is the maps."""
    if isinstance(output, dict):
        output = output.get("belief_maps", next(iter(output.values())))
    if isinstance(output, (list, tuple)):
        output = output[-1] if not hasattr(output[0], "dim") or output[0].dim() != 4 else output[0]
    return output


# ---------------------------------------------------------------------------------- helpers
def _output_size(net, input_size, device):
    import torch
    with torch.no_grad():
        net.eval()
        y = _heatmaps(net(torch.zeros(1, 3, input_size[1], input_size[0], device=device)))
        net.train()
    return (int(y.shape[-1]), int(y.shape[-2])), int(y.shape[1])


def _build(arch: str, n_kp: int):
    from ..network.dream_arch import DREAM_ARCHS, build_dream_network
    from ..network.ours import build_network
    return build_dream_network(arch, n_kp) if arch in DREAM_ARCHS else build_network(arch, n_kp)


def _default_spec(arch: str, input_size) -> Dict[str, Any]:
    """How a fresh network of ``arch`` sees images: ours letterbox 320x240, DREAM's resize 400x400."""
    from ..network.dream_arch import DREAM_ARCHS
    from ..network.ours import NETWORK_INFO
    if arch in DREAM_ARCHS:
        return {"arch": arch, "input_size": list(input_size or (400, 400)), "preprocessing": "resize",
                "half_pixel": False, "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD), "codec": None}
    if arch not in NETWORK_INFO:
        raise ConfigError("unknown architecture %r (ours: %s; DREAM's: %s)"
                          % (arch, sorted(NETWORK_INFO), list(DREAM_ARCHS)))
    return {"arch": arch, "input_size": list(input_size or NETWORK_INFO[arch]["default_input"]),
            "preprocessing": PREPROCESSING, "half_pixel": None, "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD), "codec": None}


def _init_from(cfg: "TrainConfig", names: Sequence[str], log):
    """Network + spec for fine-tuning from a shipped model or DREAM weights (``--init``).

    Same architecture: every weight, the preprocessing and the label codec come from the model.
    Another architecture of ours: the net is grown from the model's without changing its output
    (``grow_state_dict``: blocks added, stages widened); DREAM's weights into one of ours: those
    whose name and shape match are copied, the rest start fresh. A robot config that lists the
    model's keypoints first and then more (panda -> panda_extended) grows the output head: the
    model's maps stay as they were, the new ones start fresh.
    """
    from ..network.dream_arch import DREAM_ARCHS
    from ..network.model_file import load_model
    from ..network.ours import grow_state_dict
    src, mcfg = load_model(cfg.init)
    have = list(mcfg.keypoint_names)
    more_keypoints = len(have) < len(names) and list(names[:len(have)]) == have
    if have != list(names) and not more_keypoints:
        raise ConfigError("--init %s has keypoints %s, the robot config %s (a config can add "
                          "keypoints after the model's, not change them)"
                          % (cfg.init, have, list(names)))
    arch = cfg.arch or mcfg.arch
    prov = {"init": str(cfg.init), "init_training": _training_of(mcfg)}
    if arch == mcfg.arch:
        spec = {"arch": arch, "input_size": list(cfg.input_size or mcfg.input_size),
                "preprocessing": mcfg.preprocessing, "half_pixel": mcfg.half_pixel,
                "mean": list(mcfg.mean), "std": list(mcfg.std), "codec": dict(mcfg.codec)}
        log("init: all weights, preprocessing %s and codec from %s" % (mcfg.preprocessing, cfg.init))
        if not more_keypoints:
            return src.train(), spec, dict(prov, init_tensors=len(src.state_dict()))
    else:
        spec = _default_spec(arch, cfg.input_size)
    net = _build(arch, len(names))
    mine = net.state_dict()
    if mcfg.is_dream or arch in DREAM_ARCHS:
        copied = {k: v.to(mine[k].dtype) for k, v in src.state_dict().items()
                  if k in mine and tuple(v.shape) == tuple(mine[k].shape)}
        mine.update(copied)
        net.load_state_dict(mine)
        used = len(copied)
    else:
        used = grow_state_dict(src.state_dict(), net)
    if not used:
        raise ConfigError("--init %s (%s): no weight matches %s by name and shape"
                          % (cfg.init, mcfg.arch, arch))
    log("init: %d/%d tensors from %s%s" % (used, len(mine), cfg.init, "; %d new keypoint maps"
                                             % (len(names) - len(have)) if more_keypoints else ""))
    return net, spec, dict(prov, init_tensors=used)


def _training_of(mcfg) -> Dict[str, Any]:
    """What the --init model had already learned from (ours: images and hours), so a model card
    can give the cumulative training of a net grown or fine-tuned from it."""
    t = mcfg.training or {}
    # a model that was itself grown counts its own --init model's training too (cumulative chain)
    before = t.get("init_training") or {}
    return {"arch": mcfg.arch,
            "images_seen": int(t.get("images_seen") or 0) + int(before.get("images_seen") or 0),
            "wall_hours": float(t.get("wall_hours") or 0.0) + float(before.get("wall_hours") or 0.0)}


class _Log:
    def __init__(self, run_dir: Path, rank: int):
        self.rank = rank
        self.path = run_dir / "train_events.log"

    def __call__(self, msg: str) -> None:
        if self.rank != 0:
            return
        line = "[%s] %s" % (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), msg)
        print(line, flush=True)


# ---------------------------------------------------------------------------------- main loop
def train(cfg: TrainConfig) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from ..network.codec import BeliefMapCodec
    from ..robot_config import load_robot_config

    ctx = dist_util.setup()
    rank, world = ctx.rank, ctx.world_size
    torch.set_num_threads(max(1, int(cfg.threads)))
    device = torch.device("cuda" if (cfg.device == "auto" and torch.cuda.is_available())
                          else ("cpu" if cfg.device == "auto" else cfg.device))
    if ctx.local_rank is not None and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = _Log(run_dir, rank)

    robot = load_robot_config(cfg.robot)
    names = robot.keypoint_names
    torch.manual_seed(cfg.seed + rank)
    state = ckpt.load_checkpoint(run_dir) if cfg.resume else None
    init_prov: Dict[str, Any] = {}
    if state is not None:
        spec = dict(state.get("spec") or _default_spec(state["arch"], state["input_size"]))
        spec["codec"] = state.get("codec")
        if (cfg.arch and cfg.arch != spec["arch"]) or \
                (cfg.input_size and list(cfg.input_size) != list(spec["input_size"])):
            raise ConfigError("checkpoint in %s is arch %s at %s, not %s at %s"
                              % (run_dir, spec["arch"], spec["input_size"], cfg.arch,
                                 list(cfg.input_size or spec["input_size"])))
        net = _build(spec["arch"], len(names))
    elif cfg.init:
        net, spec, init_prov = _init_from(cfg, names, log)
    else:
        spec = _default_spec(cfg.arch or DEFAULT_ARCH, cfg.input_size)
        net = _build(spec["arch"], len(names))
    arch, input_size = spec["arch"], tuple(spec["input_size"])
    net = net.to(device)
    out_size, n_out = _output_size(net, input_size, device)
    if n_out != len(names):
        raise ConfigError("network %s gives %d maps for %d keypoints" % (arch, n_out, len(names)))
    if spec.get("codec"):
        codec = BeliefMapCodec.from_dict(spec["codec"])
    else:
        from ..network.dream_arch import DREAM_ARCHS
        codec = BeliefMapCodec.dream(out_size) if arch in DREAM_ARCHS else BeliefMapCodec()
    spec["codec"] = codec.to_dict()
    net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    precision = dist_util.resolve_precision(cfg.precision, device)
    # fp16 needs loss scaling; bf16 has float32's exponent range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    data_kw = dict(preprocessing=spec["preprocessing"], half_pixel=spec["half_pixel"],
                   mean=spec["mean"], std=spec["std"])

    counters = {"images_seen": 0, "steps": 0, "epoch": 0, "wall_hours": 0.0, "sessions": 0}
    history: List[Dict[str, Any]] = []
    provenance: Dict[str, Any] = {"commands": [], "data": list(cfg.data), "seed": cfg.seed}
    best_score = -1.0
    if state is not None:
        net.load_state_dict(state["model"])
        try:
            opt.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            log("optimizer state not restored (%s); continuing with fresh moments" % exc)
        counters.update(state["counters"])
        history = list(state.get("history", []))
        provenance = dict(state.get("provenance", provenance))
        best_score = float(state.get("best_score", -1.0))
        log("resumed %s: %d images seen, %.2f h, step %d, best validation score %.4f"
            % (run_dir, counters["images_seen"], counters["wall_hours"], counters["steps"], best_score))
    elif cfg.init:
        provenance.update(init_prov)
    elif cfg.resume:
        log("no checkpoint in %s yet: starting from scratch" % run_dir)
    counters["sessions"] = int(counters.get("sessions", 0)) + 1
    map_weights = keypoint_weight_vector(cfg.keypoint_weights, names)
    if map_weights is not None:
        map_weights = map_weights.to(device)
        log("loss weights per keypoint: %s" % ", ".join(
            "%s %g" % (n, w) for n, w in zip(names, map_weights.tolist()) if w != 1.0))
    set_weights = data_weight_map(cfg.data_weights, cfg.data)
    if set_weights:
        log("draw weights per data set: %s" % ", ".join(
            "%s %g" % (d, w) for d, w in set_weights.items() if w != 1.0))
    provenance.setdefault("commands", []).append(cfg.command or " ".join(sys.argv))
    provenance["data"] = sorted(set(provenance.get("data", [])) | set(cfg.data))

    model = dist_util.wrap(net, ctx, device)
    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(str(run_dir / "tb"))
        except Exception as exc:  # tensorboard is optional at run time
            log("tensorboard disabled: %s" % exc)
    n_params = sum(p.numel() for p in net.parameters())
    log("arch %s: %.2f M parameters, input %s -> output %s, %d keypoints, device %s (%s), world %d"
        % (arch, n_params / 1e6, input_size, out_size, len(names), device, precision, world))

    # Keypoints the frames lack (data rendered for panda, trained for panda_extended) are derived
    # from each frame's joint state and base pose by forward kinematics.
    from ..robot import RobotModel
    kinematics = RobotModel.load(cfg.robot)
    index = FrameIndex(cfg.data, names, object_class=robot.dream_name, derive_with=kinematics)
    # A fixed validation set (--val-data) keeps scores comparable while the training data grows;
    # without it, a hash-split share of the training frames is held out.
    val_index = (FrameIndex(cfg.val_data, names, object_class=robot.dream_name,
                            derive_with=kinematics) if cfg.val_data else None)

    def split_frames():
        if val_index is None:
            return index.split(cfg.val_fraction, cfg.max_val)
        val_index.refresh()
        return index.split(0.0)[0], val_index.split(1.0, cfg.max_val)[1]

    # SIGTERM (kill, a session ending): checkpoint and stop instead of losing the last minutes
    import signal
    import threading
    terminate = threading.Event()
    if rank == 0 and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: terminate.set())
    start = time.time()
    last_ckpt = time.time()
    hours_base = float(counters["wall_hours"])

    def elapsed_min() -> float:
        return (time.time() - start) / 60.0

    def snapshot(metrics: Optional[Dict[str, float]] = None, best: bool = False) -> None:
        counters["wall_hours"] = hours_base + (time.time() - start) / 3600.0
        st = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
              "optimizer": opt.state_dict(), "counters": dict(counters), "history": history,
              "provenance": provenance, "best_score": best_score, "arch": arch,
              "input_size": list(input_size), "output_size": list(out_size), "spec": spec,
              "keypoint_names": names, "robot": robot.name, "codec": codec.to_dict(),
              "train_config": dataclasses.asdict(cfg), "metrics": metrics or {}}
        ckpt.save_checkpoint(run_dir, st, best=best)

    # wait for enough rendered frames (the renderer may still be starting)
    while True:
        index.refresh()
        train_recs, val_recs = split_frames()
        if len(train_recs) >= min(cfg.min_frames, cfg.batch_size * world) and len(index) >= cfg.min_frames \
                or cfg.min_frames <= 0:
            break
        if cfg.max_minutes and elapsed_min() > cfg.max_minutes:
            raise InputError("only %d frames in %s after waiting" % (len(index), cfg.data))
        log("waiting for data: %d frames so far (need %d)" % (len(index), cfg.min_frames))
        time.sleep(30)

    stop = False
    smooth_loss = None
    t_rate, n_rate = time.time(), 0
    while not stop and counters["epoch"] < cfg.epochs:
        index.refresh()
        train_recs, val_recs = split_frames()
        if not train_recs:
            raise InputError("no training frames in %s" % cfg.data)
        epoch = int(counters["epoch"])
        g = np.random.default_rng(cfg.seed * 100003 + epoch)
        n_draw = min(cfg.epoch_images, len(train_recs)) if cfg.epoch_images > 0 else len(train_recs)
        n_draw = max(world * cfg.batch_size, n_draw - n_draw % (world * cfg.batch_size))
        order = draw_order(train_recs, n_draw, set_weights, g)
        mine = order[rank::world].tolist()
        ds = KeypointDataset([train_recs[i] for i in mine], input_size, out_size, cfg.augment,
                             zoom_prob=cfg.zoom_prob, chain_order=kinematics.keypoint_chain_order(),
                             **data_kw)
        loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, drop_last=True,
                            num_workers=cfg.workers, persistent_workers=False,
                            prefetch_factor=4 if cfg.workers > 0 else None,
                            worker_init_fn=_seed_worker)
        log("epoch %d: %d frames indexed (%d train, %d val shown), drawing %d"
            % (epoch, len(index), len(train_recs), len(val_recs), n_draw))
        if set_weights:
            drawn = np.unique([train_recs[i].source for i in order], return_counts=True)
            log("drawn per data set: %s" % ", ".join(
                "%s %d" % (Path(d).name, n) for d, n in zip(*drawn)))
        it = loader
        if cfg.progress and rank == 0:
            from tqdm import tqdm
            it = tqdm(loader, desc="epoch %d" % epoch, mininterval=30.0, file=sys.stderr,
                      dynamic_ncols=False, ncols=100)
        for image, xy_out, _, _, _ in it:
            images = int(counters["images_seen"])
            lr = lr_at(cfg, images)
            for gparam in opt.param_groups:
                gparam["lr"] = lr
            sigma = sigma_at(cfg, images, codec.sigma)
            lab = dataclasses.replace(codec, sigma=sigma)
            image = image.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            xy_out = xy_out.to(device)
            target = lab.encode_torch(xy_out, torch.isfinite(xy_out).all(-1), out_size)
            with dist_util.autocast(device, precision):
                pred = _heatmaps(model(image))
            loss = weighted_mse(pred.float(), target, cfg.fg_weight, map_weights)
            if not torch.isfinite(loss):
                raise ConfigError("loss became %s at step %d (lr %.2e): lower --lr"
                                  % (float(loss), counters["steps"], lr))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            counters["images_seen"] = images + image.shape[0] * world
            counters["steps"] = int(counters["steps"]) + 1
            n_rate += image.shape[0] * world
            lv = float(loss.detach())
            smooth_loss = lv if smooth_loss is None else 0.98 * smooth_loss + 0.02 * lv
            if rank == 0 and counters["steps"] % cfg.log_every == 0:
                rate = n_rate / max(1e-6, time.time() - t_rate)
                t_rate, n_rate = time.time(), 0
                log("step %d images %d loss %.5f (avg %.5f) lr %.2e sigma %.2f %.1f img/s"
                    % (counters["steps"], counters["images_seen"], lv, smooth_loss, lr, sigma, rate))
                if writer is not None:
                    writer.add_scalar("train/loss", lv, counters["images_seen"])
                    writer.add_scalar("train/lr", lr, counters["images_seen"])
                    writer.add_scalar("train/sigma", sigma, counters["images_seen"])
                    writer.add_scalar("train/img_per_s", rate, counters["images_seen"])
            if cfg.max_steps and counters["steps"] >= cfg.max_steps:
                stop = True
            if cfg.max_minutes and elapsed_min() >= cfg.max_minutes:
                stop = True
            if terminate.is_set():
                snapshot(history[-1] if history else None)
                log("terminated: checkpoint %s after %d images" % (run_dir / ckpt.LAST,
                                                                   counters["images_seen"]))
                if writer is not None:
                    writer.close()
                dist_util.cleanup(ctx)
                return {"counters": counters, "best_score": best_score,
                        "history": history, "output_size": out_size, "terminated": True}
            if rank == 0 and (time.time() - last_ckpt) / 60.0 >= cfg.ckpt_minutes:
                snapshot(history[-1] if history else None)
                last_ckpt = time.time()
                log("checkpoint (timed): %s" % (run_dir / ckpt.LAST))
            if dist_util.any_flag(stop, ctx):
                stop = True
                break
        counters["epoch"] = epoch + (0 if stop and cfg.max_steps else 1)
        # validation + checkpoint (rank 0); the others wait at the barrier
        if rank == 0:
            metrics: Dict[str, float] = {}
            if val_recs:
                vds = KeypointDataset(val_recs, input_size, out_size, "none", **data_kw)
                vl = DataLoader(vds, batch_size=32, shuffle=False, num_workers=cfg.workers)
                metrics = evaluate(net, vl, codec, out_size, device, cfg.fg_weight)
            if cfg.val_pipeline_data:
                from .export import model_config
                from .pipeline_val import pipeline_metrics
                metrics.update(pipeline_metrics(
                    net, model_config({"keypoint_names": names, "robot": robot.name, "arch": arch,
                                       "input_size": list(input_size), "spec": spec,
                                       "output_size": list(out_size), "codec": codec.to_dict()}),
                    cfg.val_pipeline_data, cfg.max_val))
            metrics.update({"images_seen": counters["images_seen"], "epoch": counters["epoch"],
                            "wall_hours": hours_base + (time.time() - start) / 3600.0,
                            "train_loss_avg": smooth_loss or float("nan"),
                            "n_frames": len(index), "n_val": len(val_recs)})
            # scores on different validation sets do not compare: a changed set (the data grew or
            # another directory was added) restarts the best-model competition
            import zlib
            keys = [r.key for r in val_recs] + (["pipeline:" + str(cfg.val_pipeline_data)]
                                                 if cfg.val_pipeline_data else [])
            val_sig = "%08x" % zlib.crc32("\n".join(keys).encode("utf-8"))
            if val_sig != counters.get("val_signature"):
                if counters.get("val_signature"):
                    log("validation set changed: best score reset (was %.4f)" % best_score)
                best_score = -1.0
                counters["val_signature"] = val_sig
            metrics["val_signature"] = val_sig
            history.append(metrics)
            # the pipeline's PCK + ADD AUC when it ran (pipeline_val.py), else the maps' PCK AUC
            score = metrics.get("pipeline_score", metrics.get("pck_auc", -1.0))
            is_best = score > best_score
            if is_best:
                best_score = score
            snapshot(metrics, best=is_best)
            last_ckpt = time.time()
            log("validation after %d images: %s%s" % (counters["images_seen"], json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}),
                " (best)" if is_best else ""))
            if writer is not None:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and k.startswith(("pck", "val", "median", "det")):
                        writer.add_scalar("val/" + k.replace("@", "_at_"), v, counters["images_seen"])
                writer.flush()
        dist_util.barrier(ctx)
    if writer is not None:
        writer.close()
    dist_util.cleanup(ctx)
    return {"counters": counters, "best_score": best_score,
            "history": history, "output_size": out_size}


def _seed_worker(worker_id: int) -> None:
    import random

    import torch
    seed = torch.initial_seed() % (2 ** 32)
    np.random.seed(seed)
    random.seed(seed)
