"""Command-line options for the detector's peak extraction, zoom pass and candidate peaks, shared
by the ``eval`` and ``calibrate`` subcommands (kept apart from detector.py so argument parsing
imports no torch)."""
from __future__ import annotations

import argparse
from typing import Any, Dict

from dream_ros.network.zoom import DEFAULT_ZOOM_VIEWS, ZOOM_VIEWS


def add_detector_options(parser: argparse.ArgumentParser,
                         zoom_views_default: int = DEFAULT_ZOOM_VIEWS) -> None:
    """The options; ``zoom_views_default`` is the zoom views this command uses when not given."""
    parser.add_argument("--threshold", type=float, default=None,
                        help="peak threshold (default: the model's)")
    parser.add_argument("--ambiguity", type=float, default=None,
                        help="drop a keypoint whose second peak is within this fraction of the "
                        "first (default: the model's; 0 keeps every peak)")
    parser.add_argument("--no-zoom", action="store_true",
                        help="one network pass (no second pass on a robot-centred crop)")
    parser.add_argument("--zoom-views", type=int, default=zoom_views_default,
                        choices=sorted(ZOOM_VIEWS),
                        help="crops the zoom pass pools per image (network/zoom.py): 7 is the "
                        "most accurate, 1 the fastest (default %d)"
                        % zoom_views_default)
    parser.add_argument("--candidates", type=int, default=None, metavar="N",
                        help="peaks per keypoint the pose may choose from (peak_selection.py; "
                        "default 3 for our models, 0 for DREAM's; 0 = the highest peak only)")


def detector_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """KeypointDetector keyword arguments from the options above."""
    return dict(threshold=args.threshold, ambiguity=args.ambiguity,
                zoom=False if args.no_zoom else None, candidates=args.candidates,
                zoom_views=args.zoom_views)
