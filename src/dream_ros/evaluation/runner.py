"""The evaluation loop: per frame, keypoints (network or oracle) -> 3D keypoints (FK, else the
dataset's) -> PnP -> DREAM's per-frame quantities. Reporting lives in ``evaluation.cli``."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError
from ..types import PoseEstimate
from . import metrics
from .ground_truth import FrameTruth, frame_truth, guess_units


@dataclass
class EvalFrame:
    """One dataset frame, as the evaluation needs it (3D points in dataset units)."""

    name: str
    image_path: Optional[str]
    uv_gt: np.ndarray                       # (K, 2) raw pixels, robot keypoint order
    points_camera: np.ndarray               # (K, 3) camera optical frame, dataset units
    joints: Optional[Dict[str, float]]      # None when the frame has no joint angles
    K: Optional[np.ndarray] = None          # the frame's own intrinsics, else the dataset's


@dataclass
class FrameResult:
    name: str
    image_path: Optional[str]
    uv_pred: np.ndarray                     # (K, 2), NaN = not detected
    scores: Optional[np.ndarray]
    truth: FrameTruth
    estimate: PoseEstimate
    add_m: float                            # NaN when PnP failed
    viable: bool
    n_inframe_strict: int
    K: Optional[np.ndarray] = None
    times_s: Dict[str, float] = field(default_factory=dict)

    @property
    def detected(self) -> np.ndarray:
        return np.all(np.isfinite(self.uv_pred), axis=1)

    @property
    def pose_error(self) -> Optional[Tuple[float, float]]:
        """(translation m, rotation deg) of the camera against the GT pose (FK frames only)."""
        from ..frames import pose_error
        if not self.estimate.ok or self.truth.camera_T_base is None or self.truth.pnp_frame != "base":
            return None
        return pose_error(self.estimate.camera_T_base, self.truth.camera_T_base)

    @property
    def correction_T(self) -> Optional[np.ndarray]:
        """DREAM's PnP pose: GT camera-frame keypoints -> estimated ones (identity when perfect)."""
        if not self.estimate.ok:
            return None
        if self.truth.pnp_frame == "camera":
            return self.estimate.camera_T_base
        from ..frames import invert
        return self.estimate.camera_T_base @ invert(self.truth.camera_T_base)


class OracleKeypoints(object):
    """The dataset's 2D labels as detections (stage 2 alone): keypoints in the image (DREAM's
    inclusive test) with optional Gaussian noise of ``noise_px`` per coordinate; others missing."""

    needs_image = False

    def __init__(self, image_size: Tuple[int, int], noise_px: float = 0.0, seed: int = 0):
        if not noise_px >= 0:
            raise InputError("--noise-px must be >= 0, got %r" % (noise_px,))
        self.image_size = image_size
        self.noise_px = float(noise_px)
        self.rng = np.random.default_rng(seed)

    def __call__(self, frame: EvalFrame, rgb) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        uv = np.array(frame.uv_gt, dtype=float)
        if self.noise_px > 0:
            uv = uv + self.rng.normal(0.0, self.noise_px, uv.shape)
        uv[~metrics.in_frame_mask(frame.uv_gt, self.image_size)] = np.nan
        return uv, None


class DetectorKeypoints(object):
    """A ``KeypointDetector``'s output, reordered to the robot's keypoint names."""

    needs_image = True

    def __init__(self, detector, keypoint_names: Sequence[str]):
        self.detector = detector
        self.names = list(keypoint_names)
        self._order = None

    def __call__(self, frame: EvalFrame, rgb) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        det = self.detector.detect(rgb)
        if self._order is None:
            missing = [n for n in self.names if n not in det.names]
            if missing:
                raise ConfigError("the model has no keypoint named %s (it has %s)"
                                  % (", ".join(missing), ", ".join(det.names)))
            self._order = [list(det.names).index(n) for n in self.names]
        uv = np.array(det.uv, dtype=float)[self._order]
        uv[~np.asarray(det.detected, bool)[self._order]] = np.nan
        cands = None if det.candidates is None else [det.candidates[i] for i in self._order]
        sigma = None if det.sigma_px is None else np.asarray(det.sigma_px)[self._order]
        return uv, np.asarray(det.scores, float)[self._order], cands, sigma


