"""Training pipeline: augmentation moves keypoints, the growing-dataset index, schedules, and on a
tiny rendered Panda dataset (test/data/panda_tiny): overfitting (loss falls, PCK rises) and resume."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from dream_ros.errors import ConfigError, InputError

TINY = Path(__file__).resolve().parents[1] / "data" / "panda_tiny"
NAMES = ["panda_link0", "panda_link2", "panda_link3", "panda_link4", "panda_link6", "panda_link7",
         "panda_hand"]


def _dot_image(xy, size=(320, 240)):
    import cv2
    img = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y in xy:
        cv2.circle(img, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
    return img


def test_augmentation_moves_keypoints_with_pixels():
    from dream_ros.data.augment import augment, build_augmenter
    import albumentations as A
    import cv2
    # geometry only, always applied, so the dot must land where the keypoint went
    aug = A.Compose([A.Affine(translate_percent=(-0.1, 0.1), scale=(0.8, 1.3), rotate=(-20, 20),
                              border_mode=cv2.BORDER_CONSTANT, fill=0, keep_ratio=True, p=1.0)],
                    keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    rng = np.random.default_rng(1)
    for _ in range(5):
        xy = np.array([[rng.uniform(100, 220), rng.uniform(80, 160)]], np.float32)
        img, xy2 = augment(aug, _dot_image(xy), xy)
        gray = img[..., 0].astype(float)
        ys, xs = np.nonzero(gray > 100)
        centre = np.array([xs.mean(), ys.mean()])
        assert np.linalg.norm(centre - xy2[0]) < 1.5
    # the training pipelines keep every keypoint (out of frame ones too) and NaN stays NaN
    for strength in ("strong", "dream", "none"):
        xy = np.array([[10, 10], [-40, 50], [np.nan, np.nan]], np.float32)
        img, out = augment(build_augmenter(strength), _dot_image(xy[:1]), xy)
        assert out.shape == (3, 2) and np.isnan(out[2]).all() and np.isfinite(out[:2]).all()
        assert img.shape == (240, 320, 3) and img.dtype == np.uint8


def _write_frame(d: Path, i: int, xy):
    import cv2
    cv2.imwrite(str(d / ("%06d.rgb.jpg" % i)), _dot_image(xy))
    kps = [{"name": n, "location": [0, 0, 1], "projected_location": [float(x), float(y)]}
           for n, (x, y) in zip(NAMES, xy)]
    (d / ("%06d.json" % i)).write_text(json.dumps({"objects": [{"class": "panda", "keypoints": kps}]}))


def test_index_picks_up_new_frames_and_split_is_stable(tmp_path):
    from dream_ros.train.dataset import FrameIndex
    xy = np.tile([[50.0, 60.0]], (7, 1))
    for i in range(20):
        _write_frame(tmp_path, i, xy)
    idx = FrameIndex([str(tmp_path)], NAMES, min_age_s=0.0)
    assert idx.refresh() == 20 and idx.refresh() == 0
    train, val = idx.split(0.3)
    assert len(train) + len(val) == 20 and len(val) > 0
    val_keys = {r.key for r in val}
    for i in range(20, 50):
        _write_frame(tmp_path, i, xy)
    (tmp_path / "000050.json").write_text("{ half written")       # skipped, not fatal
    assert idx.refresh() == 30
    train2, val2 = idx.split(0.3)
    assert val_keys <= {r.key for r in val2}                         # old frames keep their split
    assert not ({r.key for r in train2} & {r.key for r in val2})


def test_schedules():
    from dream_ros.train.loop import TrainConfig, lr_at, sigma_at
    cfg = TrainConfig(data=["x"], out="y", lr=1e-3, warmup_images=100, schedule_images=1000,
                      lr_floor=0.1, sigma_start=4.0, sigma_anneal_images=500)
    assert lr_at(cfg, 0) < lr_at(cfg, 50) < lr_at(cfg, 100)
    assert lr_at(cfg, 100) > lr_at(cfg, 600) > lr_at(cfg, 1000)
    assert lr_at(cfg, 1000) == pytest.approx(1e-4) and lr_at(cfg, 5000) == pytest.approx(1e-4)
    assert sigma_at(cfg, 0, 2.0) == 4.0 and sigma_at(cfg, 250, 2.0) == 3.0
    assert sigma_at(cfg, 10000, 2.0) == 2.0


def test_keypoint_weights_scale_each_maps_share_of_the_loss():
    import torch
    from dream_ros.train.cli import _weights
    from dream_ros.train.loop import keypoint_weight_vector, weighted_mse
    assert _weights(["panda_hand=0.25", " panda_link0 = 2"], "--keypoint-weight", "NAME") == \
        {"panda_hand": 0.25, "panda_link0": 2.0}
    for bad in ("panda_hand", "panda_hand=x", "=0.5"):
        with pytest.raises(InputError, match="--keypoint-weight takes NAME=WEIGHT"):
            _weights([bad], "--keypoint-weight", "NAME")
    assert keypoint_weight_vector({}, NAMES) is None
    assert keypoint_weight_vector({"panda_hand": 1.0}, NAMES) is None
    w = keypoint_weight_vector({"panda_hand": 0.0, "panda_link2": 3.0}, NAMES)
    assert w.tolist() == [1, 3, 1, 1, 1, 1, 0]
    with pytest.raises(ConfigError, match="panda_finger"):
        keypoint_weight_vector({"panda_finger": 0.5}, NAMES)
    with pytest.raises(ConfigError, match=">= 0"):
        keypoint_weight_vector({"panda_hand": -1.0}, NAMES)
    # an error on a weight-0 map costs nothing; on a weight-3 map three times what it costs at 1
    target = torch.zeros(1, 7, 4, 4)
    pred = target.clone()
    pred[0, 6] = 1.0
    assert float(weighted_mse(pred, target, 10.0, w)) == 0.0
    assert float(weighted_mse(pred, target, 10.0)) > 0.0
    pred = target.clone()
    pred[0, 1] = 1.0
    assert float(weighted_mse(pred, target, 10.0, w)) == \
        pytest.approx(3 * float(weighted_mse(pred, target, 10.0)))


def test_data_weights_draw_a_set_that_many_times_as_often():
    from dream_ros.train.cli import _weights
    from dream_ros.train.dataset import FrameRecord
    from dream_ros.train.loop import data_weight_map, draw_order
    dirs = ["/data/big", "/data/small/"]
    assert _weights(["/data/a=b/small=3"], "--data-weight", "DIR") == {"/data/a=b/small": 3.0}
    with pytest.raises(InputError, match="--data-weight takes DIR=WEIGHT"):
        _weights(["/data/small"], "--data-weight", "DIR")
    with pytest.raises(ConfigError, match="/data/other"):
        data_weight_map({"/data/other": 2.0}, dirs)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="> 0"):
            data_weight_map({"/data/small": bad}, dirs)
    assert data_weight_map({}, dirs) == {} and data_weight_map({"/data/big": 1.0}, dirs) == {}
    weights = data_weight_map({"/data/small": 4.0}, dirs)    # the trailing slash is the same set
    assert weights == {"/data/small": 4.0}
    xy = np.zeros((7, 2), np.float32)
    records = [FrameRecord("x.jpg", xy, (640, 480), "%s/%d" % (d, i), "/data/" + d)
               for d, n in (("big", 8000), ("small", 2000)) for i in range(n)]
    rng = np.random.default_rng(0)
    plain = draw_order(records, 1000, {}, rng)
    weighted = draw_order(records, 1000, weights, rng)
    share = lambda order: np.mean([records[i].source == "/data/small" for i in order])
    assert 0.15 < share(plain) < 0.25           # 20 % of the frames, drawn uniformly
    assert 0.45 < share(weighted) < 0.55        # 4 x 2000 against 8000: half the draws
    assert len(set(weighted.tolist())) == 1000  # without replacement
    # a draw larger than the set repeats it, as the plain permutation does
    assert len(draw_order(records[:10], 25, weights, rng)) == 25


def test_precision_follows_the_cpus_bfloat16_support(tmp_path, monkeypatch):
    import torch
    from dream_ros.train import distributed
    native = tmp_path / "cpuinfo_native"
    native.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    emulated = tmp_path / "cpuinfo_emulated"
    emulated.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n")
    assert distributed.cpu_has_native_bf16(str(native))
    assert not distributed.cpu_has_native_bf16(str(emulated))
    assert not distributed.cpu_has_native_bf16(str(tmp_path / "missing"))
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for has_bf16, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda *a, v=has_bf16: v)
        assert distributed.resolve_precision("auto", cpu) == expected
    assert distributed.resolve_precision("fp32", cpu) == "fp32"
    assert distributed.resolve_precision("bf16", cpu) == "bf16"
    assert distributed.resolve_precision("auto", cuda) == "fp16"
    assert distributed.resolve_precision("fp32", cuda) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        distributed.resolve_precision("fp8", cpu)
    with distributed.autocast(cpu, "bf16"):
        y = torch.nn.functional.linear(torch.ones(1, 4), torch.ones(3, 4))
    assert y.dtype == torch.bfloat16
    with distributed.autocast(cpu, "fp32"):
        assert torch.nn.functional.linear(torch.ones(1, 4), torch.ones(3, 4)).dtype == torch.float32


def _cfg(tmp_path, **kw):
    from dream_ros.train.loop import TrainConfig
    base = dict(data=[str(TINY)], out=str(tmp_path / "run"), arch="dream_tiny_s4",
                input_size=(160, 128), batch_size=4, epoch_images=4, lr=3e-3, warmup_images=8,
                schedule_images=100000, sigma_start=2.0, sigma_anneal_images=0, augment="none",
                workers=0, threads=2, val_fraction=0.0, min_frames=1, progress=False,
                log_every=1000, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def _fit_metrics(run_dir: Path, cfg):
    """Loss and PCK of a run's last checkpoint (or an untrained net) on all tiny frames."""
    import torch
    from torch.utils.data import DataLoader
    from dream_ros.network.codec import BeliefMapCodec
    from dream_ros.network.ours import build_network
    from dream_ros.train.dataset import FrameIndex, KeypointDataset
    from dream_ros.train.loop import evaluate
    torch.manual_seed(0)
    net = build_network(cfg.arch, 7)
    ck = run_dir / "last.pt"
    if ck.exists():
        net.load_state_dict(torch.load(str(ck), map_location="cpu", weights_only=False)["model"])
    idx = FrameIndex([str(TINY)], NAMES, min_age_s=0.0)
    idx.refresh()
    recs, _ = idx.split(0.0)
    out_size = (cfg.input_size[0] // 4, cfg.input_size[1] // 4)
    dl = DataLoader(KeypointDataset(recs, cfg.input_size, out_size, "none"), batch_size=8)
    return evaluate(net, dl, BeliefMapCodec(), out_size, torch.device("cpu"), 0.0)


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_overfits_tiny_rendered_dataset(tmp_path, precision):
    import torch
    from dream_ros.train.loop import train
    cfg = _cfg(tmp_path, max_steps=70, fg_weight=10.0, precision=precision)
    before = _fit_metrics(tmp_path / "nothing", cfg)
    res = train(cfg)
    # bf16 autocast is for the forward pass only: the saved weights stay float32
    saved = torch.load(str(Path(cfg.out) / "last.pt"), map_location="cpu", weights_only=False)
    assert all(v.dtype == torch.float32 for v in saved["model"].values() if v.is_floating_point())
    assert res["counters"]["steps"] == 70 and res["counters"]["images_seen"] == 280
    after = _fit_metrics(Path(cfg.out), cfg)
    assert after["val_mse"] < 0.6 * before["val_mse"]
    assert after.get("pck@10", 0.0) > before.get("pck@10", 0.0) + 0.3


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_resume_restores_weights_optimizer_and_counters(tmp_path, capsys):
    import torch
    from dream_ros.train.checkpoint import load_checkpoint
    from dream_ros.train.loop import train
    train(_cfg(tmp_path, max_steps=2))
    first = load_checkpoint(Path(tmp_path / "run"))
    assert first["counters"]["steps"] == 2 and first["counters"]["images_seen"] == 8
    # a resumed run may change the loss's weights per keypoint; the log and checkpoint say so
    res = train(_cfg(tmp_path, max_steps=3, resume=True, keypoint_weights={"panda_hand": 0.5}))
    second = load_checkpoint(Path(tmp_path / "run"))
    assert "loss weights per keypoint: panda_hand 0.5" in capsys.readouterr().out
    assert second["train_config"]["keypoint_weights"] == {"panda_hand": 0.5}
    assert res["counters"]["steps"] == 3 and second["counters"]["images_seen"] == 12
    assert second["counters"]["sessions"] == 2 and len(second["provenance"]["commands"]) == 2
    # Adam's step count continued (restored optimizer), weights moved on from the first run's
    steps = [s["step"] for s in second["optimizer"]["state"].values()]
    assert all(float(s) == 3 for s in steps)
    k = next(k for k in first["model"] if k.endswith("weight") and first["model"][k].dim() == 4)
    assert not torch.equal(first["model"][k], second["model"][k])
    assert second["counters"]["wall_hours"] >= first["counters"]["wall_hours"]
    # a different architecture must not silently resume from this run
    from dream_ros.errors import ConfigError
    with pytest.raises(ConfigError):
        train(_cfg(tmp_path, max_steps=4, resume=True, arch="dream_lite_s4"))


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_average_weights_is_the_mean_with_the_last_checkpoints_counters(tmp_path):
    import torch
    from dream_ros.cli import main
    from dream_ros.errors import ConfigError
    from dream_ros.train.checkpoint import average_checkpoints, load_checkpoint
    from dream_ros.train.loop import train
    train(_cfg(tmp_path, max_steps=2))
    shutil.copy(tmp_path / "run" / "last.pt", tmp_path / "early.pt")
    train(_cfg(tmp_path, max_steps=3, resume=True))
    assert main(["train", "--average-weights", str(tmp_path / "early.pt"), str(tmp_path / "run"),
                 "--to", str(tmp_path / "avg.pt")]) == 0
    early, late = load_checkpoint(tmp_path / "early.pt"), load_checkpoint(tmp_path / "run")
    avg = load_checkpoint(tmp_path / "avg.pt")
    k = next(k for k in late["model"] if k.endswith("weight") and late["model"][k].dim() == 4)
    assert not torch.equal(early["model"][k], late["model"][k])
    torch.testing.assert_close(avg["model"][k], (early["model"][k] + late["model"][k]) / 2)
    assert avg["counters"] == late["counters"]
    assert avg["provenance"]["weight_average_of"] == [str(tmp_path / "early.pt"),
                                                      str(tmp_path / "run")]
    with pytest.raises(ConfigError, match="at least two"):
        average_checkpoints([tmp_path / "early.pt"], tmp_path / "x.pt")
    train(_cfg(tmp_path, max_steps=1, arch="dream_lite_s4", out=str(tmp_path / "other")))
    with pytest.raises(ConfigError, match="different network"):
        average_checkpoints([tmp_path / "early.pt", tmp_path / "other"], tmp_path / "x.pt")


def _resume_from_only(tmp_path, state_path, max_steps):
    """Resume the run in tmp_path/run with nothing but ``state_path`` as its last.pt; returns
    the checkpoint it then writes."""
    from dream_ros.train.checkpoint import load_checkpoint
    from dream_ros.train.loop import train
    shutil.rmtree(tmp_path / "run")
    (tmp_path / "run").mkdir()
    shutil.copy(state_path, tmp_path / "run" / "last.pt")
    train(_cfg(tmp_path, max_steps=max_steps, resume=True))
    return load_checkpoint(tmp_path / "run")


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_compact_state_is_smaller_and_resumes_in_float32(tmp_path):
    import torch
    from dream_ros.train.checkpoint import load_checkpoint, save_compact_checkpoint
    from dream_ros.train.loop import train
    train(_cfg(tmp_path, max_steps=2))
    full = load_checkpoint(tmp_path / "run")
    compact = save_compact_checkpoint(tmp_path / "run", tmp_path / "state.pt")
    assert compact.stat().st_size < 0.75 * (tmp_path / "run" / "last.pt").stat().st_size
    small = load_checkpoint(compact)
    for key, per_param in small["optimizer"]["state"].items():
        ref = full["optimizer"]["state"][key]
        for name, value in per_param.items():
            if value.dim() > 0:
                assert value.dtype == torch.bfloat16
                torch.testing.assert_close(value.float(), ref[name], rtol=1e-2, atol=1e-12)
    for k, v in small["model"].items():
        assert torch.equal(v, full["model"][k])                         # weights untouched
    # a run directory holding only the compact state resumes, Adam's state back in float32
    resumed = _resume_from_only(tmp_path, compact, max_steps=3)
    assert resumed["counters"]["steps"] == 3
    assert all(v.dtype == torch.float32 for st in resumed["optimizer"]["state"].values()
               for v in st.values() if v.dim() > 0)


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_compact_state_shrinks_only_as_far_as_its_budget_needs(tmp_path):
    import torch
    from dream_ros.train.checkpoint import _state_mb, load_checkpoint, save_compact_checkpoint
    from dream_ros.train.loop import train
    train(_cfg(tmp_path, max_steps=2))
    full = load_checkpoint(tmp_path / "run")
    weights_mb = _state_mb({"model": full["model"]})     # float32 weights; Adam: 2 x as much
    # bf16 moments alone fit (weights + 2 x weights / 2)
    roomy = load_checkpoint(save_compact_checkpoint(tmp_path / "run", tmp_path / "a.pt",
                                                    budget_mb=2.05 * weights_mb))
    assert roomy["compact"] == {"moments": "bfloat16", "weights": "float32", "dropped": []}
    # fp16 weights as well (weights / 2 + weights)
    mid = load_checkpoint(save_compact_checkpoint(tmp_path / "run", tmp_path / "b.pt",
                                                  budget_mb=1.55 * weights_mb))
    assert mid["compact"] == {"moments": "bfloat16", "weights": "float16", "dropped": []}
    # and no first moment (weights / 2 + weights / 2): zeros again once loaded
    tight_path = save_compact_checkpoint(tmp_path / "run", tmp_path / "c.pt",
                                         budget_mb=1.05 * weights_mb)
    raw = torch.load(str(tight_path), map_location="cpu", weights_only=False)
    assert all("exp_avg" not in st for st in raw["optimizer"]["state"].values())
    assert tight_path.stat().st_size < 0.4 * (tmp_path / "run" / "last.pt").stat().st_size
    tight = load_checkpoint(tight_path)
    assert tight["compact"]["dropped"] == ["exp_avg"]
    for key, per_param in tight["optimizer"]["state"].items():
        ref = full["optimizer"]["state"][key]
        if ref["exp_avg"].dim() > 0:
            assert not per_param["exp_avg"].any() and ref["exp_avg"].any()
            assert per_param["exp_avg"].shape == ref["exp_avg"].shape
    for k, v in tight["model"].items():
        if v.is_floating_point():
            assert v.dtype == torch.float16
            torch.testing.assert_close(v.float(), full["model"][k], rtol=1e-3, atol=1e-4)
    # the run resumes from it: float32 weights and moments, the first moment filling again
    resumed = _resume_from_only(tmp_path, tight_path, max_steps=3)
    assert resumed["counters"]["steps"] == 3
    assert all(v.dtype == torch.float32 for v in resumed["model"].values() if v.is_floating_point())
    moments = [st["exp_avg"] for st in resumed["optimizer"]["state"].values()]
    assert all(torch.isfinite(m).all() for m in moments) and any(m.any() for m in moments)


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_export_writes_a_loadable_fp16_model_and_card(tmp_path):
    import torch
    from dream_ros.network.model_file import load_model
    from dream_ros.train.export import build_net, export_run, _load
    from dream_ros.train.loop import train
    train(_cfg(tmp_path, max_steps=1, input_size=(320, 240)))
    out = export_run(str(tmp_path / "run"), str(tmp_path / "m.pt"), card=str(tmp_path / "m.md"),
                     int8_data=str(TINY))
    net, cfg = load_model(str(out))
    assert cfg.arch == "dream_tiny_s4" and cfg.input_size == (320, 240) and cfg.output_size == (80, 60)
    assert cfg.onnx_int8 and "activation ranges from" in (tmp_path / "m.md").read_text()
    assert "--which last --int8-data %s" % TINY in (tmp_path / "m.md").read_text()
    assert cfg.training["images_seen"] == 4 and cfg.training["commands"]
    assert cfg.preprocessing == "letterbox" and out.stat().st_size < 25 * 1024 * 1024
    ref = build_net(_load(str(tmp_path / "run"), "last"))
    x = torch.randn(1, 3, 240, 320)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=2e-3, rtol=2e-2)   # fp16 weights
    card = (tmp_path / "m.md").read_text()
    assert "images seen (cumulative) | 4 |" in card and "## Notes" in card
    assert "keypoint errors the pose weighs by" in card
    # a run started before a codec parameter existed exports it at today's default
    from dream_ros.network.codec import BeliefMapCodec
    last = tmp_path / "run" / "last.pt"
    state = torch.load(str(last), weights_only=False)
    state["codec"].pop("refine_sigma")
    torch.save(state, str(last))
    old = export_run(str(tmp_path / "run"), str(tmp_path / "old.pt"), card=str(tmp_path / "old.md"))
    default = BeliefMapCodec().refine_sigma
    assert load_model(str(old))[1].codec["refine_sigma"] == default
    assert not load_model(str(old))[1].onnx_int8       # no 640x480 set known to the run
    assert "none: fp32 only" in (tmp_path / "old.md").read_text()
    assert '"refine_sigma": %s' % default in (tmp_path / "old.md").read_text()
    # --init fine-tunes from the exported file: same arch, its weights and preprocessing
    import torch as _t
    from dream_ros.train.checkpoint import load_checkpoint
    res = train(_cfg(tmp_path, out=str(tmp_path / "ft"), arch=None, input_size=None, init=str(out),
                     max_steps=1, lr=0.0))
    st = load_checkpoint(tmp_path / "ft")
    assert st["arch"] == "dream_tiny_s4" and st["provenance"]["init"] == str(out)
    assert st["spec"]["preprocessing"] == "letterbox" and st["input_size"] == [320, 240]
    k = "stem.0.0.weight"
    _t.testing.assert_close(st["model"][k], net.state_dict()[k])          # lr 0: unchanged


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_init_grows_a_net_without_changing_its_output(tmp_path):
    import torch
    from dream_ros.network.model_file import load_model
    from dream_ros.train.export import export_run
    from dream_ros.train.loop import TrainConfig, _init_from, train
    train(_cfg(tmp_path, max_steps=2, input_size=(320, 240)))
    small = export_run(str(tmp_path / "run"), str(tmp_path / "small.pt"))
    src, _ = load_model(str(small))
    cfg = TrainConfig(data=[], out=str(tmp_path / "grown"), arch="dream_tiny_deep_s4",
                      init=str(small))
    grown, spec, prov = _init_from(cfg, NAMES, lambda msg: None)
    assert spec["arch"] == "dream_tiny_deep_s4"
    assert prov["init_training"] == {"arch": "dream_tiny_s4", "images_seen": 8,
                                     "wall_hours": pytest.approx(0.0, abs=0.01)}
    assert sum(p.numel() for p in grown.parameters()) > 1.5 * sum(p.numel() for p in src.parameters())
    x = torch.randn(2, 3, 240, 320)
    with torch.no_grad():
        torch.testing.assert_close(grown.eval()(x), src.float().eval()(x))   # new blocks: identities
    # the grown run's card counts the images the init model had seen
    train(_cfg(tmp_path, out=str(tmp_path / "grown"), arch="dream_tiny_deep_s4", input_size=None,
               init=str(small), max_steps=1))
    card = tmp_path / "grown.md"
    export_run(str(tmp_path / "grown"), str(tmp_path / "grown.pt"), card=str(card))
    assert "| 4 in this run + 8 in the --init model (dream_tiny_s4) = 12 |" in card.read_text()
    # a second generation (deep -> deeper) counts the whole chain and again keeps the output
    deep, _ = load_model(str(tmp_path / "grown.pt"))
    cfg = TrainConfig(data=[], out=str(tmp_path / "deeper"), arch="dream_tiny_deeper_s4",
                      init=str(tmp_path / "grown.pt"))
    deeper, _, prov = _init_from(cfg, NAMES, lambda msg: None)
    assert prov["init_training"]["arch"] == "dream_tiny_deep_s4"
    assert prov["init_training"]["images_seen"] == 12
    with torch.no_grad():
        torch.testing.assert_close(deeper.eval()(x), deep.float().eval()(x))


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_init_grows_the_head_for_a_config_with_more_keypoints(tmp_path):
    """panda -> panda_extended: the model's 7 maps unchanged, 4 new ones, trained on data that
    carries only the 7 (the rest derived from each frame's joint state)."""
    import torch
    from dream_ros.network.model_file import load_model
    from dream_ros.robot_config import load_robot_config
    from dream_ros.train.export import export_run
    from dream_ros.train.loop import TrainConfig, _init_from, train
    train(_cfg(tmp_path, max_steps=2, input_size=(320, 240)))
    small = export_run(str(tmp_path / "run"), str(tmp_path / "small.pt"))
    src, _ = load_model(str(small))
    extended = load_robot_config("panda_extended").keypoint_names
    cfg = TrainConfig(data=[], out=str(tmp_path / "ext"), init=str(small), robot="panda_extended")
    net, spec, _ = _init_from(cfg, extended, lambda msg: None)
    assert spec["arch"] == "dream_tiny_s4"
    x = torch.randn(2, 3, 240, 320)
    with torch.no_grad():
        out = net.eval()(x)
        assert out.shape[1] == 11
        torch.testing.assert_close(out[:, :7], src.float().eval()(x))
    # a config that changes the model's keypoints (not only adds) is refused
    with pytest.raises(ConfigError, match="add keypoints after the model's"):
        _init_from(cfg, extended[1:], lambda msg: None)
    res = train(_cfg(tmp_path, out=str(tmp_path / "ext"), robot="panda_extended", init=str(small),
                     input_size=None, max_steps=2))
    assert res["counters"]["steps"] == 2
    model = export_run(str(tmp_path / "ext"), str(tmp_path / "ext.pt"))
    ext_config = load_model(str(model))[1]
    assert ext_config.keypoint_names == list(extended)
    # the file says which keypoints form each half of the arm (the zoom pass's half views)
    assert ext_config.keypoint_chain_order == [0, 7, 1, 8, 2, 3, 9, 4, 5, 6, 10]


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_fixed_validation_set_replaces_the_hash_split(tmp_path):
    from dream_ros.train.loop import train
    res = train(_cfg(tmp_path, max_steps=1, val_fraction=0.5, val_data=[str(TINY)]))
    n_tiny = len(list(TINY.glob("0*.json")))
    assert res["history"][-1]["n_val"] == n_tiny          # every frame of --val-data
    assert res["history"][-1]["n_inframe"] > 0


