"""URDF -> MuJoCo scene, built programmatically with ``MjSpec``.

MuJoCo cannot read COLLADA and its URDF importer drops visual geometry, so we parse the URDF with
urdf_parser_py, load every visual mesh with trimesh (pycollada for DAE) and hand the triangles to
the spec in memory: one geom per sub-mesh, so each keeps its material colour. Collision meshes go
into an invisible geom group used only for the self-collision / floor test of random poses.

The scene is independent of any randomization: ``RobotScene`` exposes joints, keypoints, the
camera, lights, colours and (optional) distractor slots; ``randomize.py`` decides values.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import ConfigError, InputError
from ..resources import resolve_uri
from ..robot_config import RobotConfig, load_robot_config

VISUAL_GROUP = 0       # robot visual geoms (rendered)
DISTRACTOR_GROUP = 1   # distractor objects (rendered)
MARKER_GROUP = 2       # keypoint marker spheres (rendered only when asked)
COLLISION_GROUP = 3    # robot collision geoms + floor (never rendered)

ROBOT_MATERIAL = "robot_surface"
DISTRACTOR_MATERIAL = "distractor_surface"
SUPPORT_MATERIAL = "support_surface"
# What the robot stands on in "table scenes" (Randomizer.apply_support): a table top and a mounting
# plate under the base. Rendered like distractors; parked far below the floor when unused.
SUPPORT_GEOMS = ("support_table", "support_plate")
DISTRACTOR_TYPES = ("box", "sphere", "cylinder", "capsule", "ellipsoid")
CACHE_DIR = Path(os.environ.get("DREAM_ROS_CACHE", Path.home() / ".cache" / "dream_ros")) / "meshes"


def _mj():
    # mujoco picks its GL backend at import: default to headless EGL unless the user chose one
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco  # heavy; imported lazily so `--help` stays fast
    return mujoco


def _quat_wxyz(R: np.ndarray) -> List[float]:
    x, y, z, w = Rotation.from_matrix(R).as_quat()
    return [float(w), float(x), float(y), float(z)]


def _origin_matrix(origin) -> np.ndarray:
    T = np.eye(4)
    if origin is None:
        return T
    if origin.rpy is not None:
        T[:3, :3] = Rotation.from_euler("xyz", origin.rpy).as_matrix()   # URDF rpy = fixed-axis XYZ
    if origin.xyz is not None:
        T[:3, 3] = origin.xyz
    return T


@dataclass
class SubMesh:
    vertices: np.ndarray    # (V,3) float, in the visual's frame (scale applied)
    faces: np.ndarray       # (F,3) int
    rgba: np.ndarray        # (4,) float


def _material_rgba(visual_geom, default) -> np.ndarray:
    """Base colour of a trimesh sub-mesh (PBR baseColorFactor, simple diffuse or vertex colours)."""
    vis = visual_geom.visual
    try:
        if getattr(vis, "kind", None) == "vertex":
            return np.asarray(vis.vertex_colors, float).mean(axis=0) / 255.0
        mat = getattr(vis, "material", None)
        if mat is not None:
            c = getattr(mat, "baseColorFactor", None)
            if c is None:
                c = getattr(mat, "diffuse", None)
            if c is None:
                c = mat.main_color
            c = np.asarray(c, float).reshape(-1)
            if c.max() > 1.0:
                c = c / 255.0
            if c.size == 3:
                c = np.append(c, 1.0)
            if c.size == 4:
                return c
    except Exception:   # odd material exports: fall back to the URDF colour
        pass
    return np.asarray(default, float)


def load_mesh_parts(path: Path, scale, default_rgba) -> List[SubMesh]:
    """All sub-meshes of a mesh file, baked into the file's root frame, with their colours.
    Cached as .npz keyed by the file's path, size and mtime (DAE parsing is the slow part)."""
    scale = np.ones(3) if scale is None else np.broadcast_to(np.asarray(scale, float), (3,))
    st = path.stat()
    key = hashlib.sha1(("%s|%d|%d|%s|%s" % (path.resolve(), st.st_size, int(st.st_mtime), list(scale),
                                            list(default_rgba))).encode()).hexdigest()[:16]
    cache = CACHE_DIR / ("%s_%s.npz" % (path.stem, key))
    if cache.exists():
        try:
            z = np.load(cache)
            n = int(z["n"])
            return [SubMesh(z["v%d" % i], z["f%d" % i], z["c%d" % i]) for i in range(n)]
        except Exception:
            pass
    import trimesh   # only on a cache miss: importing it costs seconds
    loaded = trimesh.load(str(path), force="scene")
    parts = []
    for node in loaded.graph.nodes_geometry:
        T, gname = loaded.graph[node]
        g = loaded.geometry[gname]
        if not hasattr(g, "faces") or len(g.faces) == 0:
            continue
        v = (np.c_[g.vertices, np.ones(len(g.vertices))] @ np.asarray(T).T)[:, :3] * scale
        parts.append(SubMesh(v.astype(np.float64), np.asarray(g.faces, np.int32),
                             _material_rgba(g, default_rgba)))
    if not parts:
        raise ConfigError("mesh %s has no triangles" % path)
    try:   # atomic cache write; failure to cache is harmless
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(".%s.%d.npz" % (cache.stem, os.getpid()))
        arrays = {"n": np.array(len(parts))}
        for i, p in enumerate(parts):
            arrays.update({"v%d" % i: p.vertices, "f%d" % i: p.faces, "c%d" % i: p.rgba})
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass
    return parts


