"""``python -m dream_ros <subcommand>`` (console script: ``dream``).

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Those modules import heavy dependencies (torch, mujoco) inside ``run`` so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS = {
    "synth": ("dream_ros.synth.cli", "render a domain-randomized synthetic dataset (NDDS format)"),
    "train": ("dream_ros.train.cli", "train or fine-tune a keypoint network"),
    "eval": ("dream_ros.evaluation.cli", "evaluate a model on NDDS datasets with DREAM's metrics"),
    "calibrate": ("dream_ros.offline", "calibrate offline from NDDS, an image folder or a rosbag"),
    "bench": ("dream_ros.bench", "per-stage latency and throughput benchmark"),
    "quantize": ("dream_ros.network.quantize",
                 "add an int8 copy of a model's network for fast CPU inference"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dream",
        description="dream_ros: markerless camera-to-robot calibration (after DREAM).")
    sub = parser.add_subparsers(dest="command", metavar="<subcommand>")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a subcommand not built yet must not break the others
            p.set_defaults(_unavailable="%s is not available: %s" % (name, exc))
            continue
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(args._unavailable, file=sys.stderr)
        return 2
    from .errors import DreamError
    try:
        return int(args._run(args) or 0)
    except DreamError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 2
