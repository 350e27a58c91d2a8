"""Robot configs: ``config/robots/<robot>.yaml`` -> RobotConfig.

A config names the URDF, the base frame, the joints a user supplies, the keypoints (a link frame
plus an optional offset in that frame, metres) and the synthetic-data randomization ranges.
Forward kinematics lives in ``dream_ros.robot`` on top of this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from .errors import ConfigError
from .resources import ROBOTS_DIR, load_yaml_file, resolve_uri

REQUIRED_KEYS = ("name", "urdf", "base_frame", "joints", "keypoints")


@dataclass
class KeypointSpec:
    name: str
    link: str
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))   # metres, in the link frame


@dataclass
class RobotConfig:
    name: str
    urdf_uri: str
    base_frame: str
    joint_names: List[str]
    keypoints: List[KeypointSpec]
    dream_name: str = ""
    synth: Dict = field(default_factory=dict)
    source: Optional[Path] = None      # the YAML file it came from
    raw: Dict = field(default_factory=dict)

    @property
    def keypoint_names(self) -> List[str]:
        return [k.name for k in self.keypoints]

    @property
    def urdf_path(self) -> Path:
        return resolve_uri(self.urdf_uri, relative_to=self.source.parent if self.source else None)


def available_robots() -> List[str]:
    return sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))


def load_robot_config(name_or_path: Union[str, Path]) -> RobotConfig:
    """Load by robot name (``panda``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = ROBOTS_DIR / ("%s.yaml" % name_or_path)
        if not path.exists():
            raise ConfigError("unknown robot %r: no %s (available: %s)"
                              % (str(name_or_path), path, ", ".join(available_robots())))
    if not path.exists():
        raise ConfigError("robot config not found: %s" % path)
    data = load_yaml_file(path, "robot config")
    if not isinstance(data, dict):
        raise ConfigError("robot config %s must be a mapping" % path)
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ConfigError("robot config %s lacks %s" % (path, ", ".join(missing)))
    keypoints = []
    for i, kp in enumerate(data["keypoints"]):
        if not isinstance(kp, dict) or "name" not in kp:
            raise ConfigError("robot config %s: keypoint %d needs at least a name" % (path, i))
        offset = np.asarray(kp.get("offset", [0.0, 0.0, 0.0]), dtype=float)
        if offset.shape != (3,) or not np.all(np.isfinite(offset)):
            raise ConfigError("robot config %s: keypoint %r offset must be 3 finite numbers"
                              % (path, kp["name"]))
        keypoints.append(KeypointSpec(name=str(kp["name"]), link=str(kp.get("link", kp["name"])),
                                      offset=offset))
    names = [k.name for k in keypoints]
    if len(set(names)) != len(names):
        raise ConfigError("robot config %s: duplicate keypoint names" % path)
    return RobotConfig(name=str(data["name"]), urdf_uri=str(data["urdf"]),
                       base_frame=str(data["base_frame"]),
                       joint_names=[str(j) for j in data["joints"]], keypoints=keypoints,
                       dream_name=str(data.get("dream_name", data["name"])),
                       synth=dict(data.get("synth") or {}), source=path, raw=data)
