"""``python -m dream_ros eval``: a model (or the dataset's own labels) on an NDDS dataset, scored
with DREAM's metrics. Writes per-frame results, a summary, a per-keypoint table, plots, overlays and
DREAM-style CSVs into --out; the last printed line is the summary JSON."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import List

SUMMARY_KEYS = ("frames", "pck_auc", "add_auc", "add_mean_m", "add_median_m",
                "detected_fraction", "fps")


def add_arguments(p) -> None:
    from ..network.detector_options import add_detector_options
    p.add_argument("--model", help="robot name (its shipped model), our model file, or a DREAM .pth "
                   "(with its .yaml beside it); not needed with --oracle-keypoints")
    p.add_argument("--data", required=True, help="NDDS dataset folder (DREAM's or ours)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--oracle-keypoints", action="store_true",
                   help="use the dataset's 2D labels instead of a network: measures PnP alone")
    p.add_argument("--noise-px", type=float, default=0.0,
                   help="with --oracle-keypoints: Gaussian noise per coordinate, pixels")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames")
    p.add_argument("--units", choices=("auto", "m", "cm"), default="auto",
                   help="units of the dataset's 3D keypoints (DREAM's synthetic sets are in cm); "
                   "auto compares them with forward kinematics (default)")
    p.add_argument("--robot", default=None,
                   help="robot config (default: the model's robot, else panda)")
    p.add_argument("--no-robust", action="store_true",
                   help="plain EPnP + refinement on all detections, as DREAM does (default: RANSAC)")
    p.add_argument("--overlays", type=int, default=4, help="overlay PNGs to write (default 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed for --noise-px")
    p.add_argument("--device", default="auto", help="network device (auto, cpu, cuda)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx", "onnx-int8"),
                   help="network backend (auto, as the node: for our nets on the CPU ONNX Runtime, "
                   "with the model's int8 network when it has one)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    add_detector_options(p)


def _load_detector(args):
    from ..network.detector import KeypointDetector
    from ..network.detector_options import detector_kwargs
    det = KeypointDetector(args.model, device=args.device, backend=args.backend,
                           num_threads=max(1, int(args.threads)), **detector_kwargs(args))
    return det, det.config


def _fmt(v, spec="%.4f"):
    return "-" if v is None else (spec % v if isinstance(v, float) else str(v))


def _print_table(rows: List[dict], out) -> None:
    cols = [("keypoint", "%s", 14), ("in_frame", "%d", 9), ("found", "%d", 7),
            ("found_fraction", "%.3f", 9), ("pck_auc", "%.4f", 8), ("mean_px", "%.2f", 8),
            ("median_px", "%.2f", 9), ("p95_px", "%.2f", 8)]
    heads = {"found_fraction": "found%", "median_px": "median_px"}
    print("  ".join(heads.get(c, c).rjust(w) if c != "keypoint" else c.ljust(w)
                    for c, _, w in cols), file=out)
    for r in rows:
        cells = []
        for c, spec, w in cols:
            v = r.get(c)
            s = "-" if v is None else spec % v
            cells.append(s.ljust(w) if c == "keypoint" else s.rjust(w))
        print("  ".join(cells), file=out)


def run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from ..errors import InputError
    from ..network.model_file import robot_for_model
    from ..robot import RobotModel
    from . import metrics, plots, results
    from .dataset import load_eval_frames
    from .runner import (DetectorKeypoints, OracleKeypoints, evaluate_frames, metric_keypoints,
                         resolve_units)

    if not args.oracle_keypoints and not args.model:
        raise InputError("give --model, or --oracle-keypoints to evaluate PnP on the labels")
    if args.noise_px and not args.oracle_keypoints:
        raise InputError("--noise-px only applies with --oracle-keypoints")
    if args.limit is not None and args.limit <= 0:
        raise InputError("--limit must be positive, got %d" % args.limit)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    detector = model_config = None
    if not args.oracle_keypoints:
        detector, model_config = _load_detector(args)
    robot_name = args.robot or getattr(model_config, "robot", None) or "panda"
    robot = RobotModel.load(robot_name)
    if model_config is not None:
        robot = robot_for_model(args.model, model_config, robot, "pass the matching --robot")
    names = list(robot.keypoint_names)
    metric_names = metric_keypoints(robot)
    metric_index = [names.index(n) for n in metric_names]

    ds = load_eval_frames(args.data, names, robot_name=robot.name, limit=args.limit,
                          derive_with=robot)
    frames, K, image_size = ds.frames, ds.K, ds.image_size
    if not frames:
        raise InputError("no frames in %s" % args.data)
    units = resolve_units(args.units, frames, robot)
    if args.oracle_keypoints:
        source = OracleKeypoints(image_size, args.noise_px, args.seed)
        mode = "oracle keypoints (noise %.3g px)" % args.noise_px
    else:
        source = DetectorKeypoints(detector, names)
        mode = "model %s" % args.model
    print("eval: %s on %s: %d frames, %dx%d, robot %s, 3D units %s%s"
          % (mode, args.data, len(frames), image_size[0], image_size[1], robot.name, units,
             " (auto)" if args.units == "auto" else ""), file=sys.stderr)

    bar = lambda it: tqdm(it, total=len(frames), desc="eval", unit="frame", file=sys.stderr)
    wall0 = time.perf_counter()
    res = evaluate_frames(frames, source, robot, K, image_size, units, robust=not args.no_robust,
                          progress=bar, metric_index=metric_index)
    wall = time.perf_counter() - wall0

    # ---------------------------------------------------------------- metrics
    uv_pred = np.stack([r.uv_pred for r in res])
    uv_gt = np.stack([r.truth.uv for r in res])
    km = metrics.keypoint_pck(uv_pred[:, metric_index], uv_gt[:, metric_index], image_size)
    km_all = metrics.keypoint_pck(uv_pred, uv_gt, image_size)
    add = np.array([r.add_m for r in res])
    viable = np.array([r.viable for r in res])
    am = metrics.add_metrics(add, viable)
    table = metrics.per_keypoint_table(names, uv_pred, uv_gt, image_size)
    distance = [float(np.linalg.norm(r.truth.points_camera.mean(axis=0))) for r in res]
    by_distance = metrics.by_camera_distance(distance, uv_pred[:, metric_index],
                                             uv_gt[:, metric_index], add, viable, image_size)
    proc_time = float(sum(r.times_s["total"] for r in res))
    pose_errs = [r.pose_error for r in res if r.pose_error is not None]
    fk_res = [r.truth.fk_residual_m for r in res if r.truth.fk_residual_m is not None]
    statuses = {}
    for r in res:
        statuses[r.estimate.status] = statuses.get(r.estimate.status, 0) + 1

    headline = {
        "frames": len(res), "pck_auc": km.auc, "add_auc": am.auc, "add_mean_m": am.mean_m,
        "add_median_m": am.median_m, "detected_fraction": km.found_fraction,
        "fps": len(res) / proc_time if proc_time > 0 else None,
    }
    summary = dict(headline)
    summary.update({
        "mode": "oracle" if args.oracle_keypoints else "model",
        "model": args.model, "noise_px": args.noise_px if args.oracle_keypoints else None,
        "data": str(Path(args.data).resolve()), "robot": robot.name, "units": units,
        "image_size": list(image_size), "robust_pnp": not args.no_robust,
        "metric_keypoints": metric_names, "pck_auc_all_keypoints": km_all.auc,
        "keypoints": km.summary(), "add": am.summary(), "pnp_status_counts": statuses,
        "pnp_points": {"fk_base_frame": sum(r.truth.pnp_frame == "base" for r in res),
                       "dataset_camera_frame": sum(r.truth.pnp_frame == "camera" for r in res)},
        "fk_vs_dataset_rms_m": {"median": float(np.median(fk_res)) if fk_res else None,
                                "max": float(np.max(fk_res)) if fk_res else None},
        "camera_pose_error": {
            "frames": len(pose_errs),
            "translation_median_m": float(np.median([e[0] for e in pose_errs])) if pose_errs else None,
            "rotation_median_deg": float(np.median([e[1] for e in pose_errs])) if pose_errs else None,
        },
        "timing_median_ms": {k: 1000.0 * float(np.median([r.times_s[k] for r in res]))
                             for k in res[0].times_s},
        "wall_s": wall,
        "per_keypoint": table,
        "by_camera_distance": by_distance,
        "command": " ".join(sys.argv),
    })

    # ---------------------------------------------------------------- files
    with results.ResultsWriter(out_dir / "results.jsonl") as w:
        for r in res:
            w.write(results.frame_record(r, names))
    results.write_json(out_dir / "summary.json", summary)
    results.write_table_csv(out_dir / "per_keypoint.csv", table)
    results.write_table_csv(out_dir / "by_distance.csv", by_distance)
    frame_names = [r.name for r in res]
    results.write_dream_keypoints_csv(out_dir / "keypoints.csv", frame_names, uv_pred, uv_gt)
    results.write_dream_pnp_csv(out_dir / "pnp_results.csv", frame_names,
                                [r.correction_T for r in res], add,
                                [r.n_inframe_strict for r in res])
    plots.plot_pck(km, out_dir / "pck.png")
    plots.plot_add(am, out_dir / "add.png")
    err = np.linalg.norm(uv_pred - uv_gt, axis=-1)[metrics.in_frame_mask(uv_gt, image_size)]
    plots.plot_error_histograms(err, add, out_dir / "error_histograms.png")
    plots.plot_by_distance(by_distance, out_dir / "by_distance.png")
    overlay_paths = _write_overlays(res, names, out_dir, args.overlays)

    _print_report(table, km, am, summary, out_dir, len(overlay_paths), sys.stdout)
    if len(metric_names) < len(names):
        print("metrics over %s's %d keypoints (%s); PCK AUC over all %d keypoints %s"
              % (robot.config.dream_name, len(metric_names), ", ".join(metric_names), len(names),
                 _fmt(km_all.auc)))
    print(json.dumps(results._clean({k: headline[k] for k in SUMMARY_KEYS})))
    return 0


def _print_report(table, km, am, summary: dict, out_dir: Path, n_overlays: int, out) -> None:
    """The readable part of the output: per-keypoint table, then one line per figure."""
    from .metrics import ADD_MAX_M, distance_bin_label
    print("", file=out)
    _print_table(table, out)
    print("", file=out)
    print("keypoints : PCK AUC %s  (%d/%d in-frame keypoints found, mean %s px, median %s px)"
          % (_fmt(km.auc), km.num_found_in_frame, km.num_gt_in_frame, _fmt(km.mean_px, "%.2f"),
             _fmt(km.median_px, "%.2f")), file=out)
    print("ADD       : AUC %s  (%d of %d frames found a pose, %d of those over %d mm off; %d of "
          "the %d viable frames failed; mean %s mm, median %s mm)"
          % (_fmt(am.auc), am.num_found, am.num_frames, am.num_found_beyond_max,
             round(ADD_MAX_M * 1000), am.num_failed_viable, am.num_viable,
             _fmt(None if am.mean_m is None else am.mean_m * 1000, "%.1f"),
             _fmt(None if am.median_m is None else am.median_m * 1000, "%.1f")), file=out)
    ce = summary["camera_pose_error"]
    if ce["frames"]:
        print("camera    : median error %.1f mm, %.2f deg over %d frames"
              % (ce["translation_median_m"] * 1000, ce["rotation_median_deg"], ce["frames"]), file=out)
    for row in summary["by_camera_distance"]:
        print("distance  : %-9s %3d frames, PCK AUC %s (median %s px), ADD AUC %s (%d of %d viable "
              "failed, %d over %d mm)"
              % (distance_bin_label(row), row["frames"], _fmt(row["pck_auc"]),
                 _fmt(row["median_px"], "%.2f"),
                 _fmt(row["add_auc"]), row["failed_viable"], row["viable"], row["beyond_max"],
                 round(ADD_MAX_M * 1000)), file=out)
    counts = sorted(summary["pnp_status_counts"].items())
    print("PnP       : %s" % ", ".join("%s %d" % kv for kv in counts), file=out)
    fk_med = summary["fk_vs_dataset_rms_m"]["median"]
    if fk_med is not None and fk_med > 0.005:
        print("warning   : forward kinematics and the dataset's 3D keypoints differ by %.1f mm RMS "
              "(median frame): ADD then includes that disagreement; check --units and the robot "
              "config's keypoint links" % (fk_med * 1000), file=out)
    print("speed     : %s frames/s processing (decode+keypoints+FK+PnP), medians %s"
          % (_fmt(summary["fps"], "%.1f"),
             ", ".join("%s %.1f ms" % kv for kv in summary["timing_median_ms"].items())), file=out)
    print("written   : %s (results.jsonl, summary.json, per_keypoint.csv, keypoints.csv, "
          "pnp_results.csv, by_distance.csv, pck.png, add.png, error_histograms.png, by_distance.png, "
          "%d overlays)"
          % (out_dir, n_overlays), file=out)


def _write_overlays(res, names, out_dir: Path, n: int) -> List[str]:
    """Overlays of telling frames: best, median and worst ADD, and the first failure."""
    import numpy as np
    from . import plots
    from .runner import load_rgb
    if n <= 0:
        return []
    picks = []
    found = [i for i, r in enumerate(res) if np.isfinite(r.add_m)]
    found.sort(key=lambda i: res[i].add_m)
    failed = [i for i, r in enumerate(res) if not np.isfinite(r.add_m)]
    for label, idx in (("best", found[:1]), ("median", found[len(found) // 2:len(found) // 2 + 1]),
                       ("worst", found[-1:]), ("failed", failed[:1])):
        for i in idx:
            if all(i != j for _, j in picks):
                picks.append((label, i))
    rest = [i for i in range(len(res)) if all(i != j for _, j in picks)]
    picks += [("frame", i) for i in rest[: max(0, n - len(picks))]]
    written = []
    for label, i in picks[:n]:
        r = res[i]
        if not r.image_path or not os.path.exists(r.image_path):
            continue
        rgb = load_rgb(r.image_path)
        lines = ["%s  %s" % (r.name, r.estimate.status),
                 "ADD %s mm, %d/%d detected" % (_fmt(r.add_m * 1000 if np.isfinite(r.add_m) else None,
                                                     "%.1f"), int(np.count_nonzero(r.detected)),
                                                len(names))]
        img = plots.overlay(rgb, names, r.uv_pred, r.truth.uv,
                            r.estimate if r.estimate.ok else None, r.truth.pnp_points, r.K, lines)
        path = out_dir / ("overlay_%s_%s.png" % (label, r.name))
        plots.save_rgb_png(path, img)
        written.append(str(path))
    return written
