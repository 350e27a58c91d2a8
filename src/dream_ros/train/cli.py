"""``python -m dream_ros train``: train / resume / fine-tune a keypoint network, or export a run.

Examples::

    python -m dream_ros train --data /work/data/panda_train_320 --robot panda \\
        --arch dream_tiny_s4 --out /work/runs/panda_lite --resume --max-minutes 600
    torchrun --nproc_per_node=2 -m dream_ros train --data DIR --out RUN ...   # DDP (gloo on CPU)
    python -m dream_ros train --export /work/runs/panda_lite --to models/panda_default.pt
    python -m dream_ros train --average-weights RUN/snaps/a.pt RUN/snaps/b.pt RUN --to avg.pt
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

# OpenMP threads should sleep rather than spin while waiting: on 2 cores shared with rendering and
# other jobs, spinning threads burned half the CPU (measured 5.8 vs 12.6 img/s). Effective only if
# torch is not imported yet, which holds for `python -m dream_ros train` (heavy imports are lazy).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")



def add_arguments(p: argparse.ArgumentParser) -> None:
    from .distributed import PRECISIONS     # no torch import: the CLI starts fast
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="NDDS dataset directory (repeatable); re-scanned every epoch")
    p.add_argument("--robot", default=None,
                   help="robot config name or YAML path; default: the --init model's robot "
                        "config (panda_extended for an 11-keypoint Panda model), else panda")
    p.add_argument("--arch", default=None,
                   help="network architecture: ours (network/ours.py) or DREAM's (vgg_q, resnet_h...);"
                        " default: the --init model's, else dream_tiny_s4")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory: checkpoints, logs, TensorBoard")
    p.add_argument("--input-size", type=int, nargs=2, default=None, metavar=("W", "H"),
                   help="network input; default: the architecture's (or --init model's)")
    p.add_argument("--epochs", type=int, default=1000000,
                   help="number of epochs (each draws --epoch-images frames)")
    p.add_argument("--epoch-images", type=int, default=4000,
                   help="frames drawn per epoch (0 = all); validation + checkpoint after each")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt if present")
    p.add_argument("--init", metavar="MODEL", help="fine-tune from a model file or DREAM .pth")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule-images", type=int, default=400000,
                   help="cosine learning-rate horizon in cumulative images seen")
    p.add_argument("--warmup-images", type=int, default=3000)
    p.add_argument("--sigma-start", type=float, default=4.0,
                   help="initial label sigma (output cells), annealed to the codec's sigma")
    p.add_argument("--sigma-anneal-images", type=int, default=60000)
    p.add_argument("--fg-weight", type=float, default=10.0,
                   help="squared-error weight 1 + FG*target (0 = plain MSE as DREAM)")
    p.add_argument("--keypoint-weight", action="append", default=[], metavar="NAME=W",
                   help="scale this keypoint's map in the loss by W (default 1; repeat per "
                        "keypoint), e.g. to let maps added by --init pull less on the shared layers")
    p.add_argument("--data-weight", action="append", default=[], metavar="DIR=W",
                   help="draw the frames of --data DIR W times as often as the others' (default "
                        "1; repeat per set), e.g. to let a small set count for more")
    p.add_argument("--augment", default="strong", choices=("none", "dream", "strong"))
    p.add_argument("--zoom-prob", type=float, default=0.3,
                   help="share of training samples cropped around the robot, as the detector's "
                   "zoom pass sees it (default 0.3)")
    p.add_argument("--workers", type=int, default=1, help="data loader worker processes")
    p.add_argument("--threads", type=int, default=2, help="torch threads per process")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="forward-pass autocast (weights and loss stay float32): auto = fp16 on "
                   "CUDA, bf16 on CPUs with native bfloat16 (AVX512-BF16/AMX), else fp32")
    p.add_argument("--val-data", action="append", default=[], metavar="DIR",
                   help="fixed validation set(s) (NDDS); default: hold out --val-fraction of --data")
    p.add_argument("--val-pipeline-data", default=None, metavar="DIR",
                   help="also score each validation with the full pipeline (zoom pass, peak "
                   "choice, PnP) on this NDDS set, e.g. 640x480 renders; the best checkpoint is "
                   "then the one with the highest PCK AUC + ADD AUC there")
    p.add_argument("--val-fraction", type=float, default=0.02)
    p.add_argument("--max-val", type=int, default=300, help="validation frames used at most")
    p.add_argument("--min-frames", type=int, default=500,
                   help="wait until the data directories hold this many frames")
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop after this long (0 = never)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = never)")
    p.add_argument("--ckpt-minutes", type=float, default=10.0, help="also checkpoint this often")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--export", metavar="RUN_DIR_OR_CKPT",
                   help="instead of training: export the best checkpoint as a model file")
    p.add_argument("--to", metavar="MODEL_PATH", help="with --export: output .pt path "
                   "(with --average-weights: the averaged checkpoint)")
    p.add_argument("--which", default="best", choices=("best", "last"),
                   help="with --export: which checkpoint")
    p.add_argument("--card", metavar="MD", help="with --export: also write this model card")
    p.add_argument("--sigma-data", metavar="DIR",
                   help="with --export: NDDS set (640x480) on which to measure each keypoint's "
                   "median pixel error, which the pose weighs keypoints by (default: the run's "
                   "pipeline validation)")
    p.add_argument("--int8-data", metavar="DIR",
                   help="with --export: NDDS set (640x480) whose frames and zoom crops calibrate "
                   "the int8 network stored in the model file (network/quantize.py; default: "
                   "--sigma-data or the run's pipeline validation set; 'none': no int8 network)")
    p.add_argument("--extra-metrics", metavar="JSON",
                   help="with --export: JSON file of extra metrics to record (e.g. test-set eval)")
    p.add_argument("--average-weights", nargs="+", metavar="CKPT",
                   help="instead of training: write to --to a checkpoint with the mean of these "
                        "checkpoints' weights (and the last one's counters); export it as any")
    p.add_argument("--save-state", nargs=2, metavar=("RUN_DIR_OR_CKPT", "FILE"),
                   help="instead of training: copy the run's last checkpoint to FILE, small "
                        "enough for git (--state-budget-mb): Adam's moments in bfloat16, then "
                        "if needed fp16 weights, then without Adam's first moment; --resume "
                        "reads it")
    p.add_argument("--state-budget-mb", type=float, default=None,
                   help="--save-state: size to stay under (default 24, below git's 25 MB "
                        "limit for one file)")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    if args.export:
        if not args.to:
            raise InputError("--export needs --to MODEL_PATH")
        from .export import export_run
        export_run(args.export, args.to, which=args.which, card=args.card,
                   extra_metrics=args.extra_metrics, sigma_data=args.sigma_data,
                   int8_data=args.int8_data)
        return 0
    if args.average_weights:
        if not args.to:
            raise InputError("--average-weights needs --to CHECKPOINT_PATH")
        from .checkpoint import average_checkpoints
        out = average_checkpoints(args.average_weights, args.to)
        print("averaged %d checkpoints -> %s" % (len(args.average_weights), out))
        return 0
    if args.save_state:
        from .checkpoint import STATE_BUDGET_MB, save_compact_checkpoint
        budget = STATE_BUDGET_MB if args.state_budget_mb is None else args.state_budget_mb
        if budget <= 0:
            raise InputError("--state-budget-mb must be positive, got %g" % budget)
        out = save_compact_checkpoint(*args.save_state, budget_mb=budget)
        print("saved %s (%.1f MB)" % (out, out.stat().st_size / 1e6))
        return 0
    if not args.data:
        raise InputError("train needs at least one --data DIR")
    if not args.out:
        raise InputError("train needs --out RUN_DIR")
    from .loop import TrainConfig, train
    cfg = TrainConfig(
        data=list(args.data), out=args.out, robot=args.robot or _init_robot(args.init),
        arch=args.arch,
        input_size=tuple(args.input_size) if args.input_size else None, epochs=args.epochs, epoch_images=args.epoch_images,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_images=args.warmup_images, schedule_images=args.schedule_images,
        sigma_start=args.sigma_start, sigma_anneal_images=args.sigma_anneal_images,
        fg_weight=args.fg_weight,
        keypoint_weights=_weights(args.keypoint_weight, "--keypoint-weight", "NAME"),
        data_weights=_weights(args.data_weight, "--data-weight", "DIR"),
        augment=args.augment, zoom_prob=args.zoom_prob, workers=args.workers,
        precision=args.precision, threads=args.threads, val_fraction=args.val_fraction,
        val_data=list(args.val_data),
        val_pipeline_data=args.val_pipeline_data,
        max_val=args.max_val,
        min_frames=args.min_frames, max_minutes=args.max_minutes, max_steps=args.max_steps,
        ckpt_minutes=args.ckpt_minutes, resume=args.resume, init=args.init, seed=args.seed,
        log_every=args.log_every, device=args.device, progress=not args.no_progress,
        command="python -m dream_ros " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    train(cfg)
    return 0


def _weights(pairs, flag: str, what: str) -> dict:
    """KEY=W pairs of a repeatable weight flag as {key: weight}; a malformed pair is an
    InputError naming the flag."""
    from ..errors import InputError
    out = {}
    for pair in pairs:
        key, _, value = pair.rpartition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = None
        if weight is None or not key.strip():
            raise InputError("%s takes %s=WEIGHT, got %r" % (flag, what, pair))
        out[key.strip()] = weight
    return out


def _init_robot(init) -> str:
    """The robot config an --init model was trained for, when it is one of ours; else panda (a
    DREAM .pth, or no --init)."""
    if not init:
        return "panda"
    from ..network.model_file import load_model
    from ..robot_config import available_robots
    robot = load_model(init)[1].robot
    return robot if robot in available_robots() else "panda"
