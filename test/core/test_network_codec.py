"""BeliefMapCodec: labels, DREAM peak extraction rules, batching, torch/numpy agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from dream_ros.errors import ConfigError, InputError
from dream_ros.network.codec import BeliefMapCodec, dream_peak_offset


def gaussian_map(x, y, w=80, h=60, sigma=2.0, amp=1.0):
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    return amp * np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("x,y", [(10.0, 20.0), (33.3, 17.8), (50.5, 40.5), (5.02, 54.7),
                                 (74.6, 4.5)])
def test_ours_finds_single_subpixel_peak_to_a_tenth(x, y):
    # Unbiased while the peak is >= ~4 px (2 sigma) from the border; closer the cut label biases it.
    codec = BeliefMapCodec()
    xy, score, det = codec.decode(gaussian_map(x, y)[None].astype(np.float32))
    assert det[0]
    assert np.hypot(xy[0, 0] - x, xy[0, 1] - y) < 0.1
    assert score[0] > 0.5


@pytest.mark.parametrize("x,y", [(10.0, 20.0), (33.0, 17.0), (60.0, 45.0)])
def test_dream_finds_integer_peak_plus_offset(x, y):
    codec = BeliefMapCodec.dream(peak_offset=0.0)
    xy, score, det = codec.decode(gaussian_map(x, y)[None])
    assert det[0] and np.allclose(xy[0], [x, y], atol=1e-6) and score[0] == pytest.approx(1.0)
    xy2, _, _ = BeliefMapCodec.dream((100, 100)).decode(gaussian_map(x, y)[None])
    assert np.allclose(xy2[0], [x + 0.4395, y + 0.4395], atol=1e-6)


def test_dream_mean5_matches_explicit_window_mean():
    rng = np.random.default_rng(0)
    m = gaussian_map(20.3, 30.6) + 0.05 * rng.standard_normal((60, 80))
    xy, _, det = BeliefMapCodec.dream(peak_offset=0.0).decode(m[None])
    sm = gaussian_filter(m, 3.0)
    r, c = np.unravel_index(np.argmax(sm), sm.shape)
    win = m[r - 2:r + 3, c - 2:c + 3]
    rr, cc = np.mgrid[r - 2:r + 3, c - 2:c + 3]
    assert det[0]
    assert np.allclose(xy[0], [(win * cc).sum() / win.sum(), (win * rr).sum() / win.sum()])


@pytest.mark.parametrize("codec", [BeliefMapCodec(), BeliefMapCodec.dream()])
def test_two_equal_peaks_and_empty_map_are_not_detected(codec):
    two = gaussian_map(20, 20) + gaussian_map(60, 40)
    near_equal = gaussian_map(20, 20) + gaussian_map(60, 40, amp=0.9)
    clear = gaussian_map(20, 20) + gaussian_map(60, 40, amp=0.5)
    empty = np.zeros((60, 80))
    xy, scores, det = codec.decode(np.stack([two, near_equal, clear, empty]).astype(np.float32))
    assert det.tolist() == [False, False, True, False]
    assert np.isnan(xy[[0, 1, 3]]).all()
    assert np.allclose(xy[2], [20, 20], atol=0.5)
    assert scores[3] == 0.0


def test_threshold_is_configurable_and_dream_smoothed_peak_height():
    m = BeliefMapCodec.dream().encode(np.array([[40.0, 30.0]]), np.ones(1, bool), (80, 60))[0]
    assert gaussian_filter(m, 3.0).max() == pytest.approx(0.304, abs=0.001)
    assert BeliefMapCodec(threshold=0.2).decode(m[None])[2][0]
    assert not BeliefMapCodec(threshold=0.35).decode(m[None])[2][0]


def test_batched_decode_equals_per_map_decode():
    rng = np.random.default_rng(1)
    codec = BeliefMapCodec()
    maps = np.stack([np.stack([gaussian_map(*rng.uniform([5, 5], [75, 55])) for _ in range(3)])
                     for _ in range(4)]).astype(np.float32)
    maps[1, 2] = 0
    xy, sc, det = codec.decode(maps)
    assert xy.shape == (4, 3, 2) and sc.shape == (4, 3) and det.shape == (4, 3)
    for b in range(4):
        xy1, sc1, det1 = codec.decode(maps[b])
        np.testing.assert_array_equal(det1, det[b])
        np.testing.assert_allclose(xy1, xy[b])
    assert not det[1, 2]


def test_dream_label_rule():
    codec = BeliefMapCodec.dream()
    xy = np.array([[10.7, 20.2], [3.9, 20.0], [75.0, 20.0], [40.0, 55.0], [40.0, 5.0], [40, 30]])
    valid = np.array([True, True, True, True, True, False])
    maps = codec.encode(xy, valid, (80, 60))
    assert maps.shape == (6, 60, 80) and maps.dtype == np.float32
    # centred on the truncated pixel, peak 1, 9x9 support
    assert maps[0].max() == 1.0 and maps[0][20, 10] == 1.0
    assert np.count_nonzero(maps[0]) == 81
    assert maps[0][20, 14] == pytest.approx(np.exp(-16 / 8))
    # window leaves the map (u-4 < 0, u+5 >= w, v+5 >= h) or invalid -> whole map zero
    assert not maps[1].any() and not maps[2].any() and not maps[3].any() and not maps[5].any()
    assert maps[4].any()   # v-4 = 1 >= 0


def test_subpixel_labels_round_trip_and_out_of_map_is_zero():
    codec = BeliefMapCodec()
    xy = np.array([[12.34, 45.67], [0.2, 30.0], [-0.7, 30.0], [40.0, 59.6]])
    maps = codec.encode(xy, np.ones(4, bool), (80, 60))
    assert maps[0].max() <= 1.0 and maps[0].max() > 0.9
    assert maps[1].any() and not maps[2].any() and not maps[3].any()
    out, _, det = codec.decode(maps[:1])
    assert det[0] and np.allclose(out[0], xy[0], atol=0.05)


def test_encode_torch_batched_matches_numpy():
    codec = BeliefMapCodec()
    xy = torch.tensor([[[10.5, 11.5], [float("nan"), 3.0]], [[70.2, 50.1], [30.0, 30.0]]])
    valid = torch.tensor([[True, True], [True, False]])
    maps = codec.encode_torch(xy, valid, (80, 60))
    assert maps.shape == (2, 2, 60, 80) and maps.dtype == torch.float32
    for b in range(2):
        np.testing.assert_allclose(maps[b].numpy(), codec.encode(xy[b].numpy(), valid[b].numpy(),
                                                                 (80, 60)))
    assert not maps[0, 1].any() and not maps[1, 1].any()


def test_coordinate_mapping_and_offset_rule():
    xy = np.array([[10.0, 20.0]])
    out = BeliefMapCodec.input_to_output(xy, (320, 240), (80, 60))
    assert np.allclose(out, [[2.5, 5.0]])
    assert np.allclose(BeliefMapCodec.output_to_input(out, (80, 60), (320, 240)), xy)
    assert dream_peak_offset((100, 100)) == 0.4395 and dream_peak_offset((400, 400)) == 0.0
    assert dream_peak_offset((416, 416)) == 0.0 and dream_peak_offset((208, 208)) == 0.4395


def test_bad_input_and_config_raise():
    with pytest.raises(ConfigError):
        BeliefMapCodec(label_mode="nope")
    with pytest.raises(ConfigError):
        BeliefMapCodec.from_dict({"sigma": 2.0, "bogus": 1})
    with pytest.raises(InputError):
        BeliefMapCodec().decode(np.zeros((60, 80)))
    with pytest.raises(InputError):
        BeliefMapCodec().encode(np.zeros((3, 3)), np.ones(3, bool), (80, 60))
    c = BeliefMapCodec(sigma=1.5, peak_offset=0.1)
    assert BeliefMapCodec.from_dict(c.to_dict()) == c


def dream_reference(m, offset, threshold=0.01, ambiguity=0.25):
    """Straightforward per-pixel transcription of dream-compat.md §4, for one (h, w) map."""
    h, w = m.shape
    sm = gaussian_filter(m, 3.0, mode="reflect", truncate=4.0)
    peaks = []
    for r in range(h):
        for c in range(w):
            v = sm[r, c]
            nb = [sm[rr, cc] if 0 <= rr < h and 0 <= cc < w else 0.0
                  for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))]
            if v > threshold and all(v >= n for n in nb):
                sw = sx = sy = 0.0
                for rr in range(r - 2, r + 3):
                    for cc in range(c - 2, c + 3):
                        if 0 <= rr < h and 0 <= cc < w:
                            sw += m[rr, cc]
                            sx += m[rr, cc] * cc
                            sy += m[rr, cc] * rr
                x, y = (sx / sw, sy / sw) if sw != 0 else (c, r)
                peaks.append((float(m[r, c]), x + offset, y + offset))
    if not peaks:
        return None
    peaks.sort(key=lambda p: -p[0])
    if len(peaks) == 1 or peaks[0][0] - peaks[1][0] >= ambiguity:
        return peaks[0][1:]
    return None


def test_vectorised_dream_decode_equals_per_pixel_reference():
    rng = np.random.default_rng(3)
    maps = []
    for i in range(24):
        m = rng.normal(0, 0.02, (30, 40))
        for _ in range(rng.integers(0, 4)):
            m += gaussian_map(*rng.uniform([-2, -2], [42, 32]), w=40, h=30,
                              amp=rng.uniform(0.2, 1.2))
        maps.append(m)
    maps = np.stack(maps).astype(np.float32)
    xy, _, det = BeliefMapCodec.dream(peak_offset=0.4395).decode(maps)
    for i, m in enumerate(maps):
        ref = dream_reference(m, 0.4395)
        assert det[i] == (ref is not None)
        if ref is not None:
            np.testing.assert_allclose(xy[i], ref, rtol=1e-6, atol=1e-6)
    assert 0 < det.sum() < len(maps)     # both outcomes exercised


def test_candidates_list_every_peak_strongest_first_even_when_ambiguous():
    codec = BeliefMapCodec()
    two = gaussian_map(20, 20) + gaussian_map(60, 40, amp=0.95)     # ambiguous: not detected
    three = gaussian_map(10, 10, amp=0.5) + gaussian_map(40, 30) + gaussian_map(70, 50, amp=0.7)
    empty = np.zeros((60, 80))
    maps = np.stack([two, three, empty]).astype(np.float32)
    xy, scores, det, cands = codec.decode_with_candidates(maps, top=2)
    ref = codec.decode(maps)
    for a, b in zip((xy, scores, det), ref):                        # decode's results unchanged
        np.testing.assert_array_equal(a, b)
    assert det.tolist() == [False, True, False]
    assert [len(c) for c in cands] == [2, 2, 0]                     # top=2 of the 3 peaks
    np.testing.assert_allclose(cands[0][:, :2], [[20, 20], [60, 40]], atol=0.3)
    np.testing.assert_allclose(cands[1][:, :2], [[40, 30], [70, 50]], atol=0.3)
    assert cands[1][0, 2] > cands[1][1, 2]
    batched = codec.decode_with_candidates(maps[None].repeat(2, axis=0), top=2)[3]
    assert len(batched) == 2 and all(len(b) == 3 for b in batched)
    np.testing.assert_allclose(batched[1][1], cands[1])


def test_light_refinement_keeps_a_lopsided_peak_in_place():
    # a peak with a weaker shoulder 4 px to its right: the peak search's sigma-3 smoothing
    # drags the fit toward the shoulder; refining on sigma-1 maps stays near the true maximum
    m = gaussian_map(30.3, 25.0) + gaussian_map(34.3, 25.0, amp=0.35)
    xs = np.linspace(28, 34, 6001)
    true_x = xs[np.argmax(np.exp(-(xs - 30.3) ** 2 / 8) + 0.35 * np.exp(-(xs - 34.3) ** 2 / 8))]
    heavy = BeliefMapCodec(refine_sigma=None).decode(m[None].astype(np.float32))[0][0, 0]
    light = BeliefMapCodec().decode(m[None].astype(np.float32))[0][0, 0]
    assert abs(light - true_x) < 0.25 < abs(heavy - true_x)
    with pytest.raises(ConfigError, match="refine_sigma"):
        BeliefMapCodec(refine_sigma=-1.0)


@pytest.mark.parametrize("mode", ["constant", "reflect", "nearest"])
def test_light_refinement_equals_smoothing_the_whole_map(mode):
    # reference: gaussian_filter on whole maps, climb to the 3x3 maximum, log-parabola vertex
    rng = np.random.default_rng(4)
    raw = (0.3 * rng.random((3, 12, 16)) + np.stack([gaussian_map(x, y, w=16, h=12) for x, y in
                                                     ((0.4, 6.0), (15.2, 11.5), (7.3, 5.6))]))
    ch = np.repeat(np.arange(3), 4)
    r = np.array([6, 0, 11, 5, 11, 10, 0, 3, 5, 6, 1, 11])
    col = np.array([0, 3, 8, 15, 15, 14, 0, 7, 7, 8, 15, 0])
    codec = BeliefMapCodec(smooth_mode=mode)
    px, py = codec._refine_light(raw.astype(np.float32), ch, r, col)
    fine = gaussian_filter(raw.astype(np.float32).astype(np.float64), sigma=(0, 1.0, 1.0),
                           mode=mode, truncate=4.0)
    lg = np.log(np.maximum(fine, 1e-12))
    h, w = raw.shape[-2:]

    def vertex(lo, mid, hi):
        den = lo - 2 * mid + hi
        return float(np.clip(0.5 * (lo - hi) / den, -0.5, 0.5)) if den < 0 else 0.0

    for i in range(len(ch)):
        f = fine[ch[i]]
        rr, cc, best = r[i], col[i], f[r[i], col[i]]
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                y, x = r[i] + dr, col[i] + dc
                if 0 <= y < h and 0 <= x < w and f[y, x] > best:
                    rr, cc, best = y, x, f[y, x]
        g = lg[ch[i]]
        sx = vertex(g[rr, cc - 1], g[rr, cc], g[rr, cc + 1]) if 0 < cc < w - 1 else 0.0
        sy = vertex(g[rr - 1, cc], g[rr, cc], g[rr + 1, cc]) if 0 < rr < h - 1 else 0.0
        assert (px[i], py[i]) == pytest.approx((cc + sx, rr + sy), abs=1e-9), i
