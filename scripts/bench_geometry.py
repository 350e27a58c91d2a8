#!/usr/bin/env python
"""Geometry core figures: timing of FK, single-frame PnP and multi-frame solves, and accuracy on
synthetic correspondences (the Panda 1-2 m from a 640x480 camera, fx = fy = 600).

Timings are medians of N runs, wall-clock and CPU time of this process (the machine is shared:
the load average is printed; under load the CPU time is the better measure of the cost). OpenCV runs single-threaded unless
--cv-threads says otherwise: its thread pool costs a ~10 ms scheduler wake-up on a busy 2-core
machine for the larger multi-frame solves.

    python scripts/bench_geometry.py            # everything, ~1 min
    python scripts/bench_geometry.py --quick    # fewer scenes and runs
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from dream_ros import frames  # noqa: E402

K = np.array([[600.0, 0.0, 320.0], [0.0, 600.0, 240.0], [0.0, 0.0, 1.0]])


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """camera_T_base of an OpenCV camera (z forward, y down) at ``eye`` looking at ``target``."""
    return frames.invert(frames.look_at(eye, target, up=up))


def random_camera(rng) -> np.ndarray:
    d, az, el = rng.uniform(1.0, 2.0), rng.uniform(-np.pi, np.pi), rng.uniform(0.0, 0.8)
    target = np.array([0.0, 0.0, 0.4])
    return look_at(target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                          np.sin(el)]), target)


def project(T, p3):
    pc = p3 @ T[:3, :3].T + T[:3, 3]
    return pc[:, :2] / pc[:, 2:3] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]


def timed(fn, runs, warmup=3):
    """(median wall ms, median CPU ms of this process): on a busy shared machine the CPU time is
    the closer figure for what the code costs; the wall time is what a caller waits."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def fmt(ms_pair, unit="ms"):
    wall, cpu = ms_pair
    if unit == "us":
        return "%8.1f us  (cpu %.1f us)" % (wall * 1e3, cpu * 1e3)
    return "%8.2f ms  (cpu %.2f ms)" % (wall, cpu)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer scenes and runs")
    ap.add_argument("--cv-threads", type=int, default=1, help="cv2.setNumThreads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import cv2
    from dream_ros.frames import pose_error
    from dream_ros.multiframe import MultiFrameSolver
    from dream_ros.pnp import solve_pnp
    from dream_ros.robot import RobotModel

    cv2.setNumThreads(args.cv_threads)
    runs = 100 if args.quick else 300
    scenes = 100 if args.quick else 500
    sequences = 10 if args.quick else 40
    rng = np.random.default_rng(args.seed)
    robot = RobotModel.load("panda")
    lo, hi = robot.joint_limits()

    def view(T=None, noise=0.0):
        T = random_camera(rng) if T is None else T
        p3 = robot.keypoints_3d(rng.uniform(lo, hi))
        return p3, project(T, p3) + (rng.normal(0.0, noise, (len(p3), 2)) if noise else 0.0), T

    print("load average before: %.2f %.2f %.2f   cv2 threads: %d"
          % (os.getloadavg() + (cv2.getNumThreads(),)))

    # ---------------------------------------------------------------- timing
    print("\n== timing (median wall-clock, median CPU time) ==")
    q = rng.uniform(lo, hi)
    qb = rng.uniform(lo, hi, size=(1000, 7))
    qd = dict(zip(robot.joint_names, q))
    print("FK keypoints_3d, one configuration (array)   %s" % fmt(timed(lambda: robot.keypoints_3d(q), runs), "us"))
    print("FK keypoints_3d, one configuration (dict)    %s" % fmt(timed(lambda: robot.keypoints_3d(qd), runs), "us"))
    t = timed(lambda: robot.keypoints_3d(qb), max(runs // 10, 10))
    print("FK keypoints_3d, 1000 configurations         %s  (%.1f us per configuration)"
          % (fmt(t), t[0]))
    p3, p2n, T = view(noise=1.0)
    bad = p2n.copy()
    bad[3] += 80.0
    bad2 = bad.copy()
    bad2[5] -= 80.0
    garbage = project(T, robot.keypoints_3d(rng.uniform(lo, hi)))
    print("solve_pnp 7 points, sigma 1 px, robust        %s" % fmt(timed(lambda: solve_pnp(p3, p2n, K), runs)))
    print("solve_pnp 7 points, sigma 1 px, non-robust    %s" % fmt(timed(lambda: solve_pnp(p3, p2n, K, robust=False), runs)))
    print("solve_pnp 7 points, one moved 80 px, robust   %s" % fmt(timed(lambda: solve_pnp(p3, bad, K), runs)))
    print("solve_pnp 7 points, two moved 80 px, robust   %s" % fmt(timed(lambda: solve_pnp(p3, bad2, K), runs // 3)))
    print("solve_pnp 7 points, wrong joints (worst case) %s" % fmt(timed(lambda: solve_pnp(p3, garbage, K), runs // 3)))

    T = random_camera(rng)
    frames = [view(T, 1.0)[:2] for _ in range(100)]

    def hundred():
        solver = MultiFrameSolver(K)
        for a, b in frames:
            solver.add_frame(a, b)
        return solver

    last = []

    def hundredth():
        solver = MultiFrameSolver(K)
        for a, b in frames[:99]:
            solver.add_frame(a, b)
        t, c = time.perf_counter(), time.process_time()
        solver.add_frame(*frames[99])
        last.append((time.perf_counter() - t, time.process_time() - c))

    reps = 3 if args.quick else 7
    t = timed(hundred, reps, warmup=1)
    print("multi-frame: 100 frames added one by one      %s  (%.2f ms per frame)"
          % (fmt(t), t[0] / 100))
    for _ in range(reps):
        hundredth()
    print("multi-frame: the 100th add_frame              %s"
          % fmt((statistics.median(w for w, _ in last) * 1e3,
                 statistics.median(c for _, c in last) * 1e3)))

    # ---------------------------------------------------------------- accuracy
    print("\n== accuracy (%d single-frame scenes, %d sequences of 30 frames) ==" % (scenes, sequences))
    exact_t, exact_r = [], []
    for _ in range(scenes // 5):
        p3, p2, T = view()
        e = solve_pnp(p3, p2, K)
        dt, dr = pose_error(e.camera_T_base, T)
        exact_t.append(dt)
        exact_r.append(np.max(np.abs(e.camera_T_base - T)))
    print("exact input: max camera translation error     %.2e m   (max |T - T_true| %.2e)"
          % (max(exact_t), max(exact_r)))
    single, rot, rejected, robust_err, plain_err, six_err = [], [], 0, [], [], []
    for i in range(scenes):
        p3, p2, T = view(noise=1.0)
        e = solve_pnp(p3, p2, K)
        single.append(pose_error(e.camera_T_base, T)[0] if e.ok else np.inf)
        rot.append(pose_error(e.camera_T_base, T)[1] if e.ok else np.inf)
        k = i % 7
        a = rng.uniform(0, 2 * np.pi)
        moved = p2.copy()
        moved[k] += 80.0 * np.array([np.cos(a), np.sin(a)])
        eo = solve_pnp(p3, moved, K)
        rejected += bool(eo.ok and not eo.inliers[k])
        robust_err.append(pose_error(eo.camera_T_base, T)[0] if eo.ok else np.inf)
        ep = solve_pnp(p3, moved, K, robust=False)
        plain_err.append(pose_error(ep.camera_T_base, T)[0] if ep.ok else np.inf)
        keep = np.arange(7) != k
        e6 = solve_pnp(p3[keep], p2[keep], K, robust=False)
        six_err.append(pose_error(e6.camera_T_base, T)[0] if e6.ok else np.inf)
    single = np.array(single)
    print("sigma 1 px, single frame: camera translation error median %.1f mm, 90%% %.1f mm; "
          "rotation median %.2f deg" % (1e3 * np.median(single), 1e3 * np.percentile(single, 90),
                                        np.median(rot)))
    print("one keypoint of 7 moved 80 px: rejected in %d/%d scenes; median error robust %.1f mm, "
          "non-robust %.1f mm, the 6 good points alone %.1f mm"
          % (rejected, scenes, 1e3 * np.median(robust_err), 1e3 * np.median(plain_err),
             1e3 * np.median(six_err)))
    first, joint, spreads, conv_at = [], [], [], []
    for _ in range(sequences):
        T = random_camera(rng)
        solver = MultiFrameSolver(K)
        for j in range(30):
            est = solver.add_frame(*view(T, 1.0)[:2])
            if j == 0:
                first.append(pose_error(est.camera_T_base, T)[0])
            if est.extras.get("converged") and len(conv_at) < len(joint) + 1:
                conv_at.append(j + 1)
        joint.append(pose_error(est.camera_T_base, T)[0])
        spreads.append(est.extras["spread_translation_m"])
    print("sigma 1 px, 30 frames (static camera): camera translation error median %.2f mm, "
          "90%% %.2f mm (first frame alone: median %.1f mm)"
          % (1e3 * np.median(joint), 1e3 * np.percentile(joint, 90), 1e3 * np.median(first)))
    print("  single-frame spread (median distance to the joint estimate) %.1f mm; converged in "
          "%d/%d sequences (median at frame %s)"
          % (1e3 * np.median(spreads), len(conv_at), sequences,
             int(np.median(conv_at)) if conv_at else "-"))
    # 10 frames of which only `good` carry the image's own joint readings (the others: joints of
    # other moments, each fitting a pose of its own); the order of good and bad frames is random.
    for good in (3, 5):
        found, errs = 0, []
        for _ in range(sequences):
            T = random_camera(rng)
            solver = MultiFrameSolver(K)
            good_ids = set(rng.choice(10, good, replace=False).tolist())
            for j in range(10):
                p3, p2, _ = view(T, 1.0)
                if j not in good_ids:
                    p3 = robot.keypoints_3d(rng.uniform(lo, hi))
                est = solver.add_frame(p3, p2)
            used = set(est.extras.get("used_frame_ids", [])) if est.ok else set()
            found += used == good_ids
            errs.append(pose_error(est.camera_T_base, T)[0] if est.ok else np.inf)
        print("10 frames, %d with the right joints, %d with other moments': the %d found in %d/%d "
              "sequences; camera error median %.1f mm, 90%% %.1f mm"
              % (good, 10 - good, good, found, sequences, 1e3 * np.median(errs),
                 1e3 * np.percentile(errs, 90)))
    print("\nload average after: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
