"""Robot model: URDF + robot config -> forward kinematics of the keypoints.

``RobotModel.load("panda")`` reads ``config/robots/panda.yaml`` and its URDF (urdf_parser_py).
Forward kinematics handles revolute, continuous, prismatic, fixed and mimic joints, joint origins
with rpy, any tree (the base frame need not be the URDF root), and is vectorised over N joint
configurations: every joint transform is an (N, 4, 4) stack and a chain is N batched matmuls.

Joint values:
- a dict {joint name: radians or metres}: every joint in ``joint_names`` must be there (else
  InputError naming the missing ones); other movable joints (e.g. fingers) default to 0 unless
  given; names the URDF does not know are ignored (a /joint_states message may carry more).
  Values may be scalars or equal-length 1-D arrays (a batch).
- an array (J,) or (N, J) in ``joint_names`` order.
Mimic joints always follow their master (URDF semantics), even when a value is given for them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial.transform import Rotation

from .errors import ConfigError, InputError
from .robot_config import RobotConfig, load_robot_config
from .resources import resolve_uri

MOVABLE_TYPES = ("revolute", "continuous", "prismatic")
SUPPORTED_TYPES = MOVABLE_TYPES + ("fixed",)


def _parse_urdf(path: Path):
    """urdf_parser_py's URDF object; its warnings about unknown tags (Franka's <safety_controller>,
    dynamics extras...) are muted, real XML errors become ConfigError."""
    from urdf_parser_py import urdf as urdf_mod
    from urdf_parser_py.xml_reflection import core as xml_core
    previous = xml_core.on_error
    xml_core.on_error = lambda message: None
    try:
        return urdf_mod.URDF.from_xml_string(Path(path).read_bytes())
    except Exception as exc:  # lxml / ElementTree / reflection errors all mean a broken file
        raise ConfigError("cannot parse URDF %s: %s" % (path, exc))
    finally:
        xml_core.on_error = previous


def _rpy_matrix(rpy: Sequence[float]) -> np.ndarray:
    """URDF rpy: fixed-axis roll (x), pitch (y), yaw (z), i.e. R = Rz(yaw) Ry(pitch) Rx(roll)
    (scipy's extrinsic "xyz")."""
    return Rotation.from_euler("xyz", np.asarray(rpy, dtype=float)).as_matrix()


def _origin_matrix(origin) -> np.ndarray:
    T = np.eye(4)
    if origin is not None:
        if origin.rpy is not None:
            T[:3, :3] = _rpy_matrix(origin.rpy)
        if origin.xyz is not None:
            T[:3, 3] = origin.xyz
    return T


class _Joint(object):
    """What FK needs of one URDF joint (kept small and pre-computed)."""

    __slots__ = ("name", "type", "parent", "child", "origin", "axis", "axis_skew", "mimic")

    def __init__(self, name, jtype, parent, child, origin, axis, mimic):
        self.name, self.type, self.parent, self.child = name, jtype, parent, child
        self.origin, self.axis, self.mimic = origin, axis, mimic   # mimic: (master, mult, offset)
        x, y, z = axis
        skew = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
        self.axis_skew = (skew, skew @ skew)


class RobotModel(object):
    """Keypoint forward kinematics for one robot (see module docstring for the joint input)."""

    def __init__(self, config: RobotConfig, urdf_path: Optional[Union[str, Path]] = None):
        self.config = config
        self.urdf_path = (resolve_uri(str(urdf_path)) if urdf_path is not None
                          else config.urdf_path)
        self.urdf = _parse_urdf(self.urdf_path)
        self._joints: Dict[str, _Joint] = {}
        self._parent_joint: Dict[str, _Joint] = {}      # child link -> joint
        for j in self.urdf.joints:
            jtype = j.type
            axis = np.array(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=float)
            if jtype in MOVABLE_TYPES:
                n = np.linalg.norm(axis)
                if not np.isfinite(n) or n < 1e-12:
                    raise ConfigError("URDF %s: joint %r has a zero axis" % (self.urdf_path, j.name))
                axis = axis / n
            mimic = None
            if j.mimic is not None:
                mimic = (j.mimic.joint,
                         1.0 if j.mimic.multiplier is None else float(j.mimic.multiplier),
                         0.0 if j.mimic.offset is None else float(j.mimic.offset))
            joint = _Joint(j.name, jtype, j.parent, j.child, _origin_matrix(j.origin), axis, mimic)
            self._joints[j.name] = joint
            self._parent_joint[j.child] = joint
        self.link_names: List[str] = [link.name for link in self.urdf.links]
        self._link_set = set(self.link_names)
        self._check_config()
        self._chain_cache: Dict[Tuple[str, ...], List[_Joint]] = {}
        self._keypoint_links = [k.link for k in config.keypoints]
        self._keypoint_offsets = np.array([k.offset for k in config.keypoints], dtype=float)

    @classmethod
    def load(cls, name_or_path: Union[str, Path],
             urdf_path: Optional[Union[str, Path]] = None) -> "RobotModel":
        """From a robot config name ("panda") or YAML path; ``urdf_path`` overrides the config's."""
        return cls(load_robot_config(name_or_path), urdf_path=urdf_path)

    # ------------------------------------------------------------------ description
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def keypoint_names(self) -> List[str]:
        return self.config.keypoint_names

    @property
    def num_keypoints(self) -> int:
        return len(self.config.keypoints)

    @property
    def joint_names(self) -> List[str]:
        return list(self.config.joint_names)

    @property
    def base_frame(self) -> str:
        return self.config.base_frame

    def joint_limits(self) -> Tuple[np.ndarray, np.ndarray]:
        """(lower, upper) in joint_names order; continuous joints (no limits) get (-pi, pi)."""
        lower, upper = [], []
        for name in self.config.joint_names:
            j = self.urdf.joint_map[name]
            if j.type == "continuous" or j.limit is None:
                lower.append(-np.pi)
                upper.append(np.pi)
            else:
                lower.append(float(j.limit.lower))
                upper.append(float(j.limit.upper))
        return np.array(lower), np.array(upper)

    def _check_config(self) -> None:
        """Every problem between the config and the URDF, in one ConfigError."""
        links = set(self.link_names)
        problems = []
        if self.base_frame not in links:
            problems.append("base frame %r is not a URDF link" % self.base_frame)
        bad = sorted({k.link for k in self.config.keypoints} - links)
        if bad:
            problems.append("keypoint links not in the URDF: %s" % ", ".join(bad))
        unknown = [j for j in self.config.joint_names if j not in self._joints]
        if unknown:
            problems.append("joints not in the URDF: %s" % ", ".join(unknown))
        not_movable = [j for j in self.config.joint_names if j in self._joints
                       and (self._joints[j].type not in MOVABLE_TYPES or self._joints[j].mimic)]
        if not_movable:
            problems.append("configured joints must be revolute, continuous or prismatic and "
                            "not mimic: %s" % ", ".join(not_movable))
        for j in self._joints.values():
            if j.mimic is not None and j.mimic[0] not in self._joints:
                problems.append("joint %r mimics unknown joint %r" % (j.name, j.mimic[0]))
        if problems:
            raise ConfigError("robot config %s with URDF %s: %s"
                              % (self.config.source, self.urdf_path, "; ".join(problems)))

    # ------------------------------------------------------------------ kinematic tree
    def _root_path(self, link: str) -> List[_Joint]:
        """Joints from the URDF root down to ``link``."""
        path = []
        seen = set()
        while link in self._parent_joint:
            if link in seen:
                raise ConfigError("URDF %s has a kinematic loop at link %r" % (self.urdf_path, link))
            seen.add(link)
            j = self._parent_joint[link]
            path.append(j)
            link = j.parent
        return path[::-1]

    def _chain(self, links: Tuple[str, ...]) -> List[_Joint]:
        """All joints needed for the given links and the base frame, parents before children."""
        chain = self._chain_cache.get(links)
        if chain is None:
            unknown = [l for l in links if l not in self._link_set]
            if unknown:
                raise InputError("unknown link(s) %s for robot %r (URDF %s)"
                                 % (", ".join(map(repr, unknown)), self.name, self.urdf_path))
            order: Dict[str, _Joint] = {}
            for link in links + (self.base_frame,):
                for j in self._root_path(link):
                    order.setdefault(j.name, j)
            chain = list(order.values())   # root paths list parents first; setdefault keeps it
            bad = [j.name for j in chain if j.type not in SUPPORTED_TYPES]
            if bad:
                raise ConfigError("URDF %s: joint type not supported for forward kinematics "
                                  "(floating/planar): %s" % (self.urdf_path, ", ".join(bad)))
            self._chain_cache[links] = chain
        return chain

    # ------------------------------------------------------------------ joint input
    def _joint_values(self, joints) -> Tuple[Dict[str, np.ndarray], int, bool]:
        """{movable joint: (N,) values}, N, batched? Mimic joints resolved from their masters."""
        names = self.config.joint_names
        if isinstance(joints, dict):
            missing = [n for n in names if n not in joints]
            if missing:
                raise InputError("missing joint values for %s (robot %r needs %s)"
                                 % (", ".join(missing), self.name, ", ".join(names)))
            values, n_batch, batched = {}, None, False
            for name, v in joints.items():
                j = self._joints.get(name)
                if j is None or j.type not in MOVABLE_TYPES:
                    continue   # extra names (other robots' joints, fixed joints) are ignored
                try:
                    arr = np.asarray(v, dtype=float)
                except (TypeError, ValueError):
                    raise InputError("joint %r: value %r is not a number" % (name, v))
                if arr.ndim > 1:
                    raise InputError("joint %r: expected a scalar or a 1-D array, got shape %s"
                                     % (name, arr.shape))
                if arr.ndim == 1:
                    if n_batch is not None and batched and arr.shape[0] != n_batch:
                        raise InputError("joint %r: %d values but other joints have %d"
                                         % (name, arr.shape[0], n_batch))
                    n_batch, batched = arr.shape[0], True
                values[name] = arr
            n = n_batch if batched else 1
            values = {k: np.broadcast_to(v, (n,)).astype(float) for k, v in values.items()}
        else:
            try:
                arr = np.asarray(joints, dtype=float)
            except (TypeError, ValueError):
                raise InputError("joint values must be a dict or a numeric array, got %r"
                                 % type(joints).__name__)
            J = len(names)
            if arr.ndim == 1 and arr.shape[0] == J:
                batched, arr2 = False, arr[None, :]
            elif arr.ndim == 2 and arr.shape[1] == J:
                batched, arr2 = True, arr
            else:
                raise InputError("joint array must have shape (%d,) or (N, %d) in the order %s; "
                                 "got shape %s" % (J, J, ", ".join(names), arr.shape))
            n = arr2.shape[0]
            values = {name: arr2[:, i] for i, name in enumerate(names)}
        bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
        if bad:
            raise InputError("joint values are NaN or infinite for %s" % ", ".join(sorted(bad)))
        return values, n, batched

    def _value(self, joint: _Joint, values: Dict[str, np.ndarray], n: int, depth: int = 0):
        if joint.mimic is not None:
            if depth > len(self._joints):
                raise ConfigError("URDF %s: mimic cycle through joint %r"
                                  % (self.urdf_path, joint.name))
            master, mult, offset = joint.mimic
            return mult * self._value(self._joints[master], values, n, depth + 1) + offset
        v = values.get(joint.name)
        return np.zeros(n) if v is None else v

    # ------------------------------------------------------------------ forward kinematics
    @staticmethod
    def _motion(joint: _Joint, q: np.ndarray) -> np.ndarray:
        """(N, 4, 4) joint motion. Rodrigues, R = I + sin(q) [a]x + (1 - cos(q)) [a]x^2, written
        out by hand because it vectorises over N in three array operations."""
        n = q.shape[0]
        M = np.empty((n, 4, 4))
        M[:, 3, :] = (0.0, 0.0, 0.0, 1.0)
        if joint.type == "prismatic":
            M[:, :3, :3] = np.eye(3)
            M[:, :3, 3] = q[:, None] * joint.axis
            return M
        skew, skew2 = joint.axis_skew
        M[:, :3, :3] = (np.eye(3) + np.sin(q)[:, None, None] * skew
                        + (1.0 - np.cos(q))[:, None, None] * skew2)
        M[:, :3, 3] = 0.0
        return M

    def _root_transforms(self, links: Tuple[str, ...], values, n) -> Dict[str, np.ndarray]:
        """{link: (N, 4, 4) root_T_link} for the links of the chain (root included)."""
        chain = self._chain(links)
        eye = np.broadcast_to(np.eye(4), (n, 4, 4))
        out: Dict[str, np.ndarray] = {}
        for j in chain:
            parent = out.get(j.parent, eye)
            T = parent @ j.origin                       # (N,4,4) @ (4,4)
            if j.type != "fixed":
                T = T @ self._motion(j, self._value(j, values, n))
            out[j.child] = T
        for link in links + (self.base_frame,):
            out.setdefault(link, eye)                   # the URDF root itself
        return out

    def _base_transforms(self, links: Tuple[str, ...], joints):
        values, n, batched = self._joint_values(joints)
        root_T = self._root_transforms(links, values, n)
        base = root_T[self.base_frame]
        if self.base_frame in self._parent_joint:   # base is not the URDF root: re-express
            Rt = np.transpose(base[:, :3, :3], (0, 2, 1))
            base_inv = np.zeros_like(base)
            base_inv[:, :3, :3] = Rt
            base_inv[:, :3, 3] = -np.einsum("nij,nj->ni", Rt, base[:, :3, 3])
            base_inv[:, 3, 3] = 1.0
            return {l: base_inv @ root_T[l] for l in links}, batched
        return {l: root_T[l] for l in links}, batched

    def link_transforms(self, joints, links: Optional[Iterable[str]] = None
                        ) -> Dict[str, np.ndarray]:
        """{link: base_T_link}: 4x4 for one configuration, (N, 4, 4) for a batch. ``links``
        defaults to every link of the URDF."""
        links_t = tuple(self.link_names if links is None else links)
        T, batched = self._base_transforms(links_t, joints)
        if batched:
            return {l: np.array(T[l]) for l in links_t}
        return {l: np.array(T[l][0]) for l in links_t}

    def keypoint_frames(self, joints) -> np.ndarray:
        """base_T_keypoint: each keypoint's link frame moved to the keypoint (its offset), (K, 4, 4)
        for one configuration, (N, K, 4, 4) for a batch. Overlays draw these as axes."""
        links_t = tuple(dict.fromkeys(self._keypoint_links))
        T, batched = self._base_transforms(links_t, joints)
        stack = np.stack([T[l] for l in self._keypoint_links], axis=1)     # (N, K, 4, 4)
        stack[:, :, :3, 3] += np.einsum("nkij,kj->nki", stack[:, :, :3, :3], self._keypoint_offsets)
        return stack if batched else stack[0]

    def keypoint_chain_order(self) -> List[int]:
        """Keypoint indices from the base to the tip of the kinematic tree: by the number of
        joints between the URDF root and the keypoint's link, then by the offset's length (a
        point further along its link comes later). Configs may list keypoints in any order
        (panda_extended lists DREAM's seven first); the zoom pass's half-arm crops need this one.
        """
        depth = [len(self._root_path(link)) for link in self._keypoint_links]
        reach = np.linalg.norm(self._keypoint_offsets, axis=1)
        return sorted(range(self.num_keypoints), key=lambda k: (depth[k], reach[k], k))

    def keypoints_3d(self, joints) -> np.ndarray:
        """Keypoints in the base frame: (K, 3) for one configuration, (N, K, 3) for a batch."""
        return self.keypoint_frames(joints)[..., :3, 3]
