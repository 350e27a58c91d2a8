"""``python -m dream_ros synth``: render a domain-randomized NDDS dataset for a robot."""
from __future__ import annotations

import argparse

from ..errors import InputError


def _shard(text: str):
    try:
        i, n = text.split("/")
        return int(i), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError("--shard must look like i/n, e.g. 0/4")


def add_arguments(p: argparse.ArgumentParser):
    p.add_argument("--robot", default="panda", help="robot config name or path to a robot YAML")
    p.add_argument("--count", type=int, default=100, help="total frames in the dataset (all shards)")
    p.add_argument("--out", required=True, help="output directory (NDDS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="rendering processes")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="i/n",
                   help="render only frames with index %% n == i (cluster array jobs)")
    p.add_argument("--png", action="store_true", help="write PNG instead of JPEG")
    p.add_argument("--jpeg-quality", type=int, default=92)
    p.add_argument("--fov", type=float, default=None,
                   help="fixed vertical field of view in degrees (default: random per frame, "
                        "range from the robot config); fixed gives one K for the whole set")
    p.add_argument("--camera-radius", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="camera distance range in metres (default: the robot config's)")
    p.add_argument("--closeup-prob", type=float, default=None,
                   help="share of close-ups aimed at one keypoint (default: the robot config's)")
    p.add_argument("--table-prob", type=float, default=None,
                   help="share of table scenes: the robot on a mounting plate on a table top, "
                        "sometimes casting shadows (default: the robot config's, 0)")
    p.add_argument("--distractors", type=int, default=8, help="max distractor primitives per image")
    p.add_argument("--mesh-distractors", type=int, default=12,
                   help="object-mesh distractor slots (pybullet_data objects, up to 4 per image)")
    p.add_argument("--msaa", type=int, default=0,
                   help="multisample anti-aliasing samples (0 = off, fastest; 4 = smoother, ~2.5x render cost)")
    p.add_argument("--masks", action="store_true",
                   help="also write NNNNNN.cs.png segmentation (robot 255, distractors 128, else 0)")
    p.add_argument("--no-photos", action="store_true", help="procedural backgrounds only")
    p.add_argument("--contact-sheet", metavar="PNG", default=None,
                   help="after rendering, save a 4x4 contact sheet of the first 16 frames here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from .generate import SynthOptions, run_synth
    if args.count < 0 or args.width < 16 or args.height < 16 or args.workers < 1:
        raise InputError("need --count >= 0, --width/--height >= 16 and --workers >= 1")
    if args.camera_radius and not 0 < args.camera_radius[0] <= args.camera_radius[1]:
        raise InputError("--camera-radius needs 0 < MIN <= MAX, got %s" % (args.camera_radius,))
    if args.closeup_prob is not None and not 0.0 <= args.closeup_prob <= 1.0:
        raise InputError("--closeup-prob must be in [0, 1], got %s" % args.closeup_prob)
    if args.table_prob is not None and not 0.0 <= args.table_prob <= 1.0:
        raise InputError("--table-prob must be in [0, 1], got %s" % args.table_prob)
    opts = SynthOptions(robot=args.robot, out=args.out, count=args.count, seed=args.seed,
                        width=args.width, height=args.height, ext="png" if args.png else "jpg",
                        jpeg_quality=args.jpeg_quality, fov=args.fov, distractors=args.distractors,
                        mesh_distractors=args.mesh_distractors,
                        photos=not args.no_photos, msaa=args.msaa, masks=args.masks,
                        shard_index=args.shard[0], shard_count=args.shard[1],
                        camera_radius=tuple(args.camera_radius) if args.camera_radius else None,
                        closeup_prob=args.closeup_prob, table_prob=args.table_prob)
    card = run_synth(opts, workers=args.workers, progress=not args.quiet)
    secs = card["seconds_this_run"]
    n = card["frames_written_this_run"]
    print("wrote %d frames (%d already there) to %s in %.1f s%s"
          % (n, card["frames_skipped_existing"], args.out, secs,
             " (%.1f img/s)" % (n / secs) if n and secs > 0 else ""))
    if args.contact_sheet:
        from .contact_sheet import make_contact_sheet
        make_contact_sheet(args.out, args.contact_sheet, robot=args.robot)
        print("contact sheet: %s" % args.contact_sheet)
    return 0
