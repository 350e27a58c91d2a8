"""dream_ros: markerless camera-to-robot calibration from RGB images (after DREAM, ICRA 2020).

The core (geometry, kinematics, network, data, evaluation) imports no rospy; only
``dream_ros.ros`` does.
"""
import pkgutil

# The generated messages (dream_ros.msg / dream_ros.srv) live in the catkin devel space; let this
# package span both folders whichever comes first on sys.path.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
