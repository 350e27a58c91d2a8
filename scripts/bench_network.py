#!/usr/bin/env python
"""Forward-pass time of every keypoint architecture on this machine (batch 1, median of N runs).

Ours at their default input (320x240), DREAM's at 400x400; eager torch in NCHW and channels_last,
and ONNX Runtime; plus the peak-extraction (decode) time at each output size. Prints a table.
The machine is shared: the load average before and after is printed; compare runs only at
similar load.

    python scripts/bench_network.py                  # everything (DREAM's take ~1-2 s a run)
    python scripts/bench_network.py --no-dream --runs 50
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


BEST = {}   # fn label -> best (minimum) time, printed in brackets: less sensitive to a busy machine


CLOCK = [time.perf_counter]


def timed(fn, runs: int, warmup: int, label: str = "") -> float:
    clock = CLOCK[0]
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = clock()
        fn()
        ts.append(clock() - t)
    BEST[label] = min(ts) * 1e3
    return statistics.median(ts) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="timed runs per case (default 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime CPU threads")
    ap.add_argument("--keypoints", type=int, default=7)
    ap.add_argument("--archs", nargs="*", help="subset of architectures (default all)")
    ap.add_argument("--no-dream", action="store_true", help="skip DREAM's architectures")
    ap.add_argument("--dream-onnx", action="store_true", help="also time DREAM's nets in ONNX RT")
    ap.add_argument("--cpu-time", action="store_true",
                    help="1 thread, report process CPU time instead of wall time: far less "
                         "sensitive to other jobs on a busy machine")
    args = ap.parse_args(argv)
    if args.cpu_time:
        args.threads = 1
        CLOCK[0] = time.process_time

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dream_ros.network.codec import BeliefMapCodec
    from dream_ros.network.dream_arch import DREAM_ARCHS, DREAM_DEFAULT_INPUT, build_dream_network
    from dream_ros.network.onnx_backend import OnnxRunner, export_onnx
    from dream_ros.network.ours import NETWORK_INFO, build_network

    torch.set_num_threads(args.threads)
    cases = [(a, NETWORK_INFO[a]["default_input"], False) for a in sorted(NETWORK_INFO)]
    if not args.no_dream:
        cases += [(a, DREAM_DEFAULT_INPUT, True) for a in DREAM_ARCHS]
    if args.archs:
        cases = [c for c in cases if c[0] in args.archs]
    print(f"# torch {torch.__version__}, {args.threads} threads, batch 1, median of {args.runs} "
          f"runs, {'process CPU' if args.cpu_time else 'wall'} time; load average before: "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    head = (f"{'arch':16s} {'input':>8s} {'output':>8s} {'params':>8s} {'GFLOPs':>7s} "
            f"{'nchw_ms (min)':>15s} {'cl_ms (min)':>15s} {'onnx_ms (min)':>15s} {'decode_ms':>9s}")
    print("# *_ms: median forward time; (min): fastest run. cl = torch channels_last")
    print(head)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_network_"))
    for arch, (w, h), is_dream in cases:
        torch.manual_seed(0)
        net = (build_dream_network if is_dream else build_network)(arch, args.keypoints).eval()
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            out = net(x)
        gflops = fc.get_total_flops() / 1e9
        params = sum(p.numel() for p in net.parameters()) / 1e6
        with torch.inference_mode():
            nchw = timed(lambda: net(x), args.runs, args.warmup, "nchw")
        net = net.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            cl = timed(lambda: net(x_cl), args.runs, args.warmup, "cl")
        net = net.to(memory_format=torch.contiguous_format)
        onnx_ms = float("nan")
        BEST["onnx"] = float("nan")
        if not is_dream or args.dream_onnx:
            path = export_onnx(net, tmp / f"{arch}.onnx", (w, h))
            runner = OnnxRunner(path, num_threads=args.threads)
            xn = x.numpy()
            onnx_ms = timed(lambda: runner.run(xn), args.runs, args.warmup, "onnx")
            path.unlink()
        # decode on label-like maps (one peak per channel plus a little noise)
        oh, ow = out.shape[-2:]
        codec = BeliefMapCodec.dream() if is_dream else BeliefMapCodec()
        maps = codec.encode(rng.uniform([8, 8], [ow - 8, oh - 8], (args.keypoints, 2)),
                            np.ones(args.keypoints, bool), (ow, oh))
        maps += rng.normal(0, 0.01, maps.shape).astype(np.float32)
        dec = timed(lambda: codec.decode(maps), args.runs, args.warmup)
        print(f"{arch:16s} {w:>4d}x{h:<3d} {ow:>4d}x{oh:<3d} {params:7.2f}M {gflops:7.2f} "
              f"{nchw:7.1f} ({BEST['nchw']:5.1f}) {cl:7.1f} ({BEST['cl']:5.1f}) "
              f"{onnx_ms:7.1f} ({BEST['onnx']:5.1f}) {dec:9.2f}", flush=True)
        del net
    print(f"# load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