@dataclass
class JointInfo:
    name: str
    qpos_adr: int
    lower: float
    upper: float


@dataclass
class SceneInfo:
    """What RobotScene needs to know about the compiled model, by name."""
    joints: List[str] = field(default_factory=list)                 # actuated, in model order
    limits: Dict[str, Tuple[float, float]] = field(default_factory=dict)
    mimic: Dict[str, Tuple[str, float, float]] = field(default_factory=dict)   # name -> (src, mult, off)
    robot_visual_geoms: List[str] = field(default_factory=list)
    link_of_geom: Dict[str, str] = field(default_factory=dict)
    root_link: str = ""


def _parse_urdf(path: Path):
    from urdf_parser_py.urdf import URDF
    import io
    import contextlib
    try:
        with contextlib.redirect_stderr(io.StringIO()):   # urdf_parser_py warns on unknown tags
            return URDF.from_xml_string(path.read_bytes())
    except Exception as exc:
        raise ConfigError("cannot parse URDF %s: %s" % (path, exc))


def distractor_meshes(n: int, seed: int = 12345) -> List[SubMesh]:
    """``n`` small objects from pybullet_data's random_urdfs (zlib licence), each centred and
    scaled to a radius of 4-14 cm (MuJoCo cannot rescale a mesh at run time, so the size is
    fixed per slot). Empty if pybullet_data is not installed."""
    from ..resources import find_package_dir
    base = find_package_dir("pybullet_data")
    if n <= 0 or base is None or not (base / "random_urdfs").is_dir():
        return []
    rng = np.random.default_rng(seed)
    out = []
    for idx in rng.choice(1000, size=n, replace=False):
        path = base / "random_urdfs" / ("%03d" % idx) / ("%03d.obj" % idx)
        if not path.exists():
            continue
        parts = load_mesh_parts(path, None, [0.6, 0.6, 0.6, 1.0])
        v = np.concatenate([p.vertices for p in parts])
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        f = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
        v = v - 0.5 * (v.min(axis=0) + v.max(axis=0))
        v = v * (rng.uniform(0.04, 0.14) / max(np.linalg.norm(v, axis=1).max(), 1e-9))
        out.append(SubMesh(v, f.astype(np.int32), np.array([0.6, 0.6, 0.6, 1.0])))
    return out


