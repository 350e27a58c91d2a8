"""Domain randomization: sample one frame's joints, camera, lights, colours and distractors.

Ranges come from the robot config's ``synth`` section (defaults below). The sampler only draws
numbers from a numpy Generator and applies them to a ``RobotScene``; the scene knows nothing about
randomization, and the same seed always gives the same frame.
"""
from __future__ import annotations

import colorsys
import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .. import frames
from ..errors import ConfigError
from .render import intrinsics_from_fov
from .scene import RobotScene

DEFAULTS: Dict = {
    "camera": {
        "radius_m": [0.7, 2.6],
        "elevation_deg": [-5, 75],
        "azimuth_deg": [-180, 180],
        "look_at_m": [0.0, 0.0, 0.45],
        "look_at_jitter_m": 0.3,
        "roll_deg": [-20, 20],
        "closeup_prob": 0.12,          # look at a random keypoint from close by (partly cropped views)
        "closeup_radius_m": [0.35, 0.9],
    },
    "fov_deg": [40, 80],
    "principal_jitter_frac": 0.0,      # optional: principal point offset as a fraction of W/H
    "floor_z_m": 0.0,
    "recolor_prob": 0.5,               # robot gets random link colours, else its true materials
    "distractors": [0, 8],
    "mesh_distractors": [0, 4],        # pybullet_data objects (if installed), on top of the above
    "occluder_prob": 0.25,             # a distractor placed between camera and robot
    "table_prob": 0.0,                 # table scenes: robot on a plate on a table top (apply_support)
    "shadow_prob": 0.5,                # ... of which this share with the key light casting shadows
    "max_joint_tries": 50,
}


def merged_ranges(synth: Dict) -> Dict:
    """DEFAULTS overridden by a robot config's ``synth`` section (one level deep for camera)."""
    out = copy.deepcopy(DEFAULTS)
    for k, v in (synth or {}).items():
        if k == "camera":
            if not isinstance(v, dict):
                raise ConfigError("synth.camera must be a mapping")
            out["camera"].update(v)
        else:
            out[k] = v
    return out


