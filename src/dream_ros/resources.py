"""Finding files: robot URDFs and meshes (``package://`` URIs), configs and shipped models.

``package://NAME/rest`` is resolved, in order, against:
1. packages installed from PyPI with a cmeel prefix (example-robot-data installs its robots under
   ``site-packages/cmeel.prefix/share/example-robot-data``);
2. ROS packages on ROS_PACKAGE_PATH (through rospkg when it is importable);
3. directories listed in DREAM_ROS_PACKAGE_PATH (``:``-separated), holding NAME/ sub-folders;
4. Python packages shipping data in site-packages/NAME (e.g. ``package://pybullet_data/...``).
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent            # src/dream_ros
REPO_ROOT = PACKAGE_ROOT.parent.parent                    # holds config/, models/
CONFIG_DIR = REPO_ROOT / "config"
ROBOTS_DIR = CONFIG_DIR / "robots"
MODELS_DIR = REPO_ROOT / "models"


def _site_dirs() -> List[Path]:
    dirs = [Path(p) for p in sys.path if p]
    try:
        dirs += [Path(p) for p in site.getsitepackages()]
    except AttributeError:  # virtualenv's old site module
        pass
    seen, out = set(), []
    for d in dirs:
        if d not in seen and d.is_dir():
            seen.add(d)
            out.append(d)
    return out


def find_package_dir(name: str) -> Optional[Path]:
    for d in _site_dirs():
        cand = d / "cmeel.prefix" / "share" / name
        if cand.is_dir():
            return cand
    for d in os.environ.get("DREAM_ROS_PACKAGE_PATH", "").split(":"):
        if d and (Path(d) / name).is_dir():
            return Path(d) / name
    for d in _site_dirs():   # Python packages that ship robot data as package dirs (pybullet_data)
        if d.name in ("site-packages", "dist-packages") and (d / name).is_dir():
            return d / name
    try:
        import rospkg  # optional: only present with ROS
        return Path(rospkg.RosPack().get_path(name))
    except Exception:
        return None


def resolve_uri(uri: str, relative_to: Optional[Path] = None) -> Path:
    """Path for a ``package://``, ``file://``, absolute or relative reference; ConfigError if the
    file does not exist."""
    if uri.startswith("package://"):
        name, _, rest = uri[len("package://"):].partition("/")
        base = find_package_dir(name)
        if base is None:
            raise ConfigError("cannot resolve %r: package %r not found (install it, e.g. "
                              "`pip install example-robot-data`, or add its parent folder to "
                              "DREAM_ROS_PACKAGE_PATH)" % (uri, name))
        path = base / rest
    elif uri.startswith("file://"):
        path = Path(uri[len("file://"):])
    else:
        path = Path(os.path.expanduser(uri))
        if not path.is_absolute():
            path = (relative_to or Path.cwd()) / path
    if not path.exists():
        raise ConfigError("file not found: %s (from %r)" % (path, uri))
    return path


def load_yaml_file(path: Path, what: str):
    """Parsed YAML of ``path``; ConfigError naming ``what`` (e.g. "robot config") when the file
    cannot be read or is not valid YAML. Callers check the document's shape themselves."""
    import yaml
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cannot read %s %s: %s" % (what, path, exc))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("%s %s is not valid YAML: %s" % (what, path, exc))
