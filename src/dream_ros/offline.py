"""``python -m dream_ros calibrate``: camera-to-robot calibration from files, without ROS.

Input (one of): an NDDS folder (DREAM's or ours), an image folder (``color/`` + ``qpos/`` +
``K.txt``, the EasyHeC layout) or a ROS bag (image, camera_info and joint_states topics).
Every frame goes through the same pipeline as the ROS node (``Calibrator``: network detection ->
forward kinematics -> PnP -> plausibility gates); frames that pass are also accumulated into one
multi-frame estimate (the camera is assumed static, as in the node's static mode).

Output, in ``--out``:
- ``results.jsonl``: one JSON object per frame: frame, keypoints {name: [u, v] | null},
  camera_T_base (4x4, maps base points into the OpenCV optical frame; null when rejected),
  reprojection_error_px, status ("ok" or the reason), plus diagnostics;
- ``calibration.yaml``: the multi-frame calibration, in the node's format (``save_calibration``);
- ``overlays/<frame>.png``: detections (green), the frame's own estimate (magenta crosses) and the
  multi-frame estimate (cyan crosses);
- a printed summary (and ``summary.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

MULTIFRAME_RGB = (0, 255, 255)
MASK_SHEET_FRAMES = 20       # at most this many frames (spread over the input) on the mask sheet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .network.detector_options import add_detector_options
    from .network.zoom import ACCURATE_ZOOM_VIEWS
    src = parser.add_argument_group("input (exactly one)")
    g = src.add_mutually_exclusive_group(required=True)
    g.add_argument("--ndds", metavar="DIR", help="NDDS dataset folder (DREAM's format or ours)")
    g.add_argument("--images", metavar="DIR",
                   help="folder with color/NNNNNN.png, qpos/NNNNNN.txt (the robot's joints in "
                        "config order first) and K.txt")
    g.add_argument("--bag", metavar="BAG", help="ROS bag (read with the rosbags package)")
    src.add_argument("--K", metavar="FILE", help="intrinsics file for --images (default DIR/K.txt; "
                     "3x3 or fx fy cx cy); with --bag it overrides camera_info")
    src.add_argument("--image-topic", default="/camera/color/image_raw")
    src.add_argument("--camera-info-topic", default="/camera/color/camera_info")
    src.add_argument("--joint-states-topic", default="/joint_states")
    src.add_argument("--truth-topic", default=None, metavar="T",
                     help="bag: geometry_msgs/TransformStamped of the true camera pose (base -> "
                          "optical frame), e.g. /sim_camera/true_camera_pose, to score estimates")
    src.add_argument("--max-dt", type=float, default=0.05, metavar="S",
                     help="bag: largest image/joint-state stamp gap accepted (default 0.05 s)")
    src.add_argument("--ndds-scale", type=float, default=None, metavar="S",
                     help="NDDS: multiply 3D locations by S (0.01 for DREAM's synthetic sets in cm)")
    parser.add_argument("--model", default=None,
                        help="robot name (its shipped model), our model file, or a DREAM .pth with "
                             "its .yaml beside it (default: the robot's shipped model)")
    parser.add_argument("--robot", default=None,
                        help="robot name or config YAML (default: the model's robot, else panda)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--camera-frame", default=None,
                        help="optical frame name for the calibration file (default: the bag's "
                             "camera_info frame_id, else camera_optical_frame)")
    parser.add_argument("--overlays", type=int, default=10, metavar="N",
                        help="overlay PNGs for N frames spread over the input (0: none, -1: all)")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N frames")
    parser.add_argument("--device", default="auto", help="torch device (auto, cpu, cuda)")
    parser.add_argument("--max-reprojection-error", type=float, default=None, metavar="PX",
                        help="reject single-frame estimates above this RMS error (node default)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--mask-reference", action="store_true",
                        help="frames with robot masks (--images DIR/mask/): fit one camera pose to "
                             "the masks and score the detections and estimates against it "
                             "(evaluation/mask_reference.py; about two minutes for ten frames)")
    parser.add_argument("--mask-min-iou", type=float, default=0.8, metavar="IOU",
                        help="--mask-reference: frames whose mask the fitted pose overlaps less "
                             "than this are left out as inconsistent (default 0.8)")
    # a static camera, offline: accuracy over speed
    add_detector_options(parser, zoom_views_default=ACCURATE_ZOOM_VIEWS)


# --------------------------------------------------------------------------------------------
# results file
# --------------------------------------------------------------------------------------------
def _matrix(T) -> Optional[list]:
    return None if T is None else [[float(x) for x in row] for row in np.asarray(T, float)]


def _num(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else float(x)


def frame_record(name: str, detections, estimate, truth=None, extra: Optional[dict] = None) -> dict:
    """The per-frame results-file object (see module docstring)."""
    from .frames import pose_error
    rec = {
        "frame": name,
        "keypoints": detections.as_dict() if detections is not None else None,
        "camera_T_base": _matrix(estimate.camera_T_base) if estimate is not None and estimate.ok
        else None,
        "reprojection_error_px": _num(estimate.reprojection_error_px) if estimate is not None
        else None,
        "status": "ok" if estimate is not None and estimate.ok else None,
    }
    if estimate is not None and not estimate.ok:
        rec["status"] = ("%s: %s" % (estimate.status, estimate.reason)) if estimate.reason \
            else estimate.status
        rejected = estimate.extras.get("rejected_camera_T_base")
        if rejected is not None:
            rec["rejected_camera_T_base"] = _matrix(rejected)
    if detections is not None:
        rec["keypoints_detected"] = int(detections.num_detected)
    if estimate is not None:
        rec["inliers"] = int(estimate.num_inliers)
    if truth is not None and estimate is not None and estimate.ok:
        dt, dr = pose_error(estimate.camera_T_base, truth)
        rec["error_translation_m"], rec["error_rotation_deg"] = dt, dr
    if extra:
        rec.update(extra)
    return rec


class JsonLinesWriter:
    """Appends records to a temp file beside ``path``; ``close()`` renames it into place, so a
    reader never sees a half-written results file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=str(self.path.parent), prefix="." + self.path.name,
                                        suffix=".tmp")
        self.f = os.fdopen(fd, "w")

    def write(self, record: dict) -> None:
        self.f.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        _readable(self.tmp)
        os.replace(self.tmp, str(self.path))

    def abort(self) -> None:
        self.f.close()
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _readable(tmp: str) -> None:
    """mkstemp creates 0600 files; results are for sharing: 0644 minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o644 & ~umask)


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
    _readable(tmp)
    os.replace(tmp, str(path))


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("cannot encode %s" % path)
    fd, tmp = tempfile.mkstemp(dir=str(path.parent), prefix="." + path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(buf.tobytes())
    _readable(tmp)
    os.replace(tmp, str(path))


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------
def make_source(args, robot):
    from .data.sources import BagSource, ImageFolderSource, NddsSource, read_intrinsics
    if args.images:
        return ImageFolderSource(args.images, robot.joint_names, K_path=args.K)
    if args.bag:
        K = read_intrinsics(Path(args.K)) if args.K else None
        return BagSource(args.bag, args.image_topic, args.camera_info_topic,
                         args.joint_states_topic, robot.joint_names, max_dt=args.max_dt,
                         K_override=K, truth_topic=args.truth_topic)
    return NddsSource(args.ndds, robot, scale=args.ndds_scale)


def pose_summary(T) -> dict:
    """Camera position (m) and orientation (quaternion xyzw, rpy deg) in the base frame."""
    from scipy.spatial.transform import Rotation
    from .frames import invert, quaternion_xyzw
    B = invert(np.asarray(T, float))
    return {"position_m": [float(x) for x in B[:3, 3]],
            "quaternion_xyzw": [float(x) for x in quaternion_xyzw(B)],
            "rpy_deg": [float(x) for x in Rotation.from_matrix(B[:3, :3]).as_euler("xyz", degrees=True)]}


class OfflineCalibration:
    """Runs frames through a Calibrator (single-frame estimates) and a MultiFrameSolver fed with
    the accepted frames. Kept separate from the CLI so tests can drive it with any detector."""

    def __init__(self, robot, detector, gates: Optional[dict] = None,
                 solver_options: Optional[dict] = None):
        from .calibration import Calibrator
        self.robot = robot
        self.calibrator = Calibrator(robot, detector, mode="continuous", **(gates or {}))
        self.solver_options = dict(solver_options or {})
        self.solver = None
        self.solver_K = None
        self.skipped_other_K = 0
        self.truths: List[np.ndarray] = []
        self.solver_frame_names: List[str] = []   # by the solver's frame ids (order added)

    def process(self, frame):
        """(detections, single-frame estimate, points_3d in detection order) for one frame."""
        from .types import PoseEstimate
        from .errors import InputError
        if frame.problem:
            return None, PoseEstimate.failure("bad_input", frame.problem), None
        try:
            det, est = self.calibrator.process(frame.rgb, frame.joints, frame.K)
        except InputError as exc:
            return None, PoseEstimate.failure("bad_input", str(exc)), None
        pts = self.calibrator.keypoints_3d(frame.joints, det.names)
        if frame.camera_T_base_true is not None:
            self.truths.append(np.asarray(frame.camera_T_base_true, float))
        if est.ok:
            self._accumulate(pts, det, frame.K, frame.name)
        return det, est, pts

    def _accumulate(self, pts, det, K, name: str) -> None:
        from .multiframe import MultiFrameSolver
        K = np.asarray(K, float)
        if self.solver is None:
            self.solver = MultiFrameSolver(K, **self.solver_options)
            self.solver_K = K
        elif not np.allclose(K, self.solver_K):
            self.skipped_other_K += 1   # one calibration per camera: frames with other K are left out
            return
        ok = np.asarray(det.detected, bool) & np.all(np.isfinite(det.uv), axis=1)
        self.solver.add_frame(pts[ok], det.uv[ok])
        self.solver_frame_names.append(name)

    def multiframe_frames(self) -> List[str]:
        """Names of the frames the multi-frame estimate agrees with (its inlier frames)."""
        est = self.multiframe
        ids = [] if est is None or not est.ok else est.extras.get("used_frame_ids", [])
        return [self.solver_frame_names[i] for i in ids]

    @property
    def multiframe(self):
        return None if self.solver is None else self.solver.estimate

    def camera_moves(self, tol_m: float = 0.01, tol_deg: float = 1.0) -> bool:
        """True when the ground truth (if any) shows different camera poses across frames."""
        from .frames import pose_error
        errors = [pose_error(T, self.truths[0]) for T in self.truths[1:]]
        return any(dt > tol_m or dr > tol_deg for dt, dr in errors)


def _thumbnail(rgb, width: int = 320) -> Optional[np.ndarray]:
    import cv2
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)


class MaskScore:
    """Scores poses on frames that come with a robot mask (no ground-truth pose needed): the
    intersection over union between the mask and the robot rendered at the estimated pose, at
    the frame's joint angles. Masks are kept bit-packed until the multi-frame pose is known."""

    def __init__(self, robot):
        self.robot = robot
        self._renderers = {}
        self.frames = []       # (name, joints, K, packed mask, shape)

    def add(self, frame, thumbnail: bool = False) -> None:
        """thumbnail: also keep a small copy of the image (for the mask reference's sheet)."""
        self.frames.append((frame.name, frame.joints, np.asarray(frame.K, float),
                            np.packbits(frame.mask), frame.mask.shape,
                            _thumbnail(frame.rgb) if thumbnail else None))

    def _render_mask(self, joints, T, K, shape) -> np.ndarray:
        from .synth.render import RobotRenderer
        h, w = shape
        if (w, h) not in self._renderers:
            self._renderers[(w, h)] = RobotRenderer(self.robot.config, w, h)
        return self._renderers[(w, h)].render_silhouette(joints, T, K)

    @staticmethod
    def _unpack(packed, shape) -> np.ndarray:
        return np.unpackbits(packed)[:shape[0] * shape[1]].reshape(shape).astype(bool)

    def mask_frames(self) -> list:
        """The frames as ``evaluation.mask_reference.MaskFrame`` (masks unpacked)."""
        from .evaluation.mask_reference import MaskFrame
        return [MaskFrame(name, joints, K, self._unpack(packed, shape), thumb)
                for name, joints, K, packed, shape, thumb in self.frames]

    def iou(self, index: int, T) -> float:
        _, joints, K, packed, shape, _ = self.frames[index]
        mask = self._unpack(packed, shape)
        rendered = self._render_mask(joints, np.asarray(T, float), K, shape)
        union = np.count_nonzero(mask | rendered)
        return float(np.count_nonzero(mask & rendered) / union) if union else 0.0

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()