def load_rgb(path: str) -> np.ndarray:
    import cv2
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError("cannot read image %s" % path)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fk_points(robot, joints: Optional[Dict[str, float]]) -> Optional[np.ndarray]:
    """FK keypoints in the base frame, or None when the frame lacks the robot's joints."""
    if not joints or robot is None:
        return None
    if any(n not in joints for n in robot.joint_names):
        return None
    return robot.keypoints_3d(dict(joints))


def metric_keypoints(robot) -> List[str]:
    """The keypoints PCK and ADD are taken over: DREAM's for a config that adds keypoints to
    DREAM's robot (panda_extended: the 7 of panda, its ``dream_name``), so models with more
    keypoints score on the same points as DREAM's; else all of the robot's."""
    from ..robot_config import available_robots, load_robot_config
    names = list(robot.keypoint_names)
    base = robot.config.dream_name
    if base and base != robot.config.name and base in available_robots():
        dream = load_robot_config(base).keypoint_names
        if set(dream) < set(names):
            return [n for n in names if n in dream]
    return names


def resolve_units(units: str, frames: Sequence[EvalFrame], robot) -> str:
    """"m"/"cm" as given, or guessed from the first frames for "auto"."""
    if units in ("m", "cm"):
        return units
    if units != "auto":
        raise InputError("units must be auto, m or cm, got %r" % (units,))
    votes = []
    for fr in frames[:5]:
        votes.append(guess_units(fr.points_camera, fk_points(robot, fr.joints)))
    return "cm" if votes and votes.count("cm") > len(votes) / 2 else "m"


def evaluate_frames(frames: Iterable[EvalFrame], keypoints: Callable, robot, K: np.ndarray,
                    image_size: Tuple[int, int], units: str, robust: bool = True,
                    progress: Optional[Callable] = None,
                    metric_index: Optional[Sequence[int]] = None) -> List[FrameResult]:
    """Run the pipeline on every frame; ``keypoints(frame, rgb) -> (uv (K,2) NaN=missing, scores
    [, candidate peaks per keypoint [, per-keypoint sigma px]])``; with candidates the pose
    chooses among them as in the node (peak_selection.py), with sigmas it weighs them.
    ``metric_index``: the keypoints ADD and viability are taken over (default all); the pose
    uses every keypoint either way."""
    from ..peak_selection import solve_choosing_peaks
    from ..pnp import solve_pnp
    from ..visualize import project
    out: List[FrameResult] = []
    metric_mask = None
    if metric_index is not None:
        metric_mask = np.zeros(len(robot.keypoint_names), bool)
        metric_mask[list(metric_index)] = True
    it = progress(frames) if progress is not None else frames
    for fr in it:
        times = {}
        t0 = time.perf_counter()
        rgb = None
        if getattr(keypoints, "needs_image", True):
            if not fr.image_path:
                raise InputError("frame %s has no image" % fr.name)
            rgb = load_rgb(fr.image_path)
        t1 = time.perf_counter()
        got = keypoints(fr, rgb)
        uv, scores = got[0], got[1]
        cands, sigma = (tuple(got[2:]) + (None, None))[:2]
        t2 = time.perf_counter()
        pb = fk_points(robot, fr.joints)
        t3 = time.perf_counter()
        truth = frame_truth(fr.uv_gt, fr.points_camera, units, pb)
        t4 = time.perf_counter()
        K_frame = fr.K if fr.K is not None else K
        uv, est = solve_choosing_peaks(
            truth.pnp_points, uv, cands,
            lambda u: solve_pnp(truth.pnp_points, u, K_frame, robust=robust, point_sigma_px=sigma),
            lambda p, T: project(p, T, K_frame))
        t5 = time.perf_counter()
        times.update(decode=t1 - t0, keypoints=t2 - t1, fk=t3 - t2, pnp=t5 - t4)
        times["total"] = times["decode"] + times["keypoints"] + times["fk"] + times["pnp"]
        detected = np.all(np.isfinite(uv), axis=1)
        counted = np.ones(len(detected), bool) if metric_mask is None else metric_mask
        add = metrics.add_error(est.camera_T_base if est.ok else None, truth.pnp_points,
                                truth.points_camera, used=detected & counted)
        n_strict = int(np.count_nonzero(
            metrics.in_frame_mask(truth.uv, image_size, strict=True) & counted))
        out.append(FrameResult(fr.name, fr.image_path, uv, scores, truth, est, add,
                               n_strict >= metrics.MIN_VIABLE_KEYPOINTS, n_strict, K_frame, times))
    return out
