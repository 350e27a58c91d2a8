#!/usr/bin/env python3
"""Score training checkpoints with the full pipeline on pooled validation sets, to choose one.

Each checkpoint (or run directory, or model file) is exported as the shipped model would be
(int8 network calibrated on --int8-data), evaluated with ``python -m dream_ros eval`` on every
--val set, and the frames of all sets are pooled into one PCK AUC and one ADD AUC (DREAM's
definitions, evaluation/metrics.py). The score is their sum; with several sets each set's
figures follow. Never pass the test set here.

    python scripts/score_checkpoints.py RUN/snaps/a.pt RUN/last.pt models/panda_default.pt \
        --val /work/data/panda_val_640 --val /work/data/panda_val_640_b \
        --val /work/data/panda_val_640_c --val /work/data/panda_val_640_old \
        --val /work/data/panda_val_640_old_b --int8-data /work/data/panda_train_640_d --work /work/exp/score

The _old sets come from the test set's generator (scripts/render_test_set.sh OUT 1001 / 1002).
Session 19 found the ranking on them can differ from the ranking on today's synth's sets.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from dream_ros.evaluation import metrics, results


def pooled_scores(eval_dirs):
    """PCK AUC, ADD AUC, the count of poses > 0.1 m off and the frames, over several evals."""
    uv_pred, uv_gt, add, viable, sizes = [], [], [], [], set()
    for d in eval_dirs:
        with open(Path(d) / "summary.json") as f:
            summary = json.load(f)
        sizes.add(tuple(summary["image_size"]))
        for r in results.read_results(Path(d) / "results.jsonl"):
            # PCK over the keypoints the eval scored (DREAM's 7 for an 11-keypoint Panda model)
            names = summary.get("metric_keypoints") or list(r["keypoints_gt"])
            uv_gt.append([r["keypoints_gt"][n] for n in names])
            uv_pred.append([r["keypoints"][n] if r["keypoints"][n] is not None
                            else [np.nan, np.nan] for n in names])
            add.append(np.nan if r["add_m"] is None else r["add_m"])
            viable.append(bool(r["viable"]))
    if len(sizes) != 1:
        raise SystemExit("validation sets of different image sizes cannot be pooled: %s" % sizes)
    km = metrics.keypoint_pck(np.array(uv_pred, float), np.array(uv_gt, float), sizes.pop())
    am = metrics.add_metrics(add, viable)
    return km.auc, am.auc, am.num_found_beyond_max, len(add)


def _run(cmd):
    """Run a dream_ros command quietly; on failure show its error output and stop."""
    res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stderr[-4000:])
        raise SystemExit("failed (%d): %s" % (res.returncode, " ".join(cmd)))


def _is_model_file(path: Path) -> bool:
    """A model file (``train --export``'s output) rather than a training checkpoint."""
    import torch
    state = torch.load(str(path), map_location="cpu", weights_only=False)
    return "config" in state and "counters" not in state


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="checkpoints, run directories or model files (.pt)")
    p.add_argument("--val", action="append", required=True, help="validation NDDS set (repeat)")
    p.add_argument("--int8-data", default="/work/data/panda_train_640_d",
                   help="frames that calibrate the int8 network (as publish_model.sh)")
    p.add_argument("--work", default="/tmp/score_checkpoints", help="exports and eval outputs")
    p.add_argument("--eval-args", default="", help="extra eval options, e.g. '--zoom-views 7'")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for src in args.models:
        path = Path(src)
        target = path / "last.pt" if path.is_dir() else path
        # the file's name, folder and modification time name its outputs: two runs' last.pt do
        # not collide, and a checkpoint overwritten since is exported and evaluated again
        tag = "%s_%s_%x" % (path.parent.name, path.stem, target.stat().st_mtime_ns)
        if _is_model_file(target):
            model = str(target)                       # already a model file: evaluate as is
        else:
            model = str(work / (tag + ".model.pt"))
            if not Path(model).exists():
                _run([sys.executable, "-m", "dream_ros", "train", "--export", src,
                      "--which", "last", "--to", model, "--int8-data", args.int8_data])
        outs = []
        options = "_".join(args.eval_args.split()).replace("-", "")   # other options, other outputs
        for val in args.val:
            out = work / ("%s__%s%s" % (tag, Path(val).name, "__" + options if options else ""))
            if not (out / "results.jsonl").exists():
                _run([sys.executable, "-m", "dream_ros", "eval", "--model", model, "--data", val,
                      "--out", str(out), "--overlays", "0"] + args.eval_args.split())
            outs.append(out)
        pck, add, wrong, n = pooled_scores(outs)
        rows.append((src, pck, add, wrong, n))
        print("%-50s PCK %.4f  ADD %.4f  sum %.4f  (%d of %d poses > 0.1 m off)"
              % (src, pck, add, pck + add, wrong, n), flush=True)
        if len(outs) > 1:        # each set on its own: is the choice carried by one of them?
            for val, out in zip(args.val, outs):
                s_pck, s_add, s_wrong, s_n = pooled_scores([out])
                print("    %-46s PCK %.4f  ADD %.4f  sum %.4f  (%d of %d)"
                      % (Path(val).name, s_pck, s_add, s_pck + s_add, s_wrong, s_n), flush=True)
    best = max(rows, key=lambda r: r[1] + r[2])
    print("best: %s (%.4f)" % (best[0], best[1] + best[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