def _overlay(frame, det, est, pts, multi_T, K) -> np.ndarray:
    from .visualize import calibration_overlay, draw_reprojections
    lines = ["%s  %s" % (frame.name, "ok" if est.ok else est.status)]
    if est.ok:
        lines.append("single frame: %.1f px RMS, %d inliers" % (est.reprojection_error_px or
                                                                  float("nan"), est.num_inliers))
    else:
        lines.append(est.reason[:80])
    img = frame.rgb
    if multi_T is not None and pts is not None:
        img = draw_reprojections(img, pts, multi_T, K, color=MULTIFRAME_RGB)
        lines.append("cyan: multi-frame estimate, magenta: this frame's, green: detections")
    return calibration_overlay(img, detections=det, estimate=est if est.ok else None,
                               points_3d=pts, K=K, status=lines)


def _overlay_indices(n: int, count: int) -> set:
    if count < 0 or count >= n:
        return set(range(n))
    if count == 0 or n == 0:
        return set()
    return set(int(round(x)) for x in np.linspace(0, n - 1, count))


# --------------------------------------------------------------------------------------------
# the subcommand
# --------------------------------------------------------------------------------------------
def run(args) -> int:
    import torch
    from .network.detector import KeypointDetector
    from .network.detector_options import detector_kwargs
    from .network.model_file import load_model, robot_for_model
    from .robot import RobotModel

    torch.set_num_threads(max(1, int(args.threads)))
    model_ref = args.model or args.robot or "panda"
    net, model_config = load_model(model_ref)
    robot_ref = args.robot or getattr(model_config, "robot", None) or "panda"
    robot = robot_for_model(model_ref, model_config, RobotModel.load(robot_ref),
                            "pass the matching --model or --robot")
    detector = KeypointDetector((net, model_config), device=args.device, **detector_kwargs(args))
    gates = {}
    if args.max_reprojection_error is not None:
        gates["max_reprojection_error_px"] = float(args.max_reprojection_error)
    source = make_source(args, robot)
    summary = calibrate(source, robot, detector, Path(args.out), model_name=str(model_ref),
                        gates=gates, limit=args.limit, overlays=args.overlays,
                        camera_frame=args.camera_frame,
                        mask_reference=args.mask_min_iou if args.mask_reference else None)
    return 0 if summary["ok"] > 0 else 1


