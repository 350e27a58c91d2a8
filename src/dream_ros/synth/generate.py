"""Dataset generation: frame index -> randomized render -> NDDS files; parallel, resumable, sharded.

Frame ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so its content depends only on
the seed and its index: the same with any number of workers, shards or restarts.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from ..data.ndds import frame_done, frame_name, frame_record, write_camera_settings, write_frame
from ..errors import InputError


@dataclass
class SynthOptions:
    robot: str = "panda"
    out: str = ""
    count: int = 100
    seed: int = 0
    width: int = 640
    height: int = 480
    ext: str = "jpg"
    jpeg_quality: int = 92
    fov: Optional[float] = None         # fixed vertical FOV (deg); None: random per frame
    distractors: int = 8                # primitive distractor slots
    mesh_distractors: int = 12          # object-mesh distractor slots (pybullet_data, if installed)
    photos: bool = True
    shard_index: int = 0
    shard_count: int = 1
    msaa: int = 0                       # multisampling (0 = off: fastest)
    masks: bool = False                 # also write <name>.cs.png segmentation masks
    camera_radius: Optional[Tuple[float, float]] = None   # overrides synth.camera.radius_m
    closeup_prob: Optional[float] = None                  # overrides synth.camera.closeup_prob
    table_prob: Optional[float] = None                    # overrides synth.table_prob


class FrameGenerator:
    """Per-process state: scene, renderer, backgrounds, randomizer."""

    def __init__(self, opts: SynthOptions):
        from .backgrounds import BackgroundSource
        from .randomize import Randomizer
        from .render import SceneRenderer
        from .scene import RobotScene
        self.opts = opts
        self.scene = RobotScene(opts.robot, n_distractors=opts.distractors,
                                max_width=opts.width, max_height=opts.height, msaa=opts.msaa,
                                n_mesh_distractors=opts.mesh_distractors)
        self.renderer = SceneRenderer(self.scene, opts.width, opts.height)
        self.backgrounds = BackgroundSource(opts.width, opts.height, photos=opts.photos)
        self.randomizer = Randomizer(self.scene, opts.width, opts.height, fixed_fov_deg=opts.fov)
        self.apply_camera_overrides(opts)

    def apply_camera_overrides(self, opts: SynthOptions) -> None:
        self.randomizer.ranges = randomization(self.scene.config.synth, opts)

    def make(self, index: int, return_mask: bool = False):
        """(rgb, record) of frame ``index`` (plus the label image 0/1/2 with ``return_mask``)."""
        from ..frames import invert
        from .render import composite, keypoint_labels
        rng = np.random.default_rng([int(self.opts.seed), int(index)])
        sc, o = self.scene, self.opts
        p = self.randomizer.sample(rng)
        rgb, label, geom = self.renderer.render(segmentation=True)
        bg = self.backgrounds.sample(rng)
        image = composite(rgb, label, bg)
        lab = keypoint_labels(sc, p.world_T_optical, p.K, o.width, o.height, label, geom)
        camera_T_base = invert(p.world_T_optical) @ sc.world_T_base()
        n = len(lab.names)
        visible = int(np.count_nonzero(lab.in_frame & ~lab.occluded))
        extras = {"synth": {"index": int(index), "seed": int(o.seed), "true_materials": p.true_materials,
                            "closeup": p.closeup, "table": p.table, "distractors": p.n_distractors,
                            "background": self.backgrounds.last_kind, "joint_tries": p.tries,
                            "robot_pixels": lab.robot_pixels,
                            "visible_link": lab.visible_link, **p.extras}}
        rec = frame_record(sc.config.dream_name, lab.names, lab.xyz, lab.uv, camera_T_base, p.joints,
                           K=p.K, in_frame=lab.in_frame, occluded=lab.occluded,
                           visibility=visible / float(n), extras=extras)
        return (image, rec, label) if return_mask else (image, rec)

    def write(self, index: int) -> bool:
        name = frame_name(index, name_digits(self.opts.count))
        if frame_done(self.opts.out, name):
            return False
        image, rec, label = self.make(index, return_mask=True)
        mask = None
        if self.opts.masks:
            from ..data.ndds import MASK_VALUES
            lut = np.array([MASK_VALUES["background"], MASK_VALUES["robot"], MASK_VALUES["distractor"]],
                           np.uint8)
            mask = lut[label]
        write_frame(self.opts.out, name, image, rec, ext=self.opts.ext,
                    jpeg_quality=self.opts.jpeg_quality, mask=mask)
        return True


# -- multiprocessing plumbing ------------------------------------------------------------------
_GEN: Optional[FrameGenerator] = None


def _same_scene(a: SynthOptions, b: SynthOptions) -> bool:
    return ((a.robot, a.width, a.height, a.distractors, a.mesh_distractors, a.photos, a.msaa)
            == (b.robot, b.width, b.height, b.distractors, b.mesh_distractors, b.photos, b.msaa))


def _init_worker(opts: SynthOptions):
    global _GEN
    os.environ["LP_NUM_THREADS"] = "1"     # one llvmpipe thread per process: the fastest setup
    os.environ.setdefault("MUJOCO_GL", "egl")
    if _GEN is not None and _same_scene(_GEN.opts, opts):
        # in-process reruns (tests, notebooks) reuse the built scene; frames depend only on opts
        _GEN.opts = opts
        _GEN.randomizer.fixed_fov = opts.fov
        _GEN.apply_camera_overrides(opts)
        return
    _GEN = FrameGenerator(opts)


def _work(index: int) -> int:
    return int(_GEN.write(index))


def name_digits(count: int) -> int:
    """Zero padding of frame names: 6 like DREAM's sets, more for >= 1e6 frames (names must sort)."""
    return max(6, len(str(max(int(count) - 1, 0))))