def test_export_takes_the_keypoints_pixel_errors_from_the_validation(tmp_path):
    from dream_ros.train.export import keypoint_sigma
    state = {"metrics": {"pipeline_keypoint_median_px": [2.0, 3.12345, 4.0]}}
    assert keypoint_sigma(state, None) == [2.0, 3.123, 4.0]
    # a keypoint never found (NaN) or no validation on record: the pose weighs them alike
    state = {"metrics": {"pipeline_keypoint_median_px": [2.0, float("nan"), 4.0]}}
    assert keypoint_sigma(state, None) == []
    assert keypoint_sigma({"train_config": {"val_pipeline_data": str(tmp_path / "gone")}}, None) == []
    with pytest.raises(InputError, match="sigma-data"):
        keypoint_sigma({}, None, str(tmp_path / "gone"))


def test_pipeline_validation_scores_the_full_pipeline_and_picks_the_best(tmp_path, monkeypatch):
    from dream_ros.train import pipeline_val
    from dream_ros.train.checkpoint import load_checkpoint
    from dream_ros.train.loop import train
    res = train(_cfg(tmp_path, max_steps=1, val_data=[str(TINY)],
                     val_pipeline_data=str(TINY)))
    m = res["history"][-1]
    assert {"pipeline_pck_auc", "pipeline_add_auc", "pipeline_median_px"} <= set(m)
    assert len(m["pipeline_keypoint_median_px"]) == 7
    assert 0.0 <= m["pipeline_pck_auc"] <= 1.0 and 0.0 <= m["pipeline_add_auc"] <= 1.0
    assert m["pipeline_score"] == pytest.approx(m["pipeline_pck_auc"] + m["pipeline_add_auc"])
    # the same maps' validation without the pipeline is a different competition
    plain = train(_cfg(tmp_path / "plain", max_steps=1, val_data=[str(TINY)]))
    assert plain["history"][-1]["val_signature"] != m["val_signature"]
    # the best checkpoint is chosen by the pipeline's score, not by the maps' PCK AUC
    calls = []

    def fake(net, config, data_dir, limit=None):
        calls.append((config.arch, config.input_size, data_dir))
        return {"pipeline_pck_auc": 0.3, "pipeline_add_auc": 0.12, "pipeline_score": 0.42}

    monkeypatch.setattr(pipeline_val, "pipeline_metrics", fake)
    res = train(_cfg(tmp_path / "fake", max_steps=1, val_data=[str(TINY)],
                     val_pipeline_data=str(TINY)))
    assert calls == [("dream_tiny_s4", (160, 128), str(TINY))]
    assert res["history"][-1]["pck_auc"] != pytest.approx(0.42)
    assert res["best_score"] == pytest.approx(0.42)
    assert load_checkpoint(tmp_path / "fake" / "run" / "best.pt")["best_score"] == \
        pytest.approx(0.42)


