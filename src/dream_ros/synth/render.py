"""Offscreen rendering of a ``RobotScene`` and exact keypoint labels.

``RobotRenderer`` is the reusable API (the simulated camera node, tests, the dataset generator):
render the robot at given joints from a camera at ``camera_T_base`` (base -> OpenCV optical) with
intrinsics K, optionally returning the keypoint projections and their visibility.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from ..frames import invert
from ..robot_config import RobotConfig
from .scene import DISTRACTOR_GROUP, MARKER_GROUP, VISUAL_GROUP, RobotScene

_GEOM_TYPE = 5   # int(mujoco.mjtObj.mjOBJ_GEOM): compare ints, the enum object is ~200 ms/image


@dataclass
class KeypointLabels:
    names: list
    uv: np.ndarray            # (K,2) pixels, OpenCV convention (pixel centres at integer coords)
    xyz: np.ndarray           # (K,3) camera optical frame, metres
    in_frame: np.ndarray      # (K,) bool: projection inside the image and in front of the camera
    occluded: np.ndarray      # (K,) bool: in frame but the pixel shows no robot (distractor/background)
    visible_link: list        # link seen at the keypoint's pixel ("" if none / out of frame)
    robot_pixels: int
    mask: np.ndarray          # (H,W) uint8: 0 background, 1 robot, 2 distractor


def project(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection (no distortion): u = fx x/z + cx, v = fy y/z + cy."""
    z = xyz[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (xyz[:, :2] / z) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv


def intrinsics_from_fov(width: int, height: int, fov_y_deg: float) -> np.ndarray:
    """Square-pixel K with vertical field of view ``fov_y_deg`` and the principal point at the image
    centre in the pixel-centre convention ((W-1)/2, (H-1)/2)."""
    f = (height / 2.0) / np.tan(np.radians(fov_y_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def _ensure_gl_backend():
    os.environ.setdefault("MUJOCO_GL", "egl")


def _pose_and_intrinsics(camera_T_base, K) -> Tuple[np.ndarray, np.ndarray]:
    camera_T_base, K = np.asarray(camera_T_base, float), np.asarray(K, float)
    if camera_T_base.shape != (4, 4) or K.shape != (3, 3):
        raise InputError("camera_T_base must be 4x4 and K 3x3, got %s and %s"
                         % (camera_T_base.shape, K.shape))
    return camera_T_base, K


class SceneRenderer:
    """One offscreen context for a scene: RGB pass plus a segmentation pass."""

    def __init__(self, scene: RobotScene, width: int, height: int):
        _ensure_gl_backend()
        import mujoco
        self.scene, self.width, self.height = scene, int(width), int(height)
        m = scene.model
        if width > m.vis.global_.offwidth or height > m.vis.global_.offheight:
            raise InputError("image %dx%d exceeds the scene's offscreen buffer %dx%d"
                             % (width, height, m.vis.global_.offwidth, m.vis.global_.offheight))
        self._mj = mujoco
        self.renderer = mujoco.Renderer(m, self.height, self.width)
        self.option = mujoco.MjvOption()
        self.option.geomgroup[:] = 0
        self.option.geomgroup[VISUAL_GROUP] = 1
        self.option.geomgroup[DISTRACTOR_GROUP] = 1

    def render(self, markers_only: bool = False, segmentation: bool = True
               ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """rgb (H,W,3) uint8, label (H,W) uint8 (0 bg / 1 robot / 2 distractor), geom id (H,W)
        (-1 background). ``markers_only`` renders just the keypoint marker spheres."""
        opt = self.option
        saved = opt.geomgroup.copy()
        if markers_only:
            opt.geomgroup[:] = 0
            opt.geomgroup[MARKER_GROUP] = 1
        r, sc = self.renderer, self.scene
        r.update_scene(sc.data, camera=sc.cam_id, scene_option=opt)
        rgb = r.render().copy()
        label = geom = None
        if segmentation:
            label, geom = self.segmentation()
        opt.geomgroup[:] = saved
        return rgb, label, geom

    def segmentation(self) -> Tuple[np.ndarray, np.ndarray]:
        """The segmentation pass alone: label (H,W) uint8 (0 bg / 1 robot / 2 distractor) and
        geom id (H,W) (-1 background)."""
        r, sc = self.renderer, self.scene
        r.enable_segmentation_rendering()
        r.update_scene(sc.data, camera=sc.cam_id, scene_option=self.option)
        seg = r.render()
        r.disable_segmentation_rendering()
        geom = np.where(seg[..., 1] == _GEOM_TYPE, seg[..., 0], -1)
        return sc.geom_label[geom], geom

    def close(self):
        self.renderer.close()


def keypoint_labels(scene: RobotScene, world_T_optical: np.ndarray, K: np.ndarray, width: int,
                    height: int, label: Optional[np.ndarray] = None,
                    geom: Optional[np.ndarray] = None) -> KeypointLabels:
    """Keypoints of the scene's current pose in the camera, projected, with visibility from the
    segmentation images (if given)."""
    optical_T_world = invert(world_T_optical)
    pw = scene.keypoints_world()
    xyz = pw @ optical_T_world[:3, :3].T + optical_T_world[:3, 3]
    uv = project(xyz, K)
    in_frame = ((xyz[:, 2] > 1e-6) & (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5)
                & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5))
    occluded = np.zeros(len(xyz), bool)
    visible_link = [""] * len(xyz)
    robot_pixels = 0
    if label is not None:
        robot_pixels = int(np.count_nonzero(label == 1))
        link_of = dict(zip(scene.robot_geoms.tolist(), scene.geom_link))
        for k in np.flatnonzero(in_frame):
            u, v = int(round(uv[k, 0])), int(round(uv[k, 1]))
            u, v = min(max(u, 0), width - 1), min(max(v, 0), height - 1)
            occluded[k] = label[v, u] != 1
            if geom is not None and not occluded[k]:
                visible_link[k] = link_of.get(int(geom[v, u]), "")
    return KeypointLabels(names=scene.config.keypoint_names, uv=uv, xyz=xyz, in_frame=in_frame,
                          occluded=occluded, visible_link=visible_link, robot_pixels=robot_pixels,
                          mask=label)


def composite(rgb: np.ndarray, label: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Put ``background`` behind the rendered foreground (robot + distractors). The mask edge is
    feathered over one pixel: the render has no MSAA, so this hides the aliased silhouette."""
    import cv2
    fg = (label > 0).astype(np.float32)
    alpha = cv2.blur(fg, (3, 3))[..., None]
    alpha = np.maximum(alpha, fg[..., None] * 0.5)   # keep thin robot parts from fading out
    out = rgb.astype(np.float32) * alpha + background.astype(np.float32) * (1.0 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def default_lights(scene: RobotScene, world_T_optical: np.ndarray):
    """Neutral lighting for deterministic renders: one light from above-front, one from the camera."""
    m = scene.model
    cam = world_T_optical[:3, 3]
    target = scene.world_T_base()[:3, 3] + np.array([0.0, 0.0, 0.4])
    for i, pos in enumerate([target + np.array([0.5, 0.3, 2.5]), cam]):
        d = target - pos
        m.light_pos[i] = pos
        m.light_dir[i] = d / (np.linalg.norm(d) + 1e-12)
        m.light_diffuse[i] = [0.6, 0.6, 0.6] if i == 0 else [0.4, 0.4, 0.4]
        m.light_specular[i] = [0.2, 0.2, 0.2]
        m.light_ambient[i] = [0.15, 0.15, 0.15]
        m.light_active[i] = 1


class RobotRenderer:
    """Render a robot at given joints from a given camera.

    >>> r = RobotRenderer("panda", 640, 480)
    >>> rgb = r.render({"panda_joint4": -1.5}, camera_T_base, K)
    """

    def __init__(self, robot: Union[str, Path, RobotConfig], width: int, height: int,
                 markers: bool = False, n_distractors: int = 0, scene: Optional[RobotScene] = None,
                 msaa: int = 0):
        """msaa: multisample count (0 = off, the fast default; 4 smooths edges at ~2.5x cost)."""
        self.width, self.height = int(width), int(height)
        self.scene = scene if scene is not None else RobotScene(
            robot, n_distractors=n_distractors, markers=markers,
            max_width=max(self.width, 64), max_height=max(self.height, 64), msaa=msaa)
        self.renderer = SceneRenderer(self.scene, self.width, self.height)

    @property
    def config(self) -> RobotConfig:
        return self.scene.config

    def render(self, joints: Dict[str, float], camera_T_base: np.ndarray, K: np.ndarray,
               background=None, true_materials: bool = True, robot_rgba: Optional[np.ndarray] = None,
               return_labels: bool = False, lights: bool = True):
        """rgb uint8 (H,W,3); with ``return_labels`` also a ``KeypointLabels``.

        background: None (mid grey), an RGB triple, or an (H,W,3) uint8 image.
        true_materials=False paints the robot a uniform light grey unless ``robot_rgba`` is given.
        """
        camera_T_base, K = _pose_and_intrinsics(camera_T_base, K)
        sc = self.scene
        sc.set_joints(joints)
        world_T_optical = sc.world_T_base() @ invert(camera_T_base)
        sc.set_camera(world_T_optical, K, self.width, self.height)
        sc.set_surface()   # default specular/shininess: renders do not depend on earlier calls
        if robot_rgba is not None:
            sc.set_robot_rgba(np.broadcast_to(np.asarray(robot_rgba, float), sc.true_rgba.shape))
        elif true_materials:
            sc.set_robot_rgba(None)
        else:
            sc.set_robot_rgba(np.broadcast_to([0.8, 0.8, 0.8, 1.0], sc.true_rgba.shape))
        if lights:
            default_lights(sc, world_T_optical)
        sc.forward()
        rgb, label, geom = self.renderer.render(segmentation=True)
        if background is None:
            background = (128, 128, 128)
        bg = np.asarray(background, np.uint8)
        if bg.ndim == 1:
            bg = np.broadcast_to(bg, rgb.shape)
        elif bg.shape != rgb.shape:
            raise InputError("background must be %s, got %s" % (rgb.shape, bg.shape))
        out = composite(rgb, label, bg)
        if not return_labels:
            return out
        return out, keypoint_labels(sc, world_T_optical, K, self.width, self.height, label, geom)

    def render_silhouette(self, joints: Dict[str, float], camera_T_base: np.ndarray,
                          K: np.ndarray) -> np.ndarray:
        """(H,W) bool robot mask at these joints and camera pose: the segmentation pass only
        (no colour pass, no lights), for fitting poses to masks."""
        camera_T_base, K = _pose_and_intrinsics(camera_T_base, K)
        sc = self.scene
        sc.set_joints(joints)
        sc.set_camera(sc.world_T_base() @ invert(camera_T_base), K, self.width, self.height)
        sc.forward()
        label, _ = self.renderer.segmentation()
        return label == 1

    def render_markers(self, joints: Dict[str, float], camera_T_base: np.ndarray, K: np.ndarray
                       ) -> np.ndarray:
        """(H,W) geom-id image of only the keypoint marker spheres (needs markers=True)."""
        sc = self.scene
        sc.set_joints(joints)
        world_T_optical = sc.world_T_base() @ invert(np.asarray(camera_T_base, float))
        sc.set_camera(world_T_optical, np.asarray(K, float), self.width, self.height)
        sc.forward()
        _, _, geom = self.renderer.render(markers_only=True, segmentation=True)
        return geom

    def close(self):
        self.renderer.close()