def calibrate(source, robot, detector, out: Path, model_name: str = "", gates: Optional[dict] = None,
              limit: int = 0, overlays: int = 10, camera_frame: Optional[str] = None,
              progress: bool = True, quiet: bool = False,
              mask_reference: Optional[float] = None) -> dict:
    """Run every frame of ``source`` and write the outputs to ``out``; returns the summary.

    mask_reference: a minimum IoU: fit a reference camera pose to the frames' masks and score
    the results against it (``summary["mask_reference"]``); None: no fit.
    """
    from tqdm import tqdm
    from .calibration import save_calibration
    from .errors import ConfigError
    from .frames import pose_error

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("cannot create output folder %s: %s" % (out, exc))
    for stale in (out / "overlays").glob("*.png"):   # from an earlier run into the same folder
        stale.unlink()
    offline = OfflineCalibration(robot, detector, gates=gates)
    total = len(source) if not limit else min(len(source), limit)
    want_overlay = _overlay_indices(total, overlays)
    # frames the mask reference's contact sheet shows (their thumbnails are kept until the end)
    want_sheet = _overlay_indices(total, MASK_SHEET_FRAMES) if mask_reference is not None else set()
    kept = []        # frames to draw overlays for once the multi-frame estimate is known
    statuses: Counter = Counter()
    records = []
    masks = None
    writer = JsonLinesWriter(out / "results.jsonl")
    try:
        for i, frame in enumerate(tqdm(source, total=total, desc="calibrate", unit="frame",
                                       file=sys.stderr, disable=not progress)):
            if i >= total:
                break
            det, est, pts = offline.process(frame)
            extra = {"stamp": frame.stamp} if frame.stamp is not None else None
            if frame.mask is not None and frame.joints is not None:
                masks = masks or MaskScore(robot)
                masks.add(frame, thumbnail=i in want_sheet)
                if est.ok:
                    extra = dict(extra or {}, mask_iou=masks.iou(-1, est.camera_T_base))
            rec = frame_record(frame.name, det, est, frame.camera_T_base_true, extra)
            writer.write(rec)
            records.append(rec)
            statuses["ok" if est.ok else est.status] += 1
            if i in want_overlay and frame.rgb is not None:
                kept.append((frame, det, est, pts))
        writer.close()
    except BaseException:
        writer.abort()
        raise

    multi = offline.multiframe
    summary = {"frames": len(records), "ok": statuses.get("ok", 0),
               "failures": {k: v for k, v in statuses.items() if k != "ok"},
               "model": model_name, "robot": robot.name, "results": str(out / "results.jsonl")}
    moving = offline.camera_moves()
    if multi is not None and multi.ok and not moving:
        frame_id = camera_frame or getattr(source, "camera_frame", "") or "camera_optical_frame"
        camera = None
        if offline.solver_K is not None:
            camera = {"K": [[float(x) for x in r] for r in offline.solver_K]}
        calib_path = save_calibration(out / "calibration.yaml", multi, robot.base_frame, frame_id,
                                      robot=robot.name, model=model_name, mode="offline",
                                      camera=camera)
        summary["multiframe"] = dict(pose_summary(multi.camera_T_base),
                                     camera_T_base=_matrix(multi.camera_T_base),
                                     frames_used=int(multi.frames_used),
                                     frames=offline.multiframe_frames(),
                                     converged=bool(multi.extras.get("converged", False)),
                                     reprojection_error_px=_num(multi.reprojection_error_px),
                                     spread_translation_m=_num(multi.extras.get("spread_translation_m")),
                                     spread_rotation_deg=_num(multi.extras.get("spread_rotation_deg")),
                                     calibration=str(calib_path))
        if offline.truths:
            dt, dr = pose_error(multi.camera_T_base, offline.truths[0])
            summary["multiframe"].update(error_translation_m=dt, error_rotation_deg=dr)
        # How far each accepted frame's own estimate is from the joint one (consistency).
        dev = [pose_error(np.asarray(r["camera_T_base"]), multi.camera_T_base) for r in records
               if r["camera_T_base"] is not None]
        if dev:
            d = np.asarray(dev)
            summary["single_vs_multiframe"] = {
                "median_translation_m": float(np.median(d[:, 0])), "max_translation_m": float(d[:, 0].max()),
                "median_rotation_deg": float(np.median(d[:, 1])), "max_rotation_deg": float(d[:, 1].max())}
    elif moving:
        summary["multiframe"] = "skipped: the ground truth shows the camera moving between frames"
    else:
        summary["multiframe"] = ("none: %s" % multi.reason) if multi is not None else \
            "none: no frame was accepted"
    if masks is None and mask_reference is not None:
        summary["mask_reference"] = {"error": "no frame has a robot mask (--images DIR/mask/"
                                              "NNNNNN.png): nothing to fit"}
    if masks is not None:
        single = [r["mask_iou"] for r in records if r.get("mask_iou") is not None]
        summary["mask_iou"] = {"frames_with_mask": len(masks.frames),
                               "single_frame_median": float(np.median(single)) if single else None}
        if isinstance(summary["multiframe"], dict):
            ious = {f[0]: masks.iou(i, multi.camera_T_base) for i, f in enumerate(masks.frames)}
            summary["mask_iou"]["multiframe_median"] = float(np.median(list(ious.values())))
            summary["mask_iou"]["multiframe_per_frame"] = ious
        if mask_reference is not None:
            summary["mask_reference"] = _score_against_masks(
                masks, robot, records, multi if isinstance(summary["multiframe"], dict) else None,
                mask_reference, out / "mask_reference.png")
        masks.close()
    errs = [(r["error_translation_m"], r["error_rotation_deg"]) for r in records
            if "error_translation_m" in r]
    if errs:
        e = np.asarray(errs)
        summary["single_frame_error_vs_truth"] = {
            "median_translation_m": float(np.median(e[:, 0])),
            "median_rotation_deg": float(np.median(e[:, 1]))}

    if kept:
        overlay_dir = out / "overlays"
        overlay_dir.mkdir(exist_ok=True)
        multi_T = multi.camera_T_base if (multi is not None and multi.ok and not moving) else None
        for frame, det, est, pts in kept:
            _write_png(overlay_dir / ("%s.png" % frame.name),
                       _overlay(frame, det, est, pts, multi_T, frame.K))
        summary["overlays"] = str(overlay_dir)
    _write_json(out / "summary.json", summary)
    if not quiet:
        print_summary(records, summary)
    return summary