def shard_indices(count: int, shard_index: int, shard_count: int) -> List[int]:
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise InputError("shard must be i/n with 0 <= i < n, got %d/%d" % (shard_index, shard_count))
    return list(range(shard_index, int(count), shard_count))


def package_versions() -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("mujoco", "numpy", "trimesh", "collada", "cv2", "skimage", "urdf_parser_py"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "?"))
        except Exception:
            out[mod] = "missing"
    return out


def code_version() -> str:
    """git commit of the dream_ros checkout ('+dirty' with local changes), or 'unknown'."""
    import subprocess
    from ..resources import REPO_ROOT
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(REPO_ROOT),
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src/dream_ros/synth",
                                "config/robots"], cwd=str(REPO_ROOT), capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else "unknown"
    except Exception:
        return "unknown"


def randomization(synth: Dict, opts: SynthOptions) -> Dict:
    """The robot config's randomization ranges with --camera-radius / --closeup-prob /
    --table-prob applied."""
    from .randomize import merged_ranges
    ranges = merged_ranges(synth)
    if opts.camera_radius is not None:
        ranges["camera"]["radius_m"] = [float(v) for v in opts.camera_radius]
    if opts.closeup_prob is not None:
        ranges["camera"]["closeup_prob"] = float(opts.closeup_prob)
    if opts.table_prob is not None:
        ranges["table_prob"] = float(opts.table_prob)
    return ranges


def dataset_card(opts: SynthOptions, done: int, skipped: int, seconds: float) -> Dict:
    from ..robot_config import load_robot_config
    from .backgrounds import PHOTO_LICENSES
    cfg = load_robot_config(opts.robot)
    return {
        "generator": "dream_ros synth",
        "code_version": code_version(),
        "robot": cfg.name, "dream_name": cfg.dream_name, "urdf": cfg.urdf_uri,
        "keypoints": [{"name": k.name, "link": k.link, "offset": [float(x) for x in k.offset]}
                      for k in cfg.keypoints],
        "options": asdict(opts),
        "frames_total": int(opts.count),
        "frames_written_this_run": int(done), "frames_skipped_existing": int(skipped),
        "seconds_this_run": round(seconds, 1),
        "randomization": randomization(cfg.synth, opts),
        "units": "metres; camera = OpenCV optical frame; pixel centres at integer coordinates",
        "intrinsics": "per frame in camera_data.intrinsics (random FOV)" if opts.fov is None
                      else "fixed: _camera_settings.json",
        "backgrounds": {"procedural": "gradient, plaid, noise, checkerboard, shapes, solid",
                        "photos": "scikit-image sample data", "photo_licenses": PHOTO_LICENSES},
        "distractor_meshes": "pybullet_data random_urdfs (zlib licence), if installed",
        "robot_model_license": "see the URDF package (example-robot-data: BSD-3 / Apache-2.0 for Panda)",
        "packages": package_versions(),
        "command": " ".join(sys.argv),
    }


def run_synth(opts: SynthOptions, workers: int = 1, progress: bool = True) -> Dict:
    """Render the shard's missing frames; returns the dataset card."""
    import yaml
    from tqdm import tqdm
    from .render import intrinsics_from_fov
    from .randomize import merged_ranges
    from ..robot_config import load_robot_config
    cfg = load_robot_config(opts.robot)        # bad robot name: fail before creating anything
    todo_all = shard_indices(opts.count, opts.shard_index, opts.shard_count)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    fov = opts.fov if opts.fov is not None else float(np.mean(merged_ranges(cfg.synth)["fov_deg"]))
    extras = None if opts.fov is not None else {
        "note": "random field of view per frame: each frame's own K is in camera_data.intrinsics"}
    write_camera_settings(out, intrinsics_from_fov(opts.width, opts.height, fov), opts.width, opts.height,
                          extras=extras)
    digits = name_digits(opts.count)
    todo = [i for i in todo_all if not frame_done(out, frame_name(i, digits))]
    skipped = len(todo_all) - len(todo)
    card_name = "dataset.yaml" if opts.shard_count == 1 else "dataset.shard%dof%d.yaml" % (
        opts.shard_index, opts.shard_count)
    from ..data.ndds import atomic_write_bytes

    def save_card(done_, seconds):
        card_ = dataset_card(opts, done_, skipped, seconds)
        atomic_write_bytes(out / card_name, yaml.safe_dump(card_, sort_keys=False).encode())
        return card_

    save_card(0, 0.0)     # the card exists (with the settings) while a long render runs
    t0 = time.time()
    done = 0
    bar = tqdm(total=len(todo), disable=not progress, unit="img", smoothing=0.05,
               desc="synth %s shard %d/%d" % (opts.robot, opts.shard_index, opts.shard_count))
    if workers <= 1:
        _init_worker(opts)
        for i in todo:
            done += _work(i)
            bar.update(1)
    elif todo:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")    # fresh processes: no GL state inherited through fork
        with ctx.Pool(workers, initializer=_init_worker, initargs=(opts,)) as pool:
            for r in pool.imap_unordered(_work, todo, chunksize=4):
                done += r
                bar.update(1)
    bar.close()
    return save_card(done, time.time() - t0)
