"""Forward kinematics: Panda against Franka's published modified DH parameters, a hand-written
URDF with prismatic, continuous, mimic and fixed joints in a tree, and input/config errors."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from dream_ros.errors import ConfigError, InputError
from dream_ros.robot import RobotModel

# Franka Emika Panda, modified (Craig) DH parameters as published by Franka:
# (a [m], d [m], alpha [rad]) for joints 1..7, then the flange (panda_link8, d = 0.107).
PANDA_MDH = [(0.0, 0.333, 0.0), (0.0, 0.0, -np.pi / 2), (0.0, 0.316, np.pi / 2),
             (0.0825, 0.0, np.pi / 2), (-0.0825, 0.384, -np.pi / 2), (0.0, 0.0, np.pi / 2),
             (0.088, 0.0, np.pi / 2)]
FLANGE_D = 0.107


def mdh(a, d, alpha, theta):
    """Batched modified-DH transform RotX(alpha) TransX(a) RotZ(theta) TransZ(d)."""
    n = theta.shape[0]
    ca, sa = np.cos(alpha), np.sin(alpha)
    ct, st = np.cos(theta), np.sin(theta)
    T = np.zeros((n, 4, 4))
    T[:, 0, 0], T[:, 0, 1], T[:, 0, 3] = ct, -st, a
    T[:, 1, 0], T[:, 1, 1], T[:, 1, 2], T[:, 1, 3] = st * ca, ct * ca, -sa, -sa * d
    T[:, 2, 0], T[:, 2, 1], T[:, 2, 2], T[:, 2, 3] = st * sa, ct * sa, ca, ca * d
    T[:, 3, 3] = 1.0
    return T


def panda_dh_frames(q):
    """{panda_link1..8, panda_hand: (N,4,4) base_T_link} from the DH table (independent of the
    URDF)."""
    n = q.shape[0]
    T = np.broadcast_to(np.eye(4), (n, 4, 4))
    out = {}
    for i, (a, d, alpha) in enumerate(PANDA_MDH):
        T = T @ mdh(a, d, alpha, q[:, i])
        out["panda_link%d" % (i + 1)] = T
    T = T @ mdh(0.0, FLANGE_D, 0.0, np.zeros(n))
    out["panda_link8"] = T
    c, s = np.cos(-np.pi / 4), np.sin(-np.pi / 4)
    hand = np.eye(4)
    hand[:2, :2] = [[c, -s], [s, c]]
    out["panda_hand"] = T @ hand
    return out


@pytest.fixture(scope="module")
def panda():
    return RobotModel.load("panda")


def test_panda_description(panda):
    assert panda.name == "panda"
    assert panda.base_frame == "panda_link0"
    assert panda.joint_names == ["panda_joint%d" % i for i in range(1, 8)]
    assert panda.keypoint_names == ["panda_link0", "panda_link2", "panda_link3", "panda_link4",
                                    "panda_link6", "panda_link7", "panda_hand"]
    lo, hi = panda.joint_limits()
    assert lo.shape == hi.shape == (7,)
    assert np.allclose(lo[[0, 3, 5]], [-2.8973, -3.0718, -0.0175])
    assert np.allclose(hi[[0, 3, 5]], [2.8973, -0.0698, 3.7525])


def test_panda_fk_matches_dh_over_1000_configurations(panda):
    rng = np.random.default_rng(0)
    lo, hi = panda.joint_limits()
    q = rng.uniform(lo, hi, size=(1000, 7))
    ref = panda_dh_frames(q)
    links = list(ref)
    got = panda.link_transforms(q, links=links)
    for link in links:
        assert got[link].shape == (1000, 4, 4)
        assert np.max(np.abs(got[link][:, :3, 3] - ref[link][:, :3, 3])) < 1e-6, link
        assert np.max(np.abs(got[link][:, :3, :3] - ref[link][:, :3, :3])) < 1e-9, link
    kp = panda.keypoints_3d(q)
    assert kp.shape == (1000, 7, 3)
    ref_kp = np.stack([np.zeros((1000, 3))] + [ref[n][:, :3, 3] for n in panda.keypoint_names[1:]],
                      axis=1)
    assert np.max(np.linalg.norm(kp - ref_kp, axis=2)) < 1e-6


def test_single_batch_and_dict_inputs_agree(panda):
    rng = np.random.default_rng(1)
    lo, hi = panda.joint_limits()
    q = rng.uniform(lo, hi, size=(5, 7))
    batch = panda.keypoints_3d(q)
    for i in range(5):
        single = panda.keypoints_3d(q[i])
        as_dict = panda.keypoints_3d(dict(zip(panda.joint_names, q[i]),
                                          some_other_robot_joint=3.0))   # extra names ignored
        assert single.shape == (7, 3)
        assert np.allclose(single, batch[i], atol=1e-12)
        assert np.allclose(as_dict, single, atol=1e-12)
    dict_batch = panda.keypoints_3d({n: q[:, i] for i, n in enumerate(panda.joint_names)})
    assert np.allclose(dict_batch, batch, atol=1e-12)
    single_T = panda.link_transforms(q[0], links=["panda_hand"])["panda_hand"]
    assert single_T.shape == (4, 4)


def test_all_links_and_fingers(panda):
    q = dict(zip(panda.joint_names, np.zeros(7)))
    T = panda.link_transforms(q)
    assert set(T) == set(panda.link_names)
    assert np.allclose(T["panda_link0"], np.eye(4))
    # Fingers (not in joint_names) default to 0 and move when given; finger 2 mimics finger 1.
    opened = panda.link_transforms(dict(q, panda_finger_joint1=0.04),
                                   links=["panda_leftfinger", "panda_rightfinger"])
    gap = np.linalg.norm(opened["panda_leftfinger"][:3, 3] - opened["panda_rightfinger"][:3, 3])
    assert gap == pytest.approx(0.08, abs=1e-12)
    closed = np.linalg.norm(T["panda_leftfinger"][:3, 3] - T["panda_rightfinger"][:3, 3])
    assert closed == pytest.approx(0.0, abs=1e-12)


def test_input_errors_name_the_problem(panda):
    q = dict(zip(panda.joint_names, np.zeros(7)))
    with pytest.raises(InputError, match="panda_joint3"):
        panda.keypoints_3d({k: v for k, v in q.items() if k != "panda_joint3"})
    with pytest.raises(InputError, match="NaN"):
        panda.keypoints_3d(dict(q, panda_joint2=float("nan")))
    with pytest.raises(InputError, match="NaN"):
        panda.keypoints_3d(np.array([0, 0, np.nan, 0, 0, 0, 0.0]))
    with pytest.raises(InputError, match=r"shape \(7,\) or \(N, 7\)"):
        panda.keypoints_3d(np.zeros(6))
    with pytest.raises(InputError, match=r"shape \(7,\) or \(N, 7\)"):
        panda.keypoints_3d(np.zeros((2, 3, 7)))
    with pytest.raises(InputError, match="not_a_link"):
        panda.link_transforms(q, links=["panda_hand", "not_a_link"])
    with pytest.raises(InputError, match="2 values but other joints have 3"):
        panda.keypoints_3d(dict(q, panda_joint2=np.zeros(3), panda_joint4=np.zeros(2)))
    with pytest.raises(InputError, match="not a number"):
        panda.keypoints_3d(dict(q, panda_joint1="abc"))


TOY_URDF = textwrap.dedent("""\
    <?xml version="1.0"?>
    <robot name="toy">
      <link name="world"/>
      <link name="base"/>
      <link name="arm"/>
      <link name="slider"/>
      <link name="slider_mirror"/>
      <link name="tip"/>
      <link name="wheel"/>
      <joint name="world_to_base" type="fixed">
        <parent link="world"/><child link="base"/>
        <origin xyz="1 2 3" rpy="0 0 1.5707963267948966"/>
      </joint>
      <joint name="yaw" type="revolute">
        <parent link="base"/><child link="arm"/>
        <origin xyz="0 0 0.5" rpy="0 0 0"/>
        <axis xyz="0 0 1"/>
        <limit lower="-1" upper="1.5" effort="1" velocity="1"/>
      </joint>
      <joint name="slide" type="prismatic">
        <parent link="arm"/><child link="slider"/>
        <origin xyz="0.2 0 0" rpy="1.5707963267948966 0 0"/>
        <axis xyz="2 0 0"/>
        <limit lower="0" upper="0.3" effort="1" velocity="1"/>
      </joint>
      <joint name="slide_mirror" type="prismatic">
        <parent link="arm"/><child link="slider_mirror"/>
        <origin xyz="-0.2 0 0" rpy="0 0 0"/>
        <axis xyz="1 0 0"/>
        <limit lower="-1" upper="1" effort="1" velocity="1"/>
        <mimic joint="slide" multiplier="-2" offset="0.05"/>
      </joint>
      <joint name="tip_fixed" type="fixed">
        <parent link="slider"/><child link="tip"/>
        <origin xyz="0 0 0.1" rpy="0 0 0"/>
      </joint>
      <joint name="spin" type="continuous">
        <parent link="base"/><child link="wheel"/>
        <origin xyz="0 0.3 0" rpy="0 1.5707963267948966 0"/>
        <axis xyz="0 0 1"/>
      </joint>
    </robot>
    """)


def write_toy(tmp_path, base_frame="base", keypoints=None, joints="[yaw, slide]"):
    urdf = tmp_path / "toy.urdf"
    urdf.write_text(TOY_URDF)
    keypoints = keypoints or textwrap.dedent("""\
          - {name: arm, link: arm}
          - {name: tip, link: tip}
          - {name: tip_ahead, link: tip, offset: [0.0, 0.0, 0.05]}
          - {name: mirror, link: slider_mirror}
          - {name: wheel_rim, link: wheel, offset: [0.1, 0.0, 0.0]}
        """)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("name: toy\nurdf: toy.urdf\nbase_frame: %s\njoints: %s\nkeypoints:\n%s"
                   % (base_frame, joints, textwrap.indent(keypoints, "  ")))
    return cfg


def rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def toy_expected(yaw, slide, spin):
    """Keypoints of the toy robot in its 'base' frame, worked out by hand."""
    arm = np.array([0, 0, 0.5])
    Rarm = rot_z(yaw)
    # slider: origin (0.2,0,0) with rpy roll=pi/2 (y->z, z->-y), then translation along x (axis
    # normalised from (2,0,0)) by `slide`.
    Rroll = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    slider_origin = arm + Rarm @ np.array([0.2, 0, 0])
    slider_R = Rarm @ Rroll
    slider = slider_origin + slider_R @ np.array([slide, 0, 0])
    tip = slider + slider_R @ np.array([0, 0, 0.1])
    tip_ahead = tip + slider_R @ np.array([0, 0, 0.05])
    mirror = arm + Rarm @ np.array([-0.2 + (-2 * slide + 0.05), 0, 0])
    # wheel: origin (0,0.3,0) pitched by pi/2 (x->-z), then spin about its z: rim point (0.1,0,0)
    Rpitch = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0.0]])
    wheel_rim = np.array([0, 0.3, 0]) + Rpitch @ rot_z(spin) @ np.array([0.1, 0, 0])
    return np.array([arm, tip, tip_ahead, mirror, wheel_rim])


def test_toy_prismatic_mimic_continuous_tree(tmp_path):
    robot = RobotModel.load(write_toy(tmp_path))
    assert robot.keypoint_names == ["arm", "tip", "tip_ahead", "mirror", "wheel_rim"]
    rng = np.random.default_rng(2)
    for _ in range(20):
        yaw, slide, spin = rng.uniform(-3, 3), rng.uniform(0, 0.3), rng.uniform(-6, 6)
        got = robot.keypoints_3d({"yaw": yaw, "slide": slide, "spin": spin,
                                  "slide_mirror": 123.0})   # mimic joints follow their master
        assert np.allclose(got, toy_expected(yaw, slide, spin), atol=1e-12)
    # continuous joints default to 0 when not given
    assert np.allclose(robot.keypoints_3d(np.array([0.3, 0.1])), toy_expected(0.3, 0.1, 0.0),
                       atol=1e-12)
    lo, hi = robot.joint_limits()
    assert np.allclose(lo, [-1, 0]) and np.allclose(hi, [1.5, 0.3])


def test_toy_base_frame_below_the_root(tmp_path):
    """The base frame need not be the URDF root: everything is re-expressed in it."""
    in_base = RobotModel.load(write_toy(tmp_path, base_frame="base"))
    in_arm = RobotModel.load(write_toy(tmp_path, base_frame="arm"))
    q = np.array([0.7, 0.2])
    T_base = in_base.link_transforms(q)
    T_arm = in_arm.link_transforms(q)
    assert np.allclose(T_arm["arm"], np.eye(4), atol=1e-12)
    arm_T_base = np.linalg.inv(T_base["arm"])
    for link in ("tip", "wheel", "world", "slider_mirror"):
        assert np.allclose(T_arm[link], arm_T_base @ T_base[link], atol=1e-12), link
    assert np.allclose(T_base["world"][:3, 3], -rot_z(np.pi / 2).T @ [1, 2, 3], atol=1e-12)


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nowhere"):
        RobotModel.load(write_toy(tmp_path, keypoints="- {name: x, link: nowhere}\n"))
    with pytest.raises(ConfigError, match="no_such_base"):
        RobotModel.load(write_toy(tmp_path, base_frame="no_such_base"))
    with pytest.raises(ConfigError, match="elbow"):
        RobotModel.load(write_toy(tmp_path, joints="[yaw, elbow]"))
    with pytest.raises(ConfigError, match="tip_fixed"):
        RobotModel.load(write_toy(tmp_path, joints="[yaw, tip_fixed]"))
    with pytest.raises(ConfigError, match="slide_mirror"):
        RobotModel.load(write_toy(tmp_path, joints="[yaw, slide_mirror]"))
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot name='x'><link name='a'></robot>")
    with pytest.raises(ConfigError, match="bad.urdf"):
        RobotModel.load(write_toy(tmp_path), urdf_path=bad)
    with pytest.raises(ConfigError, match="panda_link2"):   # a URDF without the configured links
        RobotModel.load("panda", urdf_path=tmp_path / "toy.urdf")


def test_urdf_override(tmp_path, panda):
    copy = tmp_path / "panda_copy.urdf"
    copy.write_text(panda.urdf_path.read_text())
    other = RobotModel.load("panda", urdf_path=copy)
    assert other.urdf_path == copy
    q = np.linspace(-0.5, 0.5, 7)
    assert np.allclose(other.keypoints_3d(q), panda.keypoints_3d(q))


def test_panda_extended_config(panda):
    ext = RobotModel.load("panda_extended")
    assert ext.num_keypoints > panda.num_keypoints
    assert ext.keypoint_names[:7] == panda.keypoint_names
    rng = np.random.default_rng(3)
    lo, hi = panda.joint_limits()
    q = rng.uniform(lo, hi, size=(50, 7))
    kp = ext.keypoints_3d(q)
    assert kp.shape == (50, ext.num_keypoints, 3)
    assert np.allclose(kp[:, :7], panda.keypoints_3d(q), atol=1e-12)
    T = ext.link_transforms(q)
    for i, spec in enumerate(ext.config.keypoints):
        expect = np.einsum("nij,j->ni", T[spec.link][:, :3, :3], spec.offset) + T[spec.link][:, :3, 3]
        assert np.allclose(kp[:, i], expect, atol=1e-12), spec.name


def test_panda_dense_extends_panda_extended_with_distinct_points(panda):
    """panda_dense must list panda_extended's 11 first (so `train --init` grows an 11-map model
    into it) and its points must be apart: two keypoints a few cm apart teach the net nothing."""
    ext, dense = RobotModel.load("panda_extended"), RobotModel.load("panda_dense")
    assert dense.num_keypoints == 18
    assert dense.keypoint_names[:ext.num_keypoints] == ext.keypoint_names
    lo, hi = panda.joint_limits()
    kp = dense.keypoints_3d(np.random.default_rng(5).uniform(lo, hi, size=(200, 7)))
    gaps = np.median(np.linalg.norm(kp[:, :, None] - kp[:, None], axis=3), axis=0)
    np.fill_diagonal(gaps, np.inf)
    # link1/link2 and link5/link6 pairs of DREAM's own keypoints are closer; the added ones are not
    assert gaps[ext.num_keypoints:].min() > 0.065


def test_chain_order_runs_from_base_to_tip_whatever_the_listing_order(panda):
    assert panda.keypoint_chain_order() == list(range(7))
    ext = RobotModel.load("panda_extended")
    order = [ext.keypoint_names[k] for k in ext.keypoint_chain_order()]
    assert order == ["panda_link0", "panda_shoulder_column", "panda_link2", "panda_upper_arm",
                     "panda_link3", "panda_link4", "panda_forearm", "panda_link6", "panda_link7",
                     "panda_hand", "panda_hand_tcp"]
    # at the zero pose, each keypoint is farther from the base along the arm than the one before
    kp = ext.keypoints_3d(np.zeros(7))[ext.keypoint_chain_order()]
    assert (np.linalg.norm(np.diff(kp, axis=0), axis=1) > 0.01).all()


def test_every_shipped_robot_config_loads_and_has_finite_fk():
    from dream_ros.robot_config import available_robots
    names = available_robots()
    assert "panda" in names and "panda_extended" in names
    rng = np.random.default_rng(4)
    for name in names:
        robot = RobotModel.load(name)
        lo, hi = robot.joint_limits()
        assert lo.shape == (len(robot.joint_names),) and np.all(lo < hi), name
        kp = robot.keypoints_3d(rng.uniform(lo, hi, size=(20, len(lo))))
        assert kp.shape == (20, robot.num_keypoints, 3) and np.all(np.isfinite(kp)), name


def test_urdf_rpy_convention():
    """URDF rpy = fixed axes: R = Rz(yaw) Ry(pitch) Rx(roll)."""
    from dream_ros.robot import _rpy_matrix
    r, p, y = 0.3, -1.1, 2.5
    Rx = np.array([[1, 0, 0], [0, np.cos(r), -np.sin(r)], [0, np.sin(r), np.cos(r)]])
    Ry = np.array([[np.cos(p), 0, np.sin(p)], [0, 1, 0], [-np.sin(p), 0, np.cos(p)]])
    assert np.allclose(_rpy_matrix([r, p, y]), rot_z(y) @ Ry @ Rx, atol=1e-12)
