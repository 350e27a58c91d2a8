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

VALID = ("file", "parent_frame", "child_frame")


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
    broadcaster = tf2_ros.StaticTransformBroadcaster()
    broadcaster.sendTransform(transform_stamped(cal.tf_parent_T_child, parent, child,
                                                rospy.Time.now()))
    rospy.loginfo("publish_calibration: %s -> %s from %s (%d frames, saved %s)"
                  % (parent, child, cal.path, cal.frames_used, cal.date))
    rospy.spin()
