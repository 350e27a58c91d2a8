#!/usr/bin/env python
"""Throughput of the synthetic-data generator (what `python -m dream_ros synth` runs per frame).

    python scripts/bench_synth.py --robot panda --width 400 --height 400 --workers 2 --frames 300

Prints wall-clock images/s after worker start-up (scene build excluded), CPU seconds per image
and the load average: on a shared machine the wall figure drops with other jobs; the CPU figure
gives what the cores would do undisturbed (workers x 1 / cpu_per_image, one llvmpipe thread each).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

_GEN = None


def _init(opts):
    global _GEN
    os.environ["LP_NUM_THREADS"] = "1"
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dream_ros.synth.generate import FrameGenerator
    _GEN = FrameGenerator(opts)
    _GEN.write(10 ** 6 + os.getpid())   # warm-up frame (first render compiles shaders)


def _one(i):
    c0 = time.process_time()
    _GEN.write(i)
    return time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--robot", default="panda")
    ap.add_argument("--width", type=int, default=400)
    ap.add_argument("--height", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--png", action="store_true")
    args = ap.parse_args()
    from dream_ros.synth.generate import SynthOptions
    with tempfile.TemporaryDirectory() as out:
        opts = SynthOptions(robot=args.robot, out=out, count=args.frames, seed=123, width=args.width,
                            height=args.height, ext="png" if args.png else "jpg")
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init, initargs=(opts,)) as pool:
            pool.map(time.sleep, [0.5] * args.workers)        # wait until every worker is ready
            load0 = os.getloadavg()[0]
            t0 = time.time()
            cpu = pool.map(_one, range(args.frames), chunksize=4)
            wall = time.time() - t0
            load1 = os.getloadavg()[0]
    per = sum(cpu) / len(cpu)
    print("robot %s %dx%d, %d workers, %d frames (%s)" % (args.robot, args.width, args.height,
                                                         args.workers, args.frames,
                                                         "png" if args.png else "jpg q92"))
    print("wall: %.1f img/s (%.2f s)   load average %.1f -> %.1f on %d cores"
          % (args.frames / wall, wall, load0, load1, os.cpu_count()))
    print("cpu: %.1f ms per image -> %.1f img/s with %d undisturbed cores"
          % (1000 * per, args.workers / per, args.workers))


if __name__ == "__main__":
    main()
