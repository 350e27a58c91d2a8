"""dream_ros: markerless camera-to-robot calibration from RGB images (after DREAM, ICRA 2020).

The core (geometry, kinematics, network, data, evaluation) imports no rospy; only
``dream_ros.ros`` does.
"""
__version__ = "0.1.0"
