"""The ``bench`` subcommand's output contract (figures are printed, never asserted)."""
from __future__ import annotations

import json

import pytest

from dream_ros.cli import main


def _last_json(capsys):
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1]), lines


def test_bench_reports_stages_and_ratio_to_vgg_q(capsys):
    assert main(["bench", "--frames", "2", "--dream-frames", "1", "--warmup", "0",
                 "--dream-archs", "vgg_q", "--json"]) == 0
    res, lines = _last_json(capsys)
    assert {"default_fps", "vgg_q_fps", "speedup_vs_vgg_q"} <= set(res)
    assert res["default_fps"] > 0 and res["vgg_q_fps"] > 0
    assert res["speedup_vs_vgg_q"] == pytest.approx(res["default_fps"] / res["vgg_q_fps"])
    labels = [m["label"] for m in res["models"]]
    assert labels[1] == "DREAM vgg_q" and labels[0].startswith("ours")
    for m in res["models"]:
        for stage in ("decode", "preprocess", "network", "peaks", "zoom", "fk", "pnp", "overlay",
                      "e2e"):
            st = m["stages_ms"][stage]
            assert 0 <= st["median"] <= st["p95"]
        # the stages are timed back to back inside one loop, so they add up to the end-to-end
        # time (with <= 2 frames a median is a mean, which is additive)
        parts = sum(m["stages_ms"][s]["median"] for s in ("decode", "preprocess", "network",
                                                          "peaks", "zoom", "fk", "pnp"))
        assert m["stages_ms"]["e2e"]["median"] == pytest.approx(parts, rel=1e-6)
        assert m["peak_rss_mb"] > 0 and m["frames"] >= 1 and m["cpu_ms_per_frame"] > 0
    assert m["params"] == 22220615                       # DREAM VGG-Q, as in dream-compat.md
    node = res["models"][0]["node_path"]                 # the node's own call, as a cross-check
    assert node["frames"] == 2 and node["median"] > 0 and res["default_node_path_fps"] > 0
    guided = res["models"][0]["node_path_guided"]        # ... with the node's guided zoom
    assert guided["frames"] == 2 and res["default_node_path_guided_fps"] > 0
    text = "\n".join(lines)
    assert "PnP" in text and "throughput vs VGG-Q" in text and "load average" in text
    assert "Calibrator.process" in text and "guided zoom" in text


def test_bench_without_dream_has_null_ratio(capsys):
    assert main(["bench", "--frames", "1", "--warmup", "0", "--dream-archs", "none"]) == 0
    res, lines = _last_json(capsys)
    assert res["vgg_q_fps"] is None and res["speedup_vs_vgg_q"] is None
    assert res["default_fps"] > 0
    # the shipped model runs as the node runs it: its int8 network, the default zoom crops
    from dream_ros.network.zoom import DEFAULT_ZOOM_VIEWS
    assert "backend onnx-int8; %d zoom views" % DEFAULT_ZOOM_VIEWS in "\n".join(lines)


def test_bench_times_the_backend_and_crops_asked_for(capsys):
    assert main(["bench", "--frames", "1", "--warmup", "0", "--dream-archs", "none",
                 "--backend", "onnx", "--zoom-views", "7"]) == 0
    assert "backend onnx; 7 zoom views" in capsys.readouterr().out
    assert main(["bench", "--frames", "1", "--dream-archs", "none", "--zoom-views", "4"]) == 2
    assert "zoom views" in capsys.readouterr().err


def test_bench_rejects_bad_counts(capsys):
    assert main(["bench", "--frames", "0"]) == 2
    assert "frames" in capsys.readouterr().err
