"""Make `import dream_ros` work from a plain checkout (the catkin devel space also provides it)."""
import os
import sys

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")

# Property-based tests draw the same examples on every run, so a test run (and CI) is
# reproducible: a failure seen once is seen again. To search new examples instead, run
#   HYPOTHESIS_PROFILE=explore python -m pytest test/core/test_solver_fuzz.py test/ros/test_conversions.py
# and add any failing case it finds as an @example.
try:
    from hypothesis import settings as _hypothesis_settings
    _hypothesis_settings.register_profile("reproducible", derandomize=True)
    _hypothesis_settings.register_profile("explore", derandomize=False)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))
except ImportError:   # make setup installs hypothesis; without it only the fuzz tests fail to import
    pass