def build_spec(config: RobotConfig, n_distractors: int = 0, markers: bool = False,
               max_width: int = 1920, max_height: int = 1080, floor: bool = True, msaa: int = 0,
               n_mesh_distractors: int = 0):
    """MjSpec of the robot (root link at the world origin), a camera "cam", two lights, an
    invisible floor plane, ``n_distractors`` mocap distractor bodies and, optionally, one small
    marker sphere per keypoint (group MARKER_GROUP)."""
    mujoco = _mj()
    urdf_path = config.urdf_path
    robot = _parse_urdf(urdf_path)
    spec = mujoco.MjSpec()
    spec.modelname = config.name
    spec.compiler.inertiafromgeom = mujoco.mjtInertiaFromGeom.mjINERTIAFROMGEOM_FALSE
    spec.compiler.autolimits = True
    spec.compiler.degree = False                # URDF joint limits are radians
    spec.visual.global_.offwidth = int(max_width)
    spec.visual.global_.offheight = int(max_height)
    spec.visual.quality.offsamples = int(msaa)  # default 0: 2.5x cheaper; edges softened at compositing
    spec.visual.map.znear = 0.01                # fraction of extent: near plane close for close-ups
    spec.visual.map.zfar = 50.0
    spec.stat.extent = 2.0
    spec.stat.center = [0, 0, 0.5]
    spec.visual.headlight.active = 0

    materials = {}
    for m in getattr(robot, "materials", []) or []:
        if m.color is not None:
            materials[m.name] = np.asarray(m.color.rgba, float)

    # One shared surface material per object class, so specular/shininess can be randomized per
    # frame; the geoms' own rgba still sets their colour (MuJoCo uses a non-default geom rgba).
    spec.add_material(name=ROBOT_MATERIAL, specular=0.5, shininess=0.5)
    spec.add_material(name=DISTRACTOR_MATERIAL, specular=0.5, shininess=0.5)
    spec.add_material(name=SUPPORT_MATERIAL, specular=0.2, shininess=0.2)
    info = SceneInfo(root_link=robot.get_root())
    children: Dict[str, list] = {}
    for j in robot.joints:
        children.setdefault(j.parent, []).append(j)
    links = {l.name: l for l in robot.links}

    def add_link_geoms(body, link):
        for vi, vis in enumerate(link.visuals or []):
            T = _origin_matrix(vis.origin)
            rgba = np.array([0.7, 0.7, 0.7, 1.0])
            if vis.material is not None:
                if vis.material.color is not None:
                    rgba = np.asarray(vis.material.color.rgba, float)
                elif vis.material.name in materials:
                    rgba = materials[vis.material.name]
            for gi, (kind, payload, prgba, Tg) in enumerate(_visual_parts(vis.geometry, T, rgba, urdf_path)):
                gname = "%s/v%d_%d" % (link.name, vi, gi)
                prgba = _not_default_rgba(prgba)
                if kind == "mesh":
                    mname = "m:" + gname
                    _add_mesh(spec, mname, payload)
                    body.add_geom(name=gname, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=mname,
                                  rgba=prgba, group=VISUAL_GROUP, contype=0, conaffinity=0,
                                  material=ROBOT_MATERIAL)
                else:
                    body.add_geom(name=gname, type=kind, size=payload, rgba=prgba,
                                  pos=Tg[:3, 3], quat=_quat_wxyz(Tg[:3, :3]),
                                  group=VISUAL_GROUP, contype=0, conaffinity=0,
                                  material=ROBOT_MATERIAL)
                info.robot_visual_geoms.append(gname)
                info.link_of_geom[gname] = link.name
        for ci, col in enumerate(link.collisions or []):
            T = _origin_matrix(col.origin)
            for gi, (kind, payload, _, Tg) in enumerate(_visual_parts(col.geometry, T, None, urdf_path)):
                gname = "%s/c%d_%d" % (link.name, ci, gi)
                if kind == "mesh":
                    mname = "m:" + gname
                    _add_mesh(spec, mname, payload)
                    body.add_geom(name=gname, type=mujoco.mjtGeom.mjGEOM_MESH, meshname=mname,
                                  group=COLLISION_GROUP, contype=1, conaffinity=1, rgba=[1, 0, 0, 0])
                else:
                    body.add_geom(name=gname, type=kind, size=payload, pos=Tg[:3, 3],
                                  quat=_quat_wxyz(Tg[:3, :3]), group=COLLISION_GROUP,
                                  contype=1, conaffinity=1, rgba=[1, 0, 0, 0])

    def add_body(parent_body, link_name, T_parent_link, joint=None):
        body = parent_body.add_body(name=body_name(link_name), pos=T_parent_link[:3, 3],
                                    quat=_quat_wxyz(T_parent_link[:3, :3]), mass=0.1,
                                    inertia=[1e-3, 1e-3, 1e-3])
        if joint is not None and joint.type in ("revolute", "continuous", "prismatic"):
            axis = joint.axis if joint.axis is not None else [1.0, 0.0, 0.0]
            jt = mujoco.mjtJoint.mjJNT_SLIDE if joint.type == "prismatic" else mujoco.mjtJoint.mjJNT_HINGE
            if joint.type == "continuous" or joint.limit is None:
                lo, hi = -np.pi, np.pi
            else:
                lo, hi = float(joint.limit.lower), float(joint.limit.upper)
            body.add_joint(name=joint.name, type=jt, axis=axis, range=[lo, hi])
            info.limits[joint.name] = (lo, hi)
            if getattr(joint, "mimic", None) is not None:
                m = joint.mimic
                info.mimic[joint.name] = (m.joint, float(m.multiplier if m.multiplier is not None else 1.0),
                                          float(m.offset if m.offset is not None else 0.0))
            else:
                info.joints.append(joint.name)
        elif joint is not None and joint.type not in ("fixed",):
            raise ConfigError("URDF joint %s has unsupported type %r" % (joint.name, joint.type))
        add_link_geoms(body, links[link_name])
        for child in children.get(link_name, []):
            add_body(body, child.child, _origin_matrix(child.origin), child)

    add_body(spec.worldbody, info.root_link, np.eye(4))

    spec.worldbody.add_camera(name="cam", pos=[2, 0, 1], quat=[1, 0, 0, 0], fovy=60)
    for i in range(2):
        spec.worldbody.add_light(name="light%d" % i, pos=[1, 1, 3], dir=[0, 0, -1],
                                 type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                                 diffuse=[0.7, 0.7, 0.7], castshadow=False)
    if floor:
        spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 1],
                                pos=[0, 0, float(config.synth.get("floor_z_m", 0.0))],
                                group=COLLISION_GROUP, contype=2, conaffinity=1, rgba=[0, 0, 0, 0])
    for i in range(n_distractors):
        b = spec.worldbody.add_body(name="distractor%d" % i, mocap=True, pos=[0, 0, -100])
        gtype = getattr(mujoco.mjtGeom, "mjGEOM_" + DISTRACTOR_TYPES[i % len(DISTRACTOR_TYPES)].upper())
        b.add_geom(name="distractor%d" % i, type=gtype, size=[0.05, 0.05, 0.05],
                   group=DISTRACTOR_GROUP, contype=0, conaffinity=0, rgba=[0.6, 0.6, 0.6, 1],
                   material=DISTRACTOR_MATERIAL)
    for name in SUPPORT_GEOMS:
        b = spec.worldbody.add_body(name=name, mocap=True, pos=[0, 0, -100])
        b.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.5, 0.5, 0.01],
                   group=DISTRACTOR_GROUP, contype=0, conaffinity=0, rgba=[0.6, 0.6, 0.6, 1],
                   material=SUPPORT_MATERIAL)
    for i, part in enumerate(distractor_meshes(n_mesh_distractors)):
        b = spec.worldbody.add_body(name="mdistractor%d" % i, mocap=True, pos=[0, 0, -100])
        _add_mesh(spec, "m:mdistractor%d" % i, part)
        b.add_geom(name="mdistractor%d" % i, type=mujoco.mjtGeom.mjGEOM_MESH,
                   meshname="m:mdistractor%d" % i, group=DISTRACTOR_GROUP, contype=0, conaffinity=0,
                   rgba=[0.6, 0.6, 0.6, 1], material=DISTRACTOR_MATERIAL)
    if markers:
        for kp in config.keypoints:
            if kp.link not in links:
                continue
            b = spec.body(body_name(kp.link))
            b.add_geom(name="marker:" + kp.name, type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[0.012, 0, 0],
                       pos=kp.offset, group=MARKER_GROUP, contype=0, conaffinity=0, rgba=[1, 0, 1, 1])
    return spec, info


