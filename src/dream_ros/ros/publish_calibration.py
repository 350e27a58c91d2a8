"""publish_calibration: a saved calibration YAML -> static TF, without the network running.

Parameter ``~file`` (required): a file written by dream_node's ~save or
``dream_ros.calibration.save_calibration``. The file is validated first (both transform directions
must agree, quaternions must be unit); a corrupt file is refused with a fatal error naming it.
Optional ``~parent_frame`` / ``~child_frame`` override the saved frame names.
"""
from __future__ import annotations

import sys

from ..calibration import load_calibration
from ..errors import ConfigError

VALID = ("file", "parent_frame", "child_frame", "check_existing_s")


def main(argv=None) -> None:
    import rospy
    import tf2_ros
    from .conversions import transform_stamped

    rospy.init_node("publish_calibration")
    name = rospy.get_name().rstrip("/") + "/"
    unknown = sorted({n[len(name):].split("/")[0] for n in rospy.get_param_names()
                      if n.startswith(name)} - set(VALID))
    try:
        if unknown:
            raise ConfigError("unknown parameter(s) %s; valid: %s"
                              % (", ".join(unknown), ", ".join(VALID)))
        path = rospy.get_param("~file", "")
        if not path:
            raise ConfigError("~file is required: the calibration YAML to publish "
                              "(written by dream_node's ~save)")
        cal = load_calibration(path)
    except ConfigError as exc:
        rospy.logfatal("publish_calibration: %s" % exc)
        sys.stderr.write("publish_calibration: fatal: %s\n" % exc)
        sys.exit(2)
    parent = rospy.get_param("~parent_frame", "") or cal.tf_parent
    child = rospy.get_param("~child_frame", "") or cal.tf_child
    problem = _existing_parent(child, float(rospy.get_param("~check_existing_s", 1.5)))
    if problem:
        rospy.logfatal("publish_calibration: %s" % problem)
        sys.stderr.write("publish_calibration: fatal: %s\n" % problem)
        sys.exit(2)
    broadcaster = tf2_ros.StaticTransformBroadcaster()
    broadcaster.sendTransform(transform_stamped(cal.tf_parent_T_child, parent, child,
                                                rospy.Time.now()))
    rospy.loginfo("publish_calibration: %s -> %s from %s (%d frames, saved %s)"
                  % (parent, child, cal.path, cal.frames_used, cal.date))
    rospy.spin()


def _existing_parent(child: str, listen_s: float) -> str:
    """Listen to TF for ``listen_s`` seconds; a problem text if ``child`` already has a parent
    (a frame must not get a second one: dream_node still running? another calibration?)."""
    if listen_s <= 0:
        return ""
    import time
    import rospy
    import tf2_ros
    import yaml
    buf = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buf)
    time.sleep(listen_s)
    listener.unregister()
    try:
        table = yaml.safe_load(buf.all_frames_as_yaml()) or {}
    except Exception:
        table = {}
    entry = table.get(child) if isinstance(table, dict) else None
    if isinstance(entry, dict) and entry.get("parent"):
        return ("frame %r already has parent %r (published by %s): publishing the calibration "
                "would give it a second parent; stop that publisher (dream_node still running?) "
                "or set ~child_frame" % (child, entry["parent"], entry.get("broadcaster", "?")))
    return ""