def _score_against_masks(masks: "MaskScore", robot, records: List[dict], multi,
                         min_iou: float, sheet_path: Path) -> dict:
    """Fit the mask reference pose (evaluation/mask_reference.py) and score the detections and
    the single- and multi-frame estimates of the frames it fits against it; draw the fit."""
    from .evaluation.mask_reference import contact_sheet, fit_reference, keypoint_errors
    from .frames import pose_error
    frames = masks.mask_frames()
    starts = [np.asarray(r["camera_T_base"]) for r in records if r["camera_T_base"] is not None]
    if multi is not None:
        starts.append(multi.camera_T_base)
    if not starts:
        return {"error": "no frame was calibrated: no start pose for the fit"}
    ref = fit_reference(robot.config, frames, starts, min_iou=min_iou)
    shown = [f for f in frames if f.thumbnail is not None] or frames[:MASK_SHEET_FRAMES]
    _write_png(sheet_path, contact_sheet(ref, shown, robot.config))
    out = dict(pose_summary(ref.camera_T_base), camera_T_base=_matrix(ref.camera_T_base),
               min_iou=ref.min_iou, iou_per_frame=ref.iou, consistent_frames=ref.consistent,
               mean_iou_consistent=ref.mean_iou, contact_sheet=str(sheet_path))
    consistent = set(ref.consistent)
    single = {r["frame"]: pose_error(np.asarray(r["camera_T_base"]), ref.camera_T_base)
              for r in records if r["camera_T_base"] is not None and r["frame"] in consistent}
    out["single_frame_error"] = {k: [float(dt), float(dr)] for k, (dt, dr) in single.items()}
    if single:
        e = np.asarray(list(single.values()))
        out["single_frame_error_median"] = [float(np.median(e[:, 0])), float(np.median(e[:, 1]))]
    if multi is not None:
        out["multiframe_error"] = [float(x) for x in pose_error(multi.camera_T_base,
                                                                 ref.camera_T_base)]
    px = keypoint_errors(ref, frames, robot, {r["frame"]: r["keypoints"] or {} for r in records})
    out["keypoint_error_px"] = px
    wanted = len(consistent) * len(robot.keypoint_names)
    found = [e for per in px.values() for e in per.values()]
    out["keypoints_detected"] = [len(found), wanted]
    if found:
        out["keypoint_error_median_px"] = float(np.median(found))
        out["keypoint_error_median_px_per_keypoint"] = {
            k: float(np.median(v)) for k in robot.keypoint_names
            for v in [[per[k] for per in px.values() if k in per]] if v}
    return out