def _not_default_rgba(rgba):
    # MuJoCo ignores a geom's rgba in favour of its material's when it equals (0.5, 0.5, 0.5, 1)
    rgba = np.asarray(rgba, float).copy()
    if np.allclose(rgba, [0.5, 0.5, 0.5, 1.0]):
        rgba[:3] = 0.501
    return rgba


def _add_mesh(spec, name, part: SubMesh):
    mujoco = _mj()
    mesh = spec.add_mesh(name=name, uservert=part.vertices.reshape(-1).tolist(),
                         userface=part.faces.reshape(-1).tolist())
    mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL   # flat visual meshes have no volume


def body_name(link: str) -> str:
    """MuJoCo body name of a URDF link ("world" is reserved for MuJoCo's own world body)."""
    return "urdf_world" if link == "world" else link


def _visual_parts(geometry, T, rgba, urdf_path):
    """Yield (kind, payload, rgba, T) for a URDF geometry: meshes are baked into T (payload SubMesh),
    primitives give their MuJoCo type and size."""
    mujoco = _mj()
    from urdf_parser_py import urdf as U
    out = []
    if isinstance(geometry, U.Mesh):
        path = resolve_uri(geometry.filename, relative_to=urdf_path.parent)
        # COLLADA files carry their own (usually better) materials; STL/OBJ take the URDF colour
        own = path.suffix.lower() == ".dae"
        for p in load_mesh_parts(path, geometry.scale, rgba if rgba is not None else [0.7, 0.7, 0.7, 1]):
            v = p.vertices @ T[:3, :3].T + T[:3, 3]
            use = p.rgba if (own or rgba is None or _is_default(rgba)) else rgba
            out.append(("mesh", SubMesh(v, p.faces, p.rgba), np.asarray(use, float), T))
    elif isinstance(geometry, U.Box):
        out.append((mujoco.mjtGeom.mjGEOM_BOX, [s / 2.0 for s in geometry.size], rgba, T))
    elif isinstance(geometry, U.Cylinder):
        out.append((mujoco.mjtGeom.mjGEOM_CYLINDER, [geometry.radius, geometry.length / 2.0, 0], rgba, T))
    elif isinstance(geometry, U.Sphere):
        out.append((mujoco.mjtGeom.mjGEOM_SPHERE, [geometry.radius, 0, 0], rgba, T))
    return out