@pytest.mark.skipif(not TINY.is_dir(), reason="tiny rendered dataset missing")
def test_sigterm_checkpoints_and_stops(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from dream_ros.train.checkpoint import load_checkpoint
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dream_ros", "train", "--data", str(TINY), "--out", str(run),
           "--arch", "dream_tiny_s4", "--input-size", "160", "128", "--batch-size", "2",
           "--epoch-images", "1000", "--augment", "none", "--workers", "0", "--threads", "1",
           "--val-fraction", "0", "--min-frames", "1", "--no-progress", "--log-every", "1",
           "--ckpt-minutes", "1000"]
    log = tmp_path / "train.log"
    out = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (log.exists() and "step 3 " in log.read_text()):
            time.sleep(0.2)
        assert "step 3 " in log.read_text(), "training did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    assert "terminated: checkpoint" in log.read_text()
    assert load_checkpoint(run)["counters"]["steps"] >= 3       # mid-epoch steps were kept


def test_robot_defaults_to_the_init_models(tmp_path):
    """`train --init` of an 11-keypoint model trains panda_extended without --robot; no --init,
    or a model of a robot we have no config for, keeps panda."""
    from dream_ros.network.model_file import ModelConfig, save_model
    from dream_ros.robot_config import load_robot_config
    from dream_ros.train.cli import _init_robot
    names = load_robot_config("panda_extended").keypoint_names
    for robot, expected in (("panda_extended", "panda_extended"), ("no_such_robot", "panda")):
        cfg = ModelConfig.for_ours(robot, names, names, arch="dream_tiny_s4")
        save_model(tmp_path / ("%s.pt" % robot), cfg.build_network(), cfg)
        assert _init_robot(str(tmp_path / ("%s.pt" % robot))) == expected
    assert _init_robot(None) == "panda"