def _print_mask_reference(ref: dict) -> None:
    if "error" in ref:
        print("mask reference: %s" % ref["error"])
        return
    print("mask reference pose (fitted to %d of %d frames' masks at IoU >= %.2f, mean %.3f): "
          "camera at %s m, rpy %s deg" % (
              len(ref["consistent_frames"]), len(ref["iou_per_frame"]), ref["min_iou"],
              ref["mean_iou_consistent"], " ".join("%+.4f" % v for v in ref["position_m"]),
              " ".join("%+.2f" % v for v in ref["rpy_deg"])))
    print("  mask IoU at it: %s" % "  ".join("%s %.3f%s" % (k, v, "" if k in ref["consistent_frames"]
                                                            else " (left out)")
                                             for k, v in ref["iou_per_frame"].items()))
    if "single_frame_error_median" in ref:
        print("  single-frame estimates of those frames vs it: median %.1f mm, %.2f deg (%d frames)"
              % (1000 * ref["single_frame_error_median"][0], ref["single_frame_error_median"][1],
                 len(ref["single_frame_error"])))
    if "multiframe_error" in ref:
        print("  multi-frame estimate vs it: %.1f mm, %.2f deg"
              % (1000 * ref["multiframe_error"][0], ref["multiframe_error"][1]))
    n, wanted = ref["keypoints_detected"]
    if n:
        print("  keypoints detected on those frames: %d of %d; distance from their projection at "
              "the reference: median %.1f px (%s)" % (
                  n, wanted, ref["keypoint_error_median_px"],
                  ", ".join("%s %.1f" % kv for kv in
                            ref["keypoint_error_median_px_per_keypoint"].items())))
    print("  masks (red), robot rendered at the reference (blue), both (green): %s"
          % ref["contact_sheet"])


