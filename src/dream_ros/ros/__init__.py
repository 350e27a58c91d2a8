"""The ROS layer: the only place that imports rospy."""
