"""``python -m dream_ros bench``: per-stage latency and end-to-end throughput of the node's
processing on a 640x480 stream, for our default model and DREAM's VGG-Q and ResNet-H.

Stages, timed per frame inside one loop so they add up to the end-to-end figure:
decode (raw rgb8 message buffer -> array; JPEG decode is timed too, reported apart), preprocess
(resize + normalise -> tensor), network (forward pass), peaks (belief-map peak extraction,
with each keypoint's candidate peaks for our models, and mapping back to raw pixels), zoom (the
detector's second pass on a robot-centred crop: our models only), FK (keypoints at the frame's
joint angles), PnP (with the choice of peaks by the pose, peak_selection.py, as the node),
overlay (drawn after the pose, not part of the end-to-end figure, as the node draws overlays
only when subscribed).

DREAM's architectures run with random weights (speed does not depend on them); so does ours when
no trained model file is found, which the output says. With random weights the network rarely
yields four keypoints, so PnP then runs on the frame's true keypoints (with 1 px noise) to time the
stage honestly; the output says how often. Peak memory is the process's peak resident set size
while each model runs (reset between models through /proc/self/clear_refs where Linux allows).
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Dict, List, Optional

STAGES = ("decode", "preprocess", "network", "peaks", "zoom", "fk", "pnp")
W, H = 640, 480


def add_arguments(p) -> None:
    p.add_argument("--model", default="panda",
                   help="our model: robot name (shipped default), model file (default: panda)")
    p.add_argument("--frames", type=int, default=60,
                   help="timed frames for our model (default 60; at least 50 for the figures)")
    p.add_argument("--dream-frames", type=int, default=10,
                   help="timed frames for each DREAM architecture (default 10: 1-4 s each on 2 cores)")
    p.add_argument("--dream-archs", default="vgg_q,resnet_h",
                   help="comma-separated DREAM architectures to compare (default vgg_q,resnet_h; "
                   "'none' to skip)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames per model (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx", "onnx-int8"),
                   help="backend for our model (auto: as the node, ONNX Runtime on the CPU, "
                   "int8 when the model has an int8 network)")
    p.add_argument("--zoom-views", type=int, default=None,
                   help="crops of our model's zoom pass (network/zoom.py ZOOM_VIEWS; default: "
                   "the detector's, as the node's continuous mode)")
    p.add_argument("--json", action="store_true",
                   help="last line: the full result object (default: the headline figures)")


# ----------------------------------------------------------------------------- helpers
def _percentile_ms(values: List[float], q: float) -> float:
    import numpy as np
    return 1000.0 * float(np.percentile(np.asarray(values, float), q)) if values else float("nan")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: kB


def _stream(n_images: int = 4):
    """A few synthetic 640x480 frames: (rgb, joints, K, camera_T_base); rendered with the synth
    module when it works here, else the stored EasyHeC test image with its joints."""
    import numpy as np
    from .robot import RobotModel
    robot = RobotModel.load("panda")
    base_q = np.array([0.1, -0.35, 0.05, -2.1, 0.05, 1.85, 0.75])
    K = np.array([[610.0, 0.0, 320.0], [0.0, 610.0, 240.0], [0.0, 0.0, 1.0]])
    eye, target = np.array([1.55, 0.55, 0.85]), np.array([0.0, 0.0, 0.4])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    base_T_cam = np.eye(4)
    base_T_cam[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    base_T_cam[:3, 3] = eye
    camera_T_base = np.linalg.inv(base_T_cam)
    frames, source = [], "synthetic render (synth.render.RobotRenderer)"
    try:
        from .synth.render import RobotRenderer
        r = RobotRenderer("panda", W, H)
        try:
            for i in range(n_images):
                q = base_q + 0.15 * np.sin(np.arange(7) + i)
                joints = dict(zip(robot.joint_names, q))
                frames.append((r.render(joints, camera_T_base, K), joints, K, camera_T_base))
        finally:
            r.close()
    except Exception as exc:   # no GL backend etc.: fall back to a stored real image
        frames, source = _stored_frames(robot), "stored image (renderer unavailable: %s)" % exc
    return robot, frames, source


def _stored_frames(robot):
    import cv2
    import numpy as np
    base = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "real",
                        "easyhec_panda")
    base = os.path.normpath(base) if os.path.isdir(base) else "/work/shared/data/real/easyhec_panda"
    bgr = cv2.imread(os.path.join(base, "color", "000000.png"))
    if bgr is None or bgr.shape[:2] != (H, W):
        raise RuntimeError("no synthetic renderer and no stored 640x480 test image found")
    q = np.loadtxt(os.path.join(base, "qpos", "000000.txt")).reshape(-1)[:7]
    K = np.loadtxt(os.path.join(base, "K.txt")).reshape(3, 3)
    return [(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dict(zip(robot.joint_names, q)), K, None)]


class _Pipeline(object):
    """One model's processing, stage by stage, through the node's KeypointDetector pieces: its
    preprocessor, its network backend (ONNX Runtime for ours on the CPU, torch for DREAM's), its
    peak extraction, and the same mapping back to raw pixels."""

    def __init__(self, label: str, net, config, names: List[str], note: str = "",
                 backend: str = "auto", threads: int = 2, zoom_views: Optional[int] = None):
        from .network.detector import KeypointDetector
        from .network.zoom import DEFAULT_ZOOM_VIEWS
        self.label, self.names, self.note = label, names, note
        self.params = sum(p.numel() for p in net.parameters())
        self.zoom_views = DEFAULT_ZOOM_VIEWS if zoom_views is None else int(zoom_views)
        self.det = KeypointDetector((net, config), device="cpu", backend=backend,
                                    num_threads=threads, zoom_views=self.zoom_views)
        self.input_size = tuple(config.input_size)
        self.backend = self.det.backend

    def preprocess(self, rgb):
        x, geometry = self.det.preprocessor(rgb)
        return x[None], geometry

    def forward(self, x):
        return self.det.belief_maps(x)

    def peaks(self, maps, geometry):
        """Detections of the first pass (with candidate peaks when the detector reports them),
        through the detector's own decoding and mapping to raw pixels."""
        codec, det = self.det.codec, self.det
        out_size = (maps.shape[-1], maps.shape[-2])
        if det.candidates:
            xy_out, scores, detected, cands = codec.decode_with_candidates(maps[0],
                                                                           det.candidates)
        else:
            (xy_out, scores, detected), cands = codec.decode(maps[0]), None
        return det._to_detections(xy_out, scores, detected, geometry, out_size, None, cands)

    def zoom(self, rgb, first):
        if not self.det.zoom:
            return first
        return self.det.zoom_refine([rgb], [first])[0]


def _keypoint_frames(robot) -> List[str]:
    return [k.link for k in robot.config.keypoints]


def _our_pipeline(model_arg: str, robot, backend: str, threads: int,
                  zoom_views: Optional[int] = None) -> _Pipeline:
    from .network.model_file import ModelConfig, load_model
    names = list(robot.keypoint_names)
    try:
        net, cfg = load_model(model_arg)
        note = "trained model %s" % model_arg
    except Exception as exc:   # no shipped model yet: same architecture, random weights
        cfg = ModelConfig.for_ours(robot.name, names, _keypoint_frames(robot))
        net = cfg.build_network()
        note = "RANDOM weights: model %r not loadable (%s)" % (model_arg, str(exc)[:100])
    pipe = _Pipeline("ours (%s)" % cfg.arch, net, cfg, list(cfg.keypoint_names), note, backend,
                     threads, zoom_views)
    pipe.note += "; backend %s; %d zoom view%s" % (pipe.backend, pipe.zoom_views,
                                                   "s" if pipe.zoom_views > 1 else "")
    return pipe


def _dream_pipeline(arch: str, robot, threads: int) -> _Pipeline:
    from .network.codec import BeliefMapCodec
    from .network.dream_arch import DREAM_DEFAULT_INPUT, build_dream_network, dream_output_size
    from .network.model_file import ModelConfig
    names = list(robot.keypoint_names)
    out = dream_output_size(arch, DREAM_DEFAULT_INPUT)
    cfg = ModelConfig(robot=robot.name, keypoint_names=names, keypoint_frames=_keypoint_frames(robot),
                      arch=arch, input_size=DREAM_DEFAULT_INPUT, output_size=out,
                      preprocessing="resize", codec=BeliefMapCodec.dream(out).to_dict(),
                      source_format="dream")
    return _Pipeline("DREAM %s" % arch, build_dream_network(arch, len(names)), cfg, names,
                     "random weights, 400x400 resize as DREAM's released configs", "torch", threads)


def _run(pipe: _Pipeline, robot, stream, n_frames: int, warmup: int) -> Dict:
    import cv2
    import numpy as np
    from .pnp import solve_pnp
    from .types import Detections
    from .peak_selection import solve_choosing_peaks
    from .visualize import calibration_overlay, project

    raw = [np.ascontiguousarray(f[0]).tobytes() for f in stream]           # rgb8 message data
    jpg = [cv2.imencode(".jpg", f[0][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])[1] for f in stream]
    rng = np.random.default_rng(0)
    times = {k: [] for k in STAGES + ("overlay", "decode_jpeg", "e2e")}
    pnp_on_labels = 0
    cpu_s = 0.0
    _reset_peak_rss()
    for i in range(warmup + n_frames):
        c0 = time.process_time()
        rgb_src, joints, K, camera_T_base = stream[i % len(stream)]
        t = [time.perf_counter()]
        rgb = np.frombuffer(raw[i % len(raw)], np.uint8).reshape(H, W, 3)
        t.append(time.perf_counter())
        x, geometry = pipe.preprocess(rgb)
        t.append(time.perf_counter())
        maps = pipe.forward(x)
        t.append(time.perf_counter())
        first = pipe.peaks(maps, geometry)
        t.append(time.perf_counter())
        found = pipe.zoom(rgb, first)
        uv, detected = found.uv, found.detected
        t.append(time.perf_counter())
        pts = robot.keypoints_3d(joints)
        t.append(time.perf_counter())
        use_labels = int(np.count_nonzero(detected)) < 4 and camera_T_base is not None
        if use_labels:   # random weights: time PnP on the true keypoints instead (see docstring)
            pc = pts @ camera_T_base[:3, :3].T + camera_T_base[:3, 3]
            uv = pc[:, :2] / pc[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
            uv = uv + rng.normal(0.0, 1.0, uv.shape)
        # as the node: keypoints weighed by the model's error, peaks chosen by the pose
        sigma = found.sigma_px
        uv, est = solve_choosing_peaks(pts, uv, None if use_labels else found.candidates,
                                       lambda u: solve_pnp(pts, u, K, point_sigma_px=sigma),
                                       lambda p, T: project(p, T, K))
        t.append(time.perf_counter())
        c1 = time.process_time()
        det = Detections(pipe.names, uv, np.ones(len(uv)), np.all(np.isfinite(uv), axis=1), (W, H))
        t_ov = time.perf_counter()
        calibration_overlay(rgb, det, est if est.ok else None, pts, K=K,
                            status=["%s" % est.status])
        t_ov_end = time.perf_counter()
        t_j = time.perf_counter()
        cv2.imdecode(jpg[i % len(jpg)], cv2.IMREAD_COLOR)
        t_j_end = time.perf_counter()
        if i < warmup:
            continue
        pnp_on_labels += int(use_labels)
        cpu_s += c1 - c0
        for k, a, b in zip(STAGES, t[:-1], t[1:]):
            times[k].append(b - a)
        times["e2e"].append(t[-1] - t[0])
        times["overlay"].append(t_ov_end - t_ov)
        times["decode_jpeg"].append(t_j_end - t_j)
    res = {
        "label": pipe.label, "note": pipe.note, "params": pipe.params,
        "input_size": list(pipe.input_size), "frames": n_frames,
        "stages_ms": {k: {"median": _percentile_ms(v, 50), "p95": _percentile_ms(v, 95)}
                      for k, v in times.items()},
        "fps": n_frames / float(sum(times["e2e"])),
        "fps_with_overlay": n_frames / float(sum(times["e2e"]) + sum(times["overlay"])),
        "fps_jpeg_input": n_frames / float(sum(times["e2e"]) - sum(times["decode"])
                                           + sum(times["decode_jpeg"])),
        "pnp_on_true_keypoints_frames": pnp_on_labels,
        # CPU time of this process (all its threads) per frame, decode..PnP: less sensitive to
        # other jobs on the machine than wall time (with 2 threads, wall >= cpu / 2)
        "cpu_ms_per_frame": 1000.0 * cpu_s / n_frames,
        "peak_rss_mb": _peak_rss_mb(),
    }
    return res


def _run_node_path(pipe: _Pipeline, robot, stream, n_frames: int, warmup: int,
                   guided_zoom: bool = False) -> Dict:
    """Cross-check: the node's own per-frame call, ``Calibrator.process`` (detector, FK, PnP and
    the plausibility gates, continuous mode), after decoding the rgb8 buffer; ``guided_zoom`` as
    the node's default (zoom crops from the last accepted pose,
    calibration.GUIDED_FULL_PASS_EVERY)."""
    import numpy as np
    from .calibration import Calibrator
    cal = Calibrator(robot, pipe.det, mode="continuous", guided_zoom=guided_zoom)
    raw = [np.ascontiguousarray(f[0]).tobytes() for f in stream]
    times, ok = [], 0
    for i in range(warmup + n_frames):
        _, joints, K, _ = stream[i % len(stream)]
        t0 = time.perf_counter()
        rgb = np.frombuffer(raw[i % len(raw)], np.uint8).reshape(H, W, 3)
        _, est = cal.process(rgb, joints, K)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
            ok += int(est.ok)
    return {"median": _percentile_ms(times, 50), "p95": _percentile_ms(times, 95),
            "fps": n_frames / float(sum(times)), "frames": n_frames, "frames_ok": ok}


def _print_table(rows: List[Dict], out) -> None:
    """Stages down, models across: median / p95 in ms, then throughput, ratio and memory."""
    ref = next((r["fps"] for r in rows if r["label"] == "DREAM vgg_q"), None)
    width = max(22, max(len(r["label"]) for r in rows) + 2)
    print("%-28s" % "ms: median / p95" + "".join(r["label"].rjust(width) for r in rows), file=out)
    labels = {"decode": "decode (raw rgb8)", "fk": "FK", "pnp": "PnP",
              "e2e": "end to end (sum above)", "overlay": "overlay (not in e2e)",
              "decode_jpeg": "decode JPEG (alternative)"}
    for c in STAGES + ("e2e", "overlay", "decode_jpeg"):
        cells = ["%.2f / %.2f" % (r["stages_ms"][c]["median"], r["stages_ms"][c]["p95"]) for r in rows]
        print("%-28s" % labels.get(c, c) + "".join(x.rjust(width) for x in cells), file=out)
    extra = [("frames/s (throughput)", lambda r: "%.2f" % r["fps"]),
             ("frames/s with overlay", lambda r: "%.2f" % r["fps_with_overlay"]),
             ("frames/s from JPEG", lambda r: "%.2f" % r["fps_jpeg_input"]),
             ("throughput vs VGG-Q", lambda r: ("%.1fx" % (r["fps"] / ref)) if ref else "-"),
             ("CPU ms per frame (e2e)", lambda r: "%.1f" % r["cpu_ms_per_frame"]),
             ("peak RSS (MB)", lambda r: "%.0f" % r["peak_rss_mb"]),
             ("parameters (M)", lambda r: "%.2f" % (r["params"] / 1e6)),
             ("network input", lambda r: "%dx%d" % tuple(r["input_size"])),
             ("timed frames", lambda r: "%d" % r["frames"])]
    for name, f in extra:
        print("%-28s" % name + "".join(f(r).rjust(width) for r in rows), file=out)


def run(args) -> int:
    import platform

    import torch

    from .calibration import GUIDED_FULL_PASS_EVERY
    from .errors import InputError
    from .network.model_file import robot_for_model
    if args.frames < 1 or args.dream_frames < 1 or args.warmup < 0:
        raise InputError("--frames and --dream-frames must be >= 1 and --warmup >= 0")
    torch.set_num_threads(max(1, int(args.threads)))
    archs = [] if args.dream_archs.strip().lower() == "none" else \
        [a.strip() for a in args.dream_archs.split(",") if a.strip()]
    out = sys.stdout
    robot, stream, source = _stream()
    names = list(robot.keypoint_names)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print("bench: 640x480 stream from %s; torch %s, %d threads, %d CPUs, load average %.2f "
          "(shared machine: background jobs slow these figures)"
          % (source, torch.__version__, torch.get_num_threads(), os.cpu_count() or 0, load[0]),
          file=out)
    rows = []
    ours = _our_pipeline(args.model, robot, args.backend, args.threads, args.zoom_views)
    print("- %s: %s; %d frames" % (ours.label, ours.note, args.frames), file=out)
    out.flush()
    # an 11-keypoint panda_extended model brings its config: FK gives the model's keypoints
    our_robot = robot_for_model(args.model, ours.det.config, robot, "pass the matching --model")
    rows.append(_run(ours, our_robot, stream, args.frames, args.warmup))
    node = _run_node_path(ours, our_robot, stream, args.frames, args.warmup)
    rows[0]["node_path"] = node
    guided = _run_node_path(ours, our_robot, stream, args.frames, args.warmup, guided_zoom=True)
    rows[0]["node_path_guided"] = guided
    del ours
    for arch in archs:
        pipe = _dream_pipeline(arch, robot, args.threads)
        print("- %s: %s; only %d frames (each takes seconds here)"
              % (pipe.label, pipe.note, args.dream_frames), file=out)
        out.flush()
        rows.append(_run(pipe, robot, stream, args.dream_frames, min(args.warmup, 1)))
        del pipe
    print("", file=out)
    _print_table(rows, out)
    print("", file=out)
    print("node path (Calibrator.process, %s): %.2f / %.2f ms median / p95, %.2f frames/s, "
          "%d/%d frames with a pose" % (rows[0]["label"], node["median"], node["p95"], node["fps"],
                                        node["frames_ok"], node["frames"]), file=out)
    print("node path with guided zoom (the node's default: crops from the last accepted pose, "
          "the full detector 1 frame in %d): %.2f / %.2f ms median / p95, %.2f frames/s, "
          "%d/%d frames with a pose" % (GUIDED_FULL_PASS_EVERY, guided["median"], guided["p95"],
                                        guided["fps"], guided["frames_ok"], guided["frames"]),
          file=out)
    for r in rows:
        if r["pnp_on_true_keypoints_frames"]:
            print("note: %s: PnP timed on true keypoints in %d/%d frames (random weights find < 4)"
                  % (r["label"], r["pnp_on_true_keypoints_frames"], r["frames"]), file=out)
    vgg = next((r for r in rows if r["label"] == "DREAM vgg_q"), None)
    head = {
        "default_fps": rows[0]["fps"],
        "vgg_q_fps": vgg["fps"] if vgg else None,
        "speedup_vs_vgg_q": rows[0]["fps"] / vgg["fps"] if vgg else None,
        "default_e2e_median_ms": rows[0]["stages_ms"]["e2e"]["median"],
        "default_e2e_p95_ms": rows[0]["stages_ms"]["e2e"]["p95"],
        "default_network_median_ms": rows[0]["stages_ms"]["network"]["median"],
        "default_random_weights": rows[0]["note"].startswith("RANDOM"),
        "default_node_path_fps": node["fps"],
        "default_node_path_guided_fps": guided["fps"],
        "default_cpu_ms_per_frame": rows[0]["cpu_ms_per_frame"],
        "load_average_1min": load[0],
    }
    for r in rows[1:]:
        key = r["label"].replace("DREAM ", "")
        head["%s_fps" % key] = r["fps"]
    print("target: default >= 30 fps end to end: %s; >= 25x VGG-Q: %s"
          % ("met" if head["default_fps"] >= 30 else "NOT met",
             "-" if head["speedup_vs_vgg_q"] is None else
             ("met" if head["speedup_vs_vgg_q"] >= 25 else "NOT met")), file=out)
    if args.json:
        full = dict(head)
        full.update({"models": rows, "source": source, "machine": platform.platform(),
                     "cpus": os.cpu_count(), "threads": torch.get_num_threads()})
        print(json.dumps(full), file=out)
    else:
        print(json.dumps(head), file=out)
    return 0
