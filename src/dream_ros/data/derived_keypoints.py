"""Labels for keypoints a dataset frame does not carry, from what it does record.

A frame rendered for one robot config (``panda``: DREAM's 7 keypoints) records the joint state,
the base pose in the camera and the intrinsics. The keypoints of another config of the same robot
(``panda_extended``: 4 more along the arm) follow from forward kinematics, so one rendered
dataset trains and evaluates both without rendering again. Each derivation is checked against
the keypoints the frame does carry, so a frame whose pose or joints mean something else (other
units, another robot) is refused instead of giving wrong labels.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

# recorded keypoints must match their forward kinematics this closely (metres): synth's labels
# agree to ~1e-12, DREAM's centimetre-scale files would be off by a factor of 100
MAX_RECORDED_MISMATCH_M = 1e-3


def frame_state(data: Mapping, obj: Mapping, units_scale: float = 1.0
                ) -> Tuple[Dict[str, float], Optional[np.ndarray], Optional[np.ndarray]]:
    """(joint positions by name, camera_T_base 4x4 or None, K 3x3 or None) of one NDDS frame's
    JSON ``data`` and its robot object ``obj``; the base location is scaled to metres."""
    joints = {}
    for j in (data.get("sim_state") or {}).get("joints", []) or []:
        if "name" in j and "position" in j:
            joints[str(j["name"])] = float(j["position"])
    camera_T_base = None
    if "location" in obj and "quaternion_xyzw" in obj:
        from ..frames import from_translation_quaternion
        try:
            camera_T_base = from_translation_quaternion(
                np.asarray(obj["location"], float) * units_scale, obj["quaternion_xyzw"])
        except ValueError:
            camera_T_base = None
    K = None
    ins = (data.get("camera_data") or {}).get("intrinsics")
    if ins:
        K = np.array([[ins["fx"], 0.0, ins["cx"]], [0.0, ins["fy"], ins["cy"]], [0.0, 0.0, 1.0]])
    return joints, camera_T_base, K


def derive_keypoints(robot, names: Sequence[str], joints: Mapping[str, float],
                     camera_T_base: Optional[np.ndarray], K: Optional[np.ndarray],
                     recorded_xyz: Mapping[str, Sequence[float]], where: str = "frame"
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """(uv (N,2) pixels, xyz (N,3) camera frame, metres) of ``robot``'s keypoints ``names`` at
    ``joints``, seen from ``camera_T_base`` through ``K`` (pixel centres at integer coordinates,
    as synth labels: u = fx x / z + cx; NaN behind the camera). ``recorded_xyz``: camera-frame locations (metres) of
    keypoints the frame carries; every one of them that ``robot`` also has must agree with the
    derivation, else InputError (as for a frame without joint state, base pose or intrinsics)."""
    lacking = [what for what, ok in (("joint state (sim_state.joints)", bool(joints)),
                                     ("base pose (location, quaternion_xyzw)", camera_T_base is not None),
                                     ("intrinsics (camera_data.intrinsics)", K is not None)) if not ok]
    if lacking:
        raise InputError("%s lacks keypoints %s and records no %s to derive them from"
                         % (where, list(names), ", ".join(lacking)))
    unknown = [n for n in names if n not in robot.keypoint_names]
    if unknown:
        raise InputError("%s: robot %r has no keypoints %s" % (where, robot.name, unknown))
    p_base = robot.keypoints_3d(dict(joints))
    p_cam = p_base @ camera_T_base[:3, :3].T + camera_T_base[:3, 3]
    index = {n: i for i, n in enumerate(robot.keypoint_names)}
    checked = [n for n in recorded_xyz if n in index]
    if checked:
        off = max(float(np.linalg.norm(p_cam[index[n]] - np.asarray(recorded_xyz[n], float)))
                  for n in checked)
        if not off <= MAX_RECORDED_MISMATCH_M:
            raise InputError("%s: forward kinematics of its joint state and base pose puts its "
                             "recorded keypoints %.3g m away from their labels (units other than "
                             "metres, or another robot?): cannot derive %s"
                             % (where, off, list(names)))
    rows = [index[n] for n in names]
    from ..visualize import project    # NaN behind the camera
    return project(p_base[rows], camera_T_base, K), p_cam[rows]