def _is_default(rgba) -> bool:
    return np.allclose(rgba, [0.7, 0.7, 0.7, 1.0])


class RobotScene:
    """A compiled robot scene: set joints, read keypoints, place the camera, lights, colours."""

    def __init__(self, robot: Union[str, Path, RobotConfig], n_distractors: int = 0,
                 markers: bool = False, max_width: int = 1920, max_height: int = 1080, msaa: int = 0,
                 n_mesh_distractors: int = 0):
        mujoco = _mj()
        self.config = robot if isinstance(robot, RobotConfig) else load_robot_config(robot)
        spec, self.info = build_spec(self.config, n_distractors, markers, max_width, max_height,
                                     msaa=msaa, n_mesh_distractors=n_mesh_distractors)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self._ignored = self._artefact_pairs()
        m = self.model
        self.cam_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "cam")
        self.joint_names = list(self.info.joints)
        self.all_joint_names = self.joint_names + list(self.info.mimic)
        self._qadr = {n: int(m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)])
                      for n in self.all_joint_names}
        for n in self.config.joint_names:
            if n not in self._qadr:
                raise ConfigError("robot %s: config joint %r is not a moving joint of %s"
                                  % (self.config.name, n, self.config.urdf_path))
        self.kp_body = []
        for kp in self.config.keypoints:
            bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body_name(kp.link))
            if bid < 0:
                raise ConfigError("robot %s: keypoint %r link %r not in the URDF"
                                  % (self.config.name, kp.name, kp.link))
            self.kp_body.append(bid)
        self.kp_offset = np.stack([kp.offset for kp in self.config.keypoints])
        self.base_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, body_name(self.config.base_frame))
        if self.base_body < 0:
            raise ConfigError("robot %s: base_frame %r not in the URDF" % (self.config.name,
                                                                             self.config.base_frame))
        self.robot_geoms = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g)
                                     for g in self.info.robot_visual_geoms], dtype=int)
        self.true_rgba = m.geom_rgba[self.robot_geoms].copy()
        self.geom_link = [self.info.link_of_geom[g] for g in self.info.robot_visual_geoms]
        self.distractor_geoms = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "distractor%d" % i)
                                          for i in range(n_distractors)], dtype=int)
        self.distractor_mocap = np.array([m.body_mocapid[m.geom_bodyid[g]] for g in self.distractor_geoms],
                                         dtype=int)
        mesh_ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "mdistractor%d" % i)
                    for i in range(n_mesh_distractors)]
        self.mesh_distractor_geoms = np.array([g for g in mesh_ids if g >= 0], dtype=int)
        self.mesh_distractor_mocap = np.array([m.body_mocapid[m.geom_bodyid[g]]
                                               for g in self.mesh_distractor_geoms], dtype=int)
        self.support_geoms = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g)
                                       for g in SUPPORT_GEOMS], dtype=int)
        self.support_mocap = np.array([m.body_mocapid[m.geom_bodyid[g]] for g in self.support_geoms],
                                      dtype=int)
        # geom id -> 0 background / 1 robot / 2 distractor or support (segmentation lookup)
        self.geom_label = np.zeros(m.ngeom + 1, np.uint8)
        self.geom_label[self.robot_geoms] = 1
        self.geom_label[self.distractor_geoms] = 2
        self.geom_label[self.mesh_distractor_geoms] = 2
        self.geom_label[self.support_geoms] = 2
        self.geom_body = np.append(m.geom_bodyid, -1)
        self._mat_robot = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, ROBOT_MATERIAL)
        self._mat_distractor = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, DISTRACTOR_MATERIAL)
        self._mat_support = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_MATERIAL, SUPPORT_MATERIAL)
        self.set_joints({})

    # -- collision filtering --------------------------------------------------------------------
    def _artefact_pairs(self) -> np.ndarray:
        """Signatures (b1 * 2**16 + b2, b1 < b2) of body pairs whose contacts are not real
        self-collisions: MuJoCo collides convex hulls of the collision meshes, which overlap for
        neighbouring links. Filtered in ``in_collision`` (MuJoCo's own <exclude> works on weld
        groups, which would also drop the floor test for links welded to the world)."""
        mujoco = _mj()
        m, d = self.model, mujoco.MjData(self.model)
        pairs = set()

        def contact_pairs():
            mujoco.mj_kinematics(m, d)
            mujoco.mj_collision(m, d)
            out = set()
            for c in d.contact[:d.ncon]:
                b1, b2 = m.geom_bodyid[c.geom1], m.geom_bodyid[c.geom2]
                if b1 != 0 and b2 != 0 and c.dist < -1e-4:
                    out.add((min(b1, b2), max(b1, b2)))
            return out

        # touching at the zero and mid-range poses
        lo, hi = m.jnt_range[:, 0], m.jnt_range[:, 1]
        for q in (np.zeros(m.njnt), 0.5 * (lo + hi)):
            d.qpos[m.jnt_qposadr] = q
            pairs |= contact_pairs()
        # Bodies rigidly attached (fixed joints) form one group; groups one or two moving joints
        # apart touch constantly through their hulls.
        group = list(range(m.nbody))
        for b in range(1, m.nbody):
            p = m.body_parentid[b]
            if m.body_jntnum[b] == 0 and p != 0:
                group[b] = group[p]

        def up(g):   # the moving group above group g (0 for the world)
            return group[m.body_parentid[g]] if g != 0 else 0

        for b1 in range(1, m.nbody):
            for b2 in range(b1 + 1, m.nbody):
                g1, g2 = group[b1], group[b2]
                if g1 == g2 or g1 in (up(g2), up(up(g2))) or g2 in (up(g1), up(up(g1))):
                    pairs.add((b1, b2))
        # touching in most random poses (e.g. Baxter's long forearm hull covers its wrist);
        # a fixed seed makes this the same on every run
        rng = np.random.default_rng(0)
        counts: Dict[Tuple[int, int], int] = {}
        n_samples = 200
        for _ in range(n_samples):
            d.qpos[m.jnt_qposadr] = rng.uniform(lo, hi)
            for pr in contact_pairs():
                counts[pr] = counts.get(pr, 0) + 1
        pairs.update(pr for pr, c in counts.items() if c > 0.4 * n_samples)
        return np.array(sorted(b1 * 65536 + b2 for b1, b2 in pairs), dtype=np.int64)

    # -- state -----------------------------------------------------------------------------------
    def joint_limits(self) -> Tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.info.limits[n][0] for n in self.joint_names])
        hi = np.array([self.info.limits[n][1] for n in self.joint_names])
        return lo, hi

    def set_joints(self, joints: Dict[str, float]) -> Dict[str, float]:
        """Set joint positions (missing joints: 0; mimic joints follow their source); runs FK.
        Returns the full {joint: position} dict actually used."""
        mujoco = _mj()
        unknown = [n for n in joints if n not in self._qadr]
        if unknown:
            raise InputError("unknown joints for %s: %s" % (self.config.name, ", ".join(unknown)))
        q = {n: float(joints.get(n, 0.0)) for n in self.joint_names}
        for n, (src, mult, off) in self.info.mimic.items():
            q[n] = float(joints[n]) if n in joints else q.get(src, 0.0) * mult + off
        for n, v in q.items():
            self.data.qpos[self._qadr[n]] = v
        mujoco.mj_kinematics(self.model, self.data)
        return q

    def forward(self):
        """Recompute poses after changing joints, mocap distractors, the camera or lights
        (cameras and lights are placed by mj_camlight, not by mj_kinematics)."""
        mujoco = _mj()
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def in_collision(self) -> bool:
        """Self-collision or a link through the floor at the current pose (after set_joints)."""
        mujoco = _mj()
        m, d = self.model, self.data
        mujoco.mj_collision(m, d)
        n = d.ncon
        if n == 0:
            return False
        con = d.contact
        deep = con.dist[:n] < -1e-4
        b1, b2 = m.geom_bodyid[con.geom1[:n]], m.geom_bodyid[con.geom2[:n]]
        sig = np.minimum(b1, b2).astype(np.int64) * 65536 + np.maximum(b1, b2)
        return bool(np.any(deep & ~np.isin(sig, self._ignored)))

    def world_T_base(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[self.base_body].reshape(3, 3)
        T[:3, 3] = self.data.xpos[self.base_body]
        return T

    def keypoints_world(self) -> np.ndarray:
        """(K,3) keypoint positions in the world frame: link frame origin + offset in that frame."""
        R = self.data.xmat[self.kp_body].reshape(-1, 3, 3)
        return self.data.xpos[self.kp_body] + np.einsum("kij,kj->ki", R, self.kp_offset)

    # -- camera ----------------------------------------------------------------------------------
    def set_camera(self, world_T_optical: np.ndarray, K: np.ndarray, width: int, height: int):
        """Place camera "cam" at an OpenCV optical-frame pose with intrinsics K for a WxH image.
        MuJoCo cameras look down -z with y up: R_mj = R_optical @ diag(1,-1,-1). Intrinsics go
        through the sensor model (sensor size in pixels), principal point offset from the centre
        in OpenGL's pixel-edge convention (OpenCV's cx refers to pixel centres: +0.5)."""
        m = self.model
        R = world_T_optical[:3, :3] @ np.diag([1.0, -1.0, -1.0])
        m.cam_pos[self.cam_id] = world_T_optical[:3, 3]
        m.cam_quat[self.cam_id] = _quat_wxyz(R)
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        m.cam_sensorsize[self.cam_id] = [width, height]
        m.cam_resolution[self.cam_id] = [width, height]
        # principal point as an offset (pixels) from the sensor centre; MuJoCo's sign is opposite to
        # OpenCV's in both axes (checked with marker spheres in test_synth.py)
        m.cam_intrinsic[self.cam_id] = [fx, fy, width / 2.0 - (cx + 0.5), height / 2.0 - (cy + 0.5)]
        m.cam_fovy[self.cam_id] = np.degrees(2 * np.arctan2(height / 2.0, fy))

    # -- appearance ------------------------------------------------------------------------------
    def set_robot_rgba(self, rgba: Optional[np.ndarray] = None):
        """Per-visual-geom colours (N,4); None restores the true materials."""
        rgba = self.true_rgba if rgba is None else np.array(rgba, float)
        default = np.all(np.abs(rgba - [0.5, 0.5, 0.5, 1.0]) < 1e-6, axis=-1)
        if np.any(default):   # would switch to the material's colour (see _not_default_rgba)
            rgba = np.array(rgba)
            rgba[default, :3] = 0.501
        self.model.geom_rgba[self.robot_geoms] = rgba

    def set_surface(self, specular: float = 0.5, shininess: float = 0.5, distractors: bool = False,
                    support: bool = False):
        """Specular strength and shininess (0..1) of the robot's (or the distractors', or the
        support's) surfaces."""
        mat = (self._mat_support if support else
               self._mat_distractor if distractors else self._mat_robot)
        self.model.mat_specular[mat] = specular
        self.model.mat_shininess[mat] = shininess

    def set_support(self, boxes):
        """Place the support boxes (SUPPORT_GEOMS order): per box None (hidden) or
        (centre (3,), half sizes (3,), rgba (4,), yaw about world z in radians)."""
        m, d = self.model, self.data
        for g, mid, box in zip(self.support_geoms, self.support_mocap, boxes):
            if box is None:
                d.mocap_pos[mid] = [0.0, 0.0, -100.0]
                continue
            centre, half, rgba, yaw = box
            d.mocap_pos[mid] = centre
            d.mocap_quat[mid] = [np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)]
            m.geom_size[g] = half
            m.geom_rbound[g] = float(np.linalg.norm(half))   # culling bound must cover the box
            m.geom_rgba[g] = rgba
