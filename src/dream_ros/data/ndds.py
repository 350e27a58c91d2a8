"""DREAM's NDDS dataset format: reader (``NddsDataset``) and writer (``write_camera_settings``,
``write_frame``).

A dataset is one directory holding ``_camera_settings.json`` and, per frame, ``<name>.json`` (name
starts with a digit; frames sort lexicographically) plus ``<name>.rgb.jpg|png``. The frame json has
``objects[]``; the robot's entry has ``class`` == the robot's DREAM name and ``keypoints[]`` with
``name``, ``location`` (camera optical frame) and ``projected_location`` (pixels). Our writer also
stores ``sim_state.joints``, the base pose in the camera, the camera pose, per-frame intrinsics and
per-keypoint ``in_frame`` / ``occluded`` flags; DREAM's readers ignore the extra fields.

Units: we write metres. DREAM's original synthetic sets are in centimetres: read them with
``units_scale=0.01``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import InputError
from .derived_keypoints import derive_keypoints, frame_state

CAMERA_SETTINGS = "_camera_settings.json"
IMAGE_EXTS = ("png", "jpg")


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # mkstemp makes 0600 files; give them the usual permissions


def atomic_write_bytes(path: Union[str, Path], data: bytes):
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=path.suffix, dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Union[str, Path], obj, indent: Optional[int] = 1):
    atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def camera_settings_dict(K: np.ndarray, width: int, height: int, name: str = "camera",
                         extras: Optional[Dict] = None) -> Dict:
    K = np.asarray(K, float)
    hfov = float(np.degrees(2 * np.arctan2(width / 2.0, K[0, 0])))
    cam = {
        "name": name,
        "horizontal_fov": hfov,
        "intrinsic_settings": {"resX": int(width), "resY": int(height), "fx": float(K[0, 0]),
                               "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2]),
                               "s": 0},
        "captured_image_size": {"width": int(width), "height": int(height)},
    }
    if extras:
        cam.update(extras)
    return {"camera_settings": [cam]}


def write_camera_settings(directory: Union[str, Path], K: np.ndarray, width: int, height: int,
                          extras: Optional[Dict] = None) -> Path:
    path = Path(directory) / CAMERA_SETTINGS
    atomic_write_json(path, camera_settings_dict(K, width, height, extras=extras))
    return path


def encode_image(rgb: np.ndarray, ext: str = "jpg", jpeg_quality: int = 92, png_level: int = 3) -> bytes:
    import cv2
    if ext == "jpg":
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    elif ext == "png":
        ok, buf = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    else:
        raise InputError("image extension must be jpg or png, got %r" % ext)
    if not ok:
        raise InputError("could not encode image as %s" % ext)
    return buf.tobytes()


def frame_record(class_name: str, names: Sequence[str], location: np.ndarray, projected: np.ndarray,
                 camera_T_base: np.ndarray, joints: Dict[str, float], K: Optional[np.ndarray] = None,
                 in_frame: Optional[np.ndarray] = None, occluded: Optional[np.ndarray] = None,
                 visibility: Optional[float] = None, extras: Optional[Dict] = None) -> Dict:
    """The per-frame json dict (metres; camera = OpenCV optical frame)."""
    from ..frames import invert, quaternion_xyzw
    kps = []
    for k, n in enumerate(names):
        kp = {"name": str(n), "location": [float(x) for x in location[k]],
              "projected_location": [float(x) for x in projected[k]]}
        if in_frame is not None:
            kp["in_frame"] = bool(in_frame[k])
        if occluded is not None:
            kp["occluded"] = bool(occluded[k])
        kps.append(kp)
    base_T_camera = invert(camera_T_base)
    obj = {"class": class_name, "name": class_name,
           "visibility": float(visibility) if visibility is not None else 1.0,
           "location": [float(x) for x in camera_T_base[:3, 3]],
           "quaternion_xyzw": [float(x) for x in quaternion_xyzw(camera_T_base)],
           "keypoints": kps}
    cam = {"location_worldframe": [float(x) for x in base_T_camera[:3, 3]],
           "quaternion_xyzw_worldframe": [float(x) for x in quaternion_xyzw(base_T_camera)],
           "frame": "world = robot base frame; camera = OpenCV optical frame"}
    if K is not None:
        cam["intrinsics"] = {"fx": float(K[0, 0]), "fy": float(K[1, 1]),
                             "cx": float(K[0, 2]), "cy": float(K[1, 2])}
    rec = {"camera_data": cam, "objects": [obj],
           "sim_state": {"joints": [{"name": str(n), "position": float(v)} for n, v in joints.items()]}}
    if extras:
        rec.update(extras)
    return rec


def frame_name(index: int, digits: int = 6) -> str:
    return "%0*d" % (digits, index)


def frame_done(directory: Union[str, Path], name: str) -> bool:
    """A frame is complete when its json exists (written last, after the image)."""
    return (Path(directory) / (name + ".json")).exists()


MASK_VALUES = {"background": 0, "robot": 255, "distractor": 128}   # <name>.cs.png pixel values


def write_frame(directory: Union[str, Path], name: str, rgb: np.ndarray, record: Dict,
                ext: str = "jpg", jpeg_quality: int = 92, mask: Optional[np.ndarray] = None) -> Path:
    """Image (and optional segmentation ``<name>.cs.png``, uint8 (H,W) with MASK_VALUES) first,
    then json (so a json means a complete frame); all atomic."""
    import cv2
    d = Path(directory)
    atomic_write_bytes(d / ("%s.rgb.%s" % (name, ext)), encode_image(rgb, ext, jpeg_quality))
    if mask is not None:
        ok, buf = cv2.imencode(".png", np.asarray(mask, np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise InputError("could not encode mask for frame %s" % name)
        atomic_write_bytes(d / ("%s.cs.png" % name), buf.tobytes())
    path = d / (name + ".json")
    atomic_write_json(path, record)
    return path


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
@dataclass
class NddsFrame:
    name: str
    image_path: Path
    keypoint_names: List[str]
    projected: np.ndarray                # (K,2) pixels
    location: np.ndarray                 # (K,3) camera optical frame, metres (after units_scale)
    joints: Dict[str, float]             # from sim_state (empty if absent)
    K: np.ndarray                        # (3,3): the frame's own intrinsics if stored, else the dir's
    camera_T_base: Optional[np.ndarray] = None   # 4x4 if the object has location + quaternion_xyzw
    in_frame: Optional[np.ndarray] = None        # (K,) bool if stored
    occluded: Optional[np.ndarray] = None        # (K,) bool if stored
    visibility: Optional[float] = None
    raw: Dict = field(default_factory=dict)
    mask_path: Optional[Path] = None             # <name>.cs.png if present (see MASK_VALUES)


def _read_json(path: Path) -> Dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError("cannot read %s: %s" % (path, exc))


def read_camera_settings(directory: Union[str, Path]):
    """(K 3x3, (width, height)) from ``_camera_settings.json``."""
    path = Path(directory) / CAMERA_SETTINGS
    if not path.exists():
        raise InputError("%s not found: an NDDS dataset needs camera settings" % path)
    data = _read_json(path)
    try:
        cam = data["camera_settings"][0]
        ins = cam["intrinsic_settings"]
        size = cam["captured_image_size"]
        K = np.array([[float(ins["fx"]), 0.0, float(ins["cx"])],
                      [0.0, float(ins["fy"]), float(ins["cy"])], [0.0, 0.0, 1.0]])
        return K, (int(size["width"]), int(size["height"]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError("%s lacks camera_settings[0].intrinsic_settings/captured_image_size: %s"
                         % (path, exc))


class NddsDataset:
    """Frames of one NDDS directory.

    ``robot_name``: the object ``class`` to read (a robot config name or DREAM name, e.g. "panda");
    None takes the single object that has keypoints. ``keypoint_names``: if given, every frame
    must have these (DREAM's rule) and arrays come in this order, unless ``derive_with`` (a
    RobotModel that has them) is given: then those a frame lacks are derived from its joint state
    and base pose (``derived_keypoints``), in frame by the image bounds, occlusion unknown.
    """

    def __init__(self, directory: Union[str, Path], robot_name: Optional[str] = None,
                 units_scale: float = 1.0, keypoint_names: Optional[Sequence[str]] = None,
                 derive_with=None):
        self.derive_with = derive_with
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError("NDDS dataset directory not found: %s" % self.directory)
        self.class_name = self._class_for(robot_name)
        self.units_scale = float(units_scale)
        self.K, self.image_size = read_camera_settings(self.directory)
        self.keypoint_names = list(keypoint_names) if keypoint_names is not None else None
        jsons = sorted(p.name for p in self.directory.glob("*.json") if p.name[:1].isdigit())
        self.frame_names = [n[:-len(".json")] for n in jsons]
        self.image_ext = self._majority_ext()

    @staticmethod
    def _class_for(robot_name: Optional[str]) -> Optional[str]:
        if robot_name is None:
            return None
        try:   # a robot config name maps to its DREAM name (class string in the files)
            from ..robot_config import load_robot_config
            return load_robot_config(robot_name).dream_name
        except Exception:
            return robot_name

    def _majority_ext(self) -> str:
        counts = {e: len(list(self.directory.glob("*.rgb.%s" % e))) for e in IMAGE_EXTS}
        return "png" if counts["png"] >= counts["jpg"] else "jpg"

    def __len__(self) -> int:
        return len(self.frame_names)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def image_path(self, i: int) -> Path:
        name = self.frame_names[i]
        p = self.directory / ("%s.rgb.%s" % (name, self.image_ext))
        if not p.exists():
            other = self.directory / ("%s.rgb.%s" % (name, "jpg" if self.image_ext == "png" else "png"))
            if other.exists():
                return other
        return p

    def _robot_object(self, data: Dict, path: Path) -> Dict:
        objs = data.get("objects") or []
        if self.class_name is not None:
            for o in objs:
                if o.get("class") == self.class_name:
                    return o
            raise InputError("%s has no object of class %r (classes: %s)"
                             % (path, self.class_name, [o.get("class") for o in objs]))
        with_kp = [o for o in objs if o.get("keypoints")]
        if len(with_kp) != 1:
            raise InputError("%s: %d objects with keypoints; pass robot_name to choose"
                             % (path, len(with_kp)))
        return with_kp[0]

    def __getitem__(self, i: int) -> NddsFrame:
        if i < 0:
            i += len(self)
        name = self.frame_names[i]
        path = self.directory / (name + ".json")
        data = _read_json(path)
        obj = self._robot_object(data, path)
        kps = {k["name"]: k for k in obj.get("keypoints", [])}
        names = self.keypoint_names or [k["name"] for k in obj.get("keypoints", [])]
        joints, camera_T_base, frame_K = frame_state(data, obj, self.units_scale)
        K = self.K if frame_K is None else frame_K
        recorded = [n for n in names if n in kps]
        try:
            uv = np.full((len(names), 2), np.nan)
            xyz = np.full((len(names), 3), np.nan)
            for k, n in enumerate(names):
                if n in kps:
                    uv[k] = np.asarray(kps[n]["projected_location"], float)[:2]
                    xyz[k] = np.asarray(kps[n]["location"], float)[:3] * self.units_scale
        except (KeyError, ValueError, TypeError) as exc:
            raise InputError("%s: malformed keypoints: %s" % (path, exc))
        missing = [n for n in names if n not in kps]
        if missing:
            if self.derive_with is None:
                raise InputError("%s lacks keypoints %s" % (path, missing))
            rows = [names.index(n) for n in missing]
            uv[rows], xyz[rows] = derive_keypoints(
                self.derive_with, missing, joints, camera_T_base, frame_K,
                {n: xyz[names.index(n)] for n in recorded}, where=str(path))
        W, H = self.image_size
        in_frame = None
        if all("in_frame" in kps[n] for n in recorded):
            in_frame = np.array([bool(kps[n]["in_frame"]) if n in kps else
                                 bool(0 <= uv[k, 0] <= W and 0 <= uv[k, 1] <= H)
                                 for k, n in enumerate(names)])
        occluded = (np.array([bool(kps[n]["occluded"]) for n in names])
                    if all("occluded" in kps.get(n, {}) for n in names) else None)
        mask = self.directory / ("%s.cs.png" % name)
        return NddsFrame(name=name, image_path=self.image_path(i), keypoint_names=list(names),
                         projected=uv, location=xyz, joints=joints, K=K, camera_T_base=camera_T_base,
                         in_frame=in_frame, occluded=occluded,
                         visibility=obj.get("visibility"), raw=data,
                         mask_path=mask if mask.exists() else None)

    def load_image(self, i: int) -> np.ndarray:
        """RGB uint8 (H,W,3)."""
        import cv2
        p = self.image_path(i)
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError("cannot read image %s" % p)
        return img[..., ::-1].copy()