def print_summary(records: List[dict], summary: dict) -> None:
    from .frames import invert
    print("\n%-12s %-18s %3s %6s  %-23s %s" % ("frame", "status", "kp", "rms px",
                                              "camera xyz in base (m)", "error vs truth / mask IoU"))
    for r in records:
        pos = ""
        if r["camera_T_base"] is not None:
            pos = " ".join("%+.3f" % v for v in invert(np.asarray(r["camera_T_base"]))[:3, 3])
        err = ""
        if "error_translation_m" in r:
            err = "%.1f mm %.2f deg" % (1000 * r["error_translation_m"], r["error_rotation_deg"])
        elif r.get("mask_iou") is not None:
            err = "mask IoU %.3f" % r["mask_iou"]
        rms = r["reprojection_error_px"]
        print("%-12s %-18s %3s %6s  %-23s %s" % (
            r["frame"][:12], "ok" if r["status"] == "ok" else r["status"].split(":")[0][:18],
            r.get("keypoints_detected", "-"), "-" if rms is None else "%.1f" % rms, pos, err))
    print("\n%d frames, %d accepted%s" % (summary["frames"], summary["ok"],
                                          "" if not summary["failures"] else ", rejected: " +
                                          ", ".join("%s %d" % kv for kv in summary["failures"].items())))
    m = summary["multiframe"]
    if isinstance(m, dict):
        names = m.get("frames") or []
        print("multi-frame estimate (%d frames%s, %s): camera at %s m, rpy %s deg, %.2f px RMS"
              % (m["frames_used"], (": " + " ".join(names)) if 0 < len(names) <= 12 else "",
                 "converged" if m["converged"] else "not converged",
                 " ".join("%+.4f" % v for v in m["position_m"]),
                 " ".join("%+.2f" % v for v in m["rpy_deg"]), m["reprojection_error_px"] or float("nan")))
        if m["frames_used"] < 0.5 * summary["ok"]:
            print("warning: only %d of the %d accepted frames agree with one camera pose; the "
                  "others' joint angles may not match their images (joint states out of sync "
                  "with the camera, or the camera moved): check the overlays"
                  % (m["frames_used"], summary["ok"]))
        if "error_translation_m" in m:
            print("multi-frame error vs truth: %.1f mm, %.2f deg"
                  % (1000 * m["error_translation_m"], m["error_rotation_deg"]))
        s = summary.get("single_vs_multiframe")
        if s:
            print("single-frame estimates vs multi-frame: median %.1f mm / %.2f deg, max %.1f mm / "
                  "%.2f deg" % (1000 * s["median_translation_m"], s["median_rotation_deg"],
                                1000 * s["max_translation_m"], s["max_rotation_deg"]))
        print("calibration: %s" % m["calibration"])
    else:
        print("multi-frame estimate: %s" % m)
    if "single_frame_error_vs_truth" in summary:
        e = summary["single_frame_error_vs_truth"]
        print("single-frame error vs truth: median %.1f mm, %.2f deg"
              % (1000 * e["median_translation_m"], e["median_rotation_deg"]))
    if "mask_iou" in summary:
        m = summary["mask_iou"]
        print("robot mask IoU (rendered at the estimate vs. the given masks, %d frames): single-frame "
              "median %s, multi-frame median %s" % (
                  m["frames_with_mask"], "-" if m["single_frame_median"] is None
                  else "%.3f" % m["single_frame_median"],
                  "%.3f" % m["multiframe_median"] if "multiframe_median" in m else "-"))
    if "mask_reference" in summary:
        _print_mask_reference(summary["mask_reference"])
    print("results: %s" % summary["results"])
    if "overlays" in summary:
        print("overlays: %s" % summary["overlays"])
