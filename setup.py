# Installed by catkin (catkin_python_setup); do not run directly.
from setuptools import setup
from catkin_pkg.python_setup import generate_distutils_setup

setup(**generate_distutils_setup(
    packages=["dream_ros", "dream_ros.network", "dream_ros.data", "dream_ros.synth",
              "dream_ros.train", "dream_ros.evaluation", "dream_ros.ros"],
    package_dir={"": "src"},
))