def look_at(position: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """world_T_optical for a camera at ``position`` looking at ``target``, image 'down' as close to
    world -z as possible, then rolled about the optical axis."""
    return frames.look_at(position, target, roll_rad)


@dataclass
class FrameParams:
    joints: Dict[str, float]
    world_T_optical: np.ndarray
    K: np.ndarray
    true_materials: bool
    closeup: bool
    n_distractors: int
    tries: int
    extras: Dict = field(default_factory=dict)
    table: bool = False


class Randomizer:
    def __init__(self, scene: RobotScene, width: int, height: int, fixed_fov_deg: Optional[float] = None):
        self.scene, self.width, self.height = scene, int(width), int(height)
        self.ranges = merged_ranges(scene.config.synth)
        self.fixed_fov = fixed_fov_deg
        self.lower, self.upper = scene.joint_limits()

    # -- pieces ----------------------------------------------------------------------------------
    def sample_joints(self, rng) -> (Dict[str, float], int):
        """Uniform within limits, rejecting self-collision and links through the floor."""
        sc = self.scene
        tries = int(self.ranges["max_joint_tries"])
        for t in range(1, tries + 1):
            q = dict(zip(sc.joint_names, rng.uniform(self.lower, self.upper)))
            full = sc.set_joints(q)
            if not sc.in_collision():
                return full, t
        return full, tries   # give up: keep the last sample (rare; recorded in the frame's extras)

    def sample_camera(self, rng):
        r = self.ranges
        cam = r["camera"]
        sc = self.scene
        world_T_base = sc.world_T_base()
        closeup = rng.random() < float(cam.get("closeup_prob", 0.0))
        if closeup:
            kp = sc.keypoints_world()
            target = kp[rng.integers(len(kp))] + rng.uniform(-0.05, 0.05, 3)
            radius = rng.uniform(*cam["closeup_radius_m"])
        else:
            nominal = world_T_base[:3, :3] @ np.asarray(cam["look_at_m"], float) + world_T_base[:3, 3]
            target = nominal + rng.uniform(-1, 1, 3) * float(cam["look_at_jitter_m"])
            radius = rng.uniform(*cam["radius_m"])
        el = np.radians(rng.uniform(*cam["elevation_deg"]))
        az = np.radians(rng.uniform(*cam["azimuth_deg"]))
        # azimuth/elevation are measured in the robot base frame
        d_base = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        pos = target + radius * (world_T_base[:3, :3] @ d_base)
        floor = float(r.get("floor_z_m", 0.0)) + 0.05
        pos[2] = max(pos[2], floor)
        roll = np.radians(rng.uniform(*cam["roll_deg"]))
        world_T_optical = look_at(pos, target, roll)
        fov = self.fixed_fov if self.fixed_fov is not None else rng.uniform(*r["fov_deg"])
        K = intrinsics_from_fov(self.width, self.height, fov)
        pj = float(r.get("principal_jitter_frac", 0.0))
        if pj > 0:
            K[0, 2] += rng.uniform(-pj, pj) * self.width
            K[1, 2] += rng.uniform(-pj, pj) * self.height
        return world_T_optical, K, closeup, float(fov)

    def apply_lights(self, rng, world_T_optical):
        """Light 0: key light from the upper hemisphere. Light 1: usually a fill light near the
        camera (so views from below or behind are not black), else a second random light or off."""
        m = self.scene.model
        target = self.scene.world_T_base()[:3, 3] + np.array([0.0, 0.0, 0.4])
        cam = world_T_optical[:3, 3]
        for i in range(m.nlight):
            kind = "key" if i == 0 else ("fill" if rng.random() < 0.6 else
                                         ("key" if rng.random() < 0.5 else "off"))
            if kind == "off":
                m.light_active[i] = 0
                continue
            if kind == "key":
                az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(10), np.radians(85))
                pos = target + rng.uniform(1.5, 4) * np.array([np.cos(el) * np.cos(az),
                                                               np.cos(el) * np.sin(az), np.sin(el)])
                diffuse, ambient = rng.uniform(0.35, 1.0), rng.uniform(0.05, 0.35)
            else:
                pos = cam + rng.uniform(-1.0, 1.0, 3) + np.array([0.0, 0.0, rng.uniform(0.0, 1.0)])
                diffuse, ambient = rng.uniform(0.2, 0.7), rng.uniform(0.0, 0.15)
            d = target - pos
            tint = np.array(colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 0.3), 1.0))
            m.light_pos[i] = pos
            m.light_dir[i] = d / np.linalg.norm(d)
            m.light_diffuse[i] = tint * diffuse
            m.light_specular[i] = rng.uniform(0.0, 0.6)
            m.light_ambient[i] = tint * ambient
            m.light_active[i] = 1

    def apply_colors(self, rng) -> bool:
        """Random link colours (one colour per link, sometimes per sub-mesh) or true materials."""
        sc = self.scene
        sc.set_surface(rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.95))
        sc.set_surface(rng.uniform(0.0, 0.9), rng.uniform(0.0, 1.0), distractors=True)
        if rng.random() >= float(self.ranges["recolor_prob"]):
            sc.set_robot_rgba(None)
            return True
        links = sorted(set(sc.geom_link))
        per_geom = rng.random() < 0.3
        colors = {l: colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 1))
                  for l in links}
        rgba = np.ones((len(sc.robot_geoms), 4))
        for i, l in enumerate(sc.geom_link):
            rgba[i, :3] = (colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 1))
                           if per_geom else colors[l])
        sc.set_robot_rgba(rgba)
        return False

    def apply_support(self, rng) -> bool:
        """Table scenes, with probability table_prob: the robot stands on a mounting plate on a
        table top, as real arms do. Flat composited backgrounds never show the edges, colours,
        shadows and contact around the base that real images do. Returns whether it did."""
        sc = self.scene
        p = float(self.ranges.get("table_prob", 0.0))
        # no draw at all when off: datasets rendered before this option stay reproducible
        if p <= 0.0 or rng.random() >= p:
            sc.set_support([None, None])
            sc.model.light_castshadow[0] = 0
            return False
        base = sc.world_T_base()[:3, 3]
        floor = float(self.ranges.get("floor_z_m", 0.0))
        yaw = rng.uniform(-np.pi, np.pi)
        plate = None
        plate_half_t = 0.0
        if rng.random() < 0.7:
            plate_half_t = rng.uniform(0.002, 0.008)
            half = rng.uniform(0.12, 0.3)
            rgba = self._support_colour(rng, dark=rng.random() < 0.7)
            centre = base + np.array([*rng.uniform(-0.05, 0.05, 2), 0.0])
            centre[2] = floor - plate_half_t
            plate = (centre, np.array([half, half, plate_half_t]), rgba, yaw)
        half = np.array([rng.uniform(0.35, 1.2), rng.uniform(0.3, 1.0), rng.uniform(0.01, 0.03)])
        # the base at least 0.15 m inside the table's edges, often close to one of them
        off = rng.uniform(-1.0, 1.0, 2) * np.maximum(half[:2] - 0.15, 0.0)
        c, s_ = np.cos(yaw), np.sin(yaw)
        centre = base + np.array([c * off[0] - s_ * off[1], s_ * off[0] + c * off[1], 0.0])
        centre[2] = floor - 2 * plate_half_t - half[2]
        table = (centre, half, self._support_colour(rng, dark=False), yaw)
        sc.set_support([table, plate])
        sc.set_surface(rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.6), support=True)
        sc.model.light_castshadow[0] = int(rng.random() < float(self.ranges.get("shadow_prob", 0.5)))
        return True

    @staticmethod
    def _support_colour(rng, dark: bool) -> np.ndarray:
        """Mounting plates: mostly dark. Tables: wood, neutral white/grey, or any colour."""
        kind = rng.random()
        if dark:
            hsv = (rng.uniform(0, 1), rng.uniform(0, 0.2), rng.uniform(0.02, 0.3))
        elif kind < 0.4:
            hsv = (rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.6), rng.uniform(0.4, 0.9))
        elif kind < 0.8:
            hsv = (rng.uniform(0, 1), rng.uniform(0, 0.08), rng.uniform(0.25, 0.97))
        else:
            hsv = (rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 1))
        return np.array([*colorsys.hsv_to_rgb(*hsv), 1.0])

    def apply_distractors(self, rng, world_T_optical) -> int:
        sc = self.scene
        m, d = sc.model, sc.data
        n_slots = len(sc.distractor_geoms)
        lo, hi = self.ranges["distractors"]
        n = int(rng.integers(min(lo, n_slots), min(hi, n_slots) + 1)) if n_slots else 0
        order = rng.permutation(n_slots)
        cam = world_T_optical[:3, 3]
        base = sc.world_T_base()[:3, 3]
        floor = float(self.ranges.get("floor_z_m", 0.0))
        occluder = rng.random() < float(self.ranges["occluder_prob"])   # at most one per image
        for rank, slot in enumerate(order):
            g, mid = sc.distractor_geoms[slot], sc.distractor_mocap[slot]
            if rank >= n:
                d.mocap_pos[mid] = [0.0, 0.0, -100.0]
                continue
            if occluder and rank == 0:
                # small object near the robot, on the line of sight: partial occlusion only
                target = base + np.array([0, 0, rng.uniform(0.1, 0.9)]) + rng.uniform(-0.2, 0.2, 3)
                pos = cam + rng.uniform(0.6, 0.9) * (target - cam)
                size = rng.uniform(0.015, 0.06, 3)
            else:
                r, az = rng.uniform(0.35, 1.8), rng.uniform(0, 2 * np.pi)
                pos = base + np.array([r * np.cos(az), r * np.sin(az), 0.0])
                pos[2] = floor + rng.uniform(0.0, 1.4)
                size = rng.uniform(0.02, 0.15, 3)
            d.mocap_pos[mid] = pos
            q = rng.normal(size=4)
            d.mocap_quat[mid] = q / np.linalg.norm(q)
            m.geom_size[g] = size
            m.geom_rbound[g] = float(np.linalg.norm(size) * 2)   # culling bound must cover the new size
            c = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 1))
            m.geom_rgba[g] = [c[0], c[1], c[2], 1.0]
        return n + self._place_mesh_distractors(rng, base, floor)

    def _place_mesh_distractors(self, rng, base, floor) -> int:
        """Fixed-size object meshes scattered around the robot, random pose and colour."""
        sc = self.scene
        m, d = sc.model, sc.data
        slots = len(sc.mesh_distractor_geoms)
        if slots == 0:
            return 0
        lo, hi = self.ranges.get("mesh_distractors", [0, 0])
        n = int(rng.integers(min(lo, slots), min(hi, slots) + 1))
        chosen = set(rng.choice(slots, size=n, replace=False).tolist()) if n else set()
        for slot in range(slots):
            g, mid = sc.mesh_distractor_geoms[slot], sc.mesh_distractor_mocap[slot]
            if slot not in chosen:
                d.mocap_pos[mid] = [0.0, 0.0, -100.0]
                continue
            r, az = rng.uniform(0.3, 1.8), rng.uniform(0, 2 * np.pi)
            d.mocap_pos[mid] = base + np.array([r * np.cos(az), r * np.sin(az), 0.0])
            d.mocap_pos[mid][2] = floor + rng.uniform(0.0, 1.4)
            q = rng.normal(size=4)
            d.mocap_quat[mid] = q / np.linalg.norm(q)
            c = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 1))
            m.geom_rgba[g] = [c[0], c[1], c[2], 1.0]
        return n

    # -- a whole frame ---------------------------------------------------------------------------
    def sample(self, rng) -> FrameParams:
        """Draw and apply everything; the scene is ready to render afterwards."""
        joints, tries = self.sample_joints(rng)
        world_T_optical, K, closeup, fov = self.sample_camera(rng)
        self.scene.set_camera(world_T_optical, K, self.width, self.height)
        self.apply_lights(rng, world_T_optical)
        true_materials = self.apply_colors(rng)
        n_distr = self.apply_distractors(rng, world_T_optical)
        table = self.apply_support(rng)
        self.scene.forward()
        return FrameParams(joints=joints, world_T_optical=world_T_optical, K=K,
                           true_materials=true_materials, closeup=closeup, n_distractors=n_distr,
                           tries=tries, extras={"fov_y_deg": fov}, table=table)
