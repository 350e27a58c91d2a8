"""Belief maps <-> keypoint coordinates: one object makes training labels and decodes net output.

Keeping both directions (and the input<->output coordinate mapping) in one object, whose parameters
are stored in the model file, means training and inference cannot drift apart.

Two presets:
- ``BeliefMapCodec.dream(...)`` reproduces DREAM exactly (dream-compat.md §4 and §6): labels are a
  9x9 Gaussian centred on the *truncated* output pixel and zeroed when that window leaves the map;
  peaks are refined with the 5x5 weighted mean of the raw map, plus DREAM's constant offset.
- ``BeliefMapCodec()`` (our default) draws the Gaussian at the exact sub-pixel position (our
  stride-4 maps are coarse, so truncation would cost up to 4 input pixels) and refines peaks with a
  3-point log-parabola on the smoothed map, which is unbiased for Gaussian peaks (DREAM's 5x5 mean
  shrinks a sigma=2 peak's sub-pixel offset by ~58%). It smooths with zeros outside the map
  (DREAM's reflect border drags a peak 2 px from the border onto it) and breaks plateau ties (a
  peak exactly between two pixels would otherwise be two equal peaks, i.e. "ambiguous").
  Threshold, 4-neighbour maxima and the ambiguity test are DREAM's in both.

Coordinates: pixel centres are integers (OpenCV); x is the column, y the row. Output -> input
coordinates are x_in = x_out * W_in / W_out (DREAM's rule, no half-pixel term) in both presets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter

from dream_ros.errors import ConfigError, InputError

LABEL_MODES = ("subpixel", "dream")
REFINE_MODES = ("logparabola", "mean5")

# DREAM's peak offset for output maps smaller than 400 px in either dimension (dream-compat.md §1).
DREAM_LOW_RES_OFFSET = 0.4395


# scipy's border modes as numpy.pad's
_NUMPY_PAD = {"constant": "constant", "reflect": "symmetric", "mirror": "reflect",
              "nearest": "edge", "wrap": "wrap"}


DREAM_THRESHOLD = 0.01


def dream_peak_offset(output_size: Sequence[int]) -> float:
    """DREAM's rule: 0 if both trained output dimensions are >= 400, else 0.4395."""
    return 0.0 if min(int(output_size[0]), int(output_size[1])) >= 400 else DREAM_LOW_RES_OFFSET


@dataclass
class BeliefMapCodec:
    sigma: float = 2.0            # label Gaussian std, output pixels
    smooth_sigma: float = 3.0     # decode: Gaussian smoothing before peak finding
    # decode: a peak's smoothed value must exceed this. DREAM: 0.01. Ours 0.1: our nets leave
    # weak peaks (median height 0.1) at the image edge for keypoints outside it, which cost
    # robust PnP frames; the truly visible ones have 0.64 at their 10th percentile. On 450
    # synthetic validation frames (7 zoom views): ADD AUC 0.478 -> 0.505, PCK AUC 0.685 -> 0.683.
    threshold: float = 0.1
    ambiguity: float = 0.25       # decode: best - second best raw score must reach this
    peak_offset: float = 0.0      # decode: added to x and y (DREAM: 0.4395 for low-res maps)
    label_mode: str = "subpixel"  # "subpixel" (ours) or "dream"
    refine: str = "logparabola"   # "logparabola" (ours) or "mean5" (DREAM)
    smooth_mode: str = "constant" # scipy border mode of the smoothing; DREAM: "reflect"
    strict_ties: bool = True      # a plateau of equal maxima yields one peak; DREAM: False
    dream_window: int = 4         # DREAM label: half-width of the 9x9 window
    smooth_truncate: float = 4.0  # scipy gaussian_filter default, as DREAM
    # logparabola: the sub-pixel fit runs on maps smoothed only this much (the peak moves to
    # this map's maximum next to it first). The peak search's heavy smoothing keeps stray
    # maxima out but pulls a lopsided peak toward its mass; the light one keeps the position.
    # None: fit on the search's map (before session 5). Measured on the synthetic test set:
    # PCK AUC 0.640 -> 0.652, median 4.45 -> 4.01 px (docs/evaluation.md).
    refine_sigma: Optional[float] = 1.0

    def __post_init__(self) -> None:
        if self.label_mode not in LABEL_MODES:
            raise ConfigError(f"codec label_mode {self.label_mode!r} not in {LABEL_MODES}")
        if self.refine not in REFINE_MODES:
            raise ConfigError(f"codec refine {self.refine!r} not in {REFINE_MODES}")
        if self.smooth_mode not in ("reflect", "constant", "nearest", "mirror", "wrap"):
            raise ConfigError(f"codec smooth_mode {self.smooth_mode!r} is not a scipy border mode")
        if not self.sigma > 0 or not self.smooth_sigma >= 0:
            raise ConfigError(f"codec sigma must be > 0 and smooth_sigma >= 0, got "
                              f"{self.sigma}, {self.smooth_sigma}")
        if self.refine_sigma is not None and not self.refine_sigma >= 0:
            raise ConfigError(f"codec refine_sigma must be >= 0 or None, got {self.refine_sigma}")

    # ----------------------------------------------------------------- presets and (de)serialising
    @classmethod
    def dream(cls, output_size: Optional[Sequence[int]] = None, **overrides) -> "BeliefMapCodec":
        """DREAM's exact rules; with output_size the offset follows DREAM's output-size rule."""
        kw = dict(label_mode="dream", refine="mean5", smooth_mode="reflect", strict_ties=False,
                  threshold=DREAM_THRESHOLD,
                  peak_offset=dream_peak_offset(output_size) if output_size is not None
                  else DREAM_LOW_RES_OFFSET)
        kw.update(overrides)
        return cls(**kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "BeliefMapCodec":
        d = dict(d or {})
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown codec parameters: {sorted(unknown)}")
        return cls(**d)

    # ------------------------------------------------------------------ coordinate frames
    @staticmethod
    def input_to_output(xy_in, in_size: Sequence[int], out_size: Sequence[int]) -> np.ndarray:
        """Net-input pixels -> output-map pixels (x_out = x_in * W_out / W_in)."""
        xy = np.asarray(xy_in, dtype=np.float64)
        return xy * np.array([out_size[0] / in_size[0], out_size[1] / in_size[1]])

    @staticmethod
    def output_to_input(xy_out, out_size: Sequence[int], in_size: Sequence[int]) -> np.ndarray:
        """Output-map pixels -> net-input pixels (x_in = x_out * W_in / W_out, no half-pixel)."""
        xy = np.asarray(xy_out, dtype=np.float64)
        return xy * np.array([in_size[0] / out_size[0], in_size[1] / out_size[1]])

    # ------------------------------------------------------------------ encoding (labels)
    def encode(self, xy_out, valid, out_size: Sequence[int]) -> np.ndarray:
        """Training labels: (K,2) output-pixel keypoints + (K,) validity -> float32 (K, h, w)."""
        import torch
        xy = np.asarray(xy_out, dtype=np.float64)
        ok = np.asarray(valid, dtype=bool)
        if xy.ndim != 2 or xy.shape[1] != 2 or ok.shape != (xy.shape[0],):
            raise InputError(f"encode wants xy (K,2) and valid (K,), got {xy.shape} and {ok.shape}")
        maps = self.encode_torch(torch.from_numpy(xy)[None], torch.from_numpy(ok)[None], out_size)
        return maps[0].numpy()

    def encode_torch(self, xy_out, valid, out_size: Sequence[int]):
        """Batched labels inside a training loop: (B,K,2) tensor, (B,K) bool -> float32 (B,K,h,w).

        Runs on xy_out's device. Non-finite coordinates count as invalid.
        """
        import torch
        w, h = int(out_size[0]), int(out_size[1])
        xy = xy_out.to(torch.float64)
        ok = valid.to(torch.bool) & torch.isfinite(xy).all(-1)
        xy = torch.where(ok[..., None], xy, torch.zeros_like(xy))
        cols = torch.arange(w, device=xy.device, dtype=torch.float64)
        rows = torch.arange(h, device=xy.device, dtype=torch.float64)
        two_s2 = 2.0 * self.sigma ** 2
        if self.label_mode == "dream":
            r = self.dream_window
            u = torch.trunc(xy[..., 0])   # Python int(): truncation toward zero, as DREAM
            v = torch.trunc(xy[..., 1])
            ok = ok & (u - r >= 0) & (u + r + 1 < w) & (v - r >= 0) & (v + r + 1 < h)
            dx = cols[None, None, :] - u[..., None]          # (B,K,w)
            dy = rows[None, None, :] - v[..., None]          # (B,K,h)
            gx = torch.exp(-dx ** 2 / two_s2) * (dx.abs() <= r)
            gy = torch.exp(-dy ** 2 / two_s2) * (dy.abs() <= r)
        else:
            # keypoints inside the map's extent [-0.5, w-0.5] get a (maybe cut) Gaussian, others 0
            ok = (ok & (xy[..., 0] >= -0.5) & (xy[..., 0] <= w - 0.5)
                  & (xy[..., 1] >= -0.5) & (xy[..., 1] <= h - 0.5))
            gx = torch.exp(-(cols[None, None, :] - xy[..., 0, None]) ** 2 / two_s2)
            gy = torch.exp(-(rows[None, None, :] - xy[..., 1, None]) ** 2 / two_s2)
        maps = gy[..., :, None] * gx[..., None, :] * ok[..., None, None]   # separable Gaussian
        return maps.to(torch.float32)

    # ------------------------------------------------------------------ decoding (peak extraction)
    def decode(self, maps) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Peak extraction on (K,h,w) or (B,K,h,w) maps.

        Returns xy_out (...,K,2) float64 in output pixels (NaN where not detected), scores (...,K)
        (raw value at the best peak, 0 where there is no peak) and detected (...,K) bool.
        Vectorised over all channels and pixels at once.
        """
        return self._best(*self._peaks(maps))

    def decode_with_candidates(self, maps, top: int = 3):
        """``decode`` plus every channel's ``top`` strongest peaks, ambiguous or not, for a later
        choice by another cue (the robot's pose), from one peak search: (xy_out, scores,
        detected, candidates). candidates: for (B,K,h,w) maps a list of B lists of K arrays
        (M,3) of (x_out, y_out, raw score), strongest first (M = 0: no peak); for (K,h,w) maps
        one list of K arrays."""
        peaks = self._peaks(maps)
        return self._best(*peaks) + (self._grouped(*peaks, top=top),)

    def _best(self, lead, n_ch, ch, px, py, score):
        # 5. per channel: best peak by score, ambiguity test against the second best
        xy = np.full((n_ch, 2), np.nan)
        scores = np.zeros(n_ch)
        detected = np.zeros(n_ch, dtype=bool)
        if ch.size:                                 # peaks come by channel, strongest first
            first = np.flatnonzero(np.r_[True, ch[1:] != ch[:-1]])
            counts = np.diff(np.r_[first, ch.size])
            best_ch = ch[first]
            second = np.where(counts > 1, score[np.minimum(first + 1, ch.size - 1)], -np.inf)
            ok = (counts == 1) | (score[first] - second >= self.ambiguity)
            scores[best_ch] = score[first]
            detected[best_ch] = ok
            good = first[ok]
            xy[best_ch[ok], 0] = px[good]
            xy[best_ch[ok], 1] = py[good]
        return xy.reshape(lead + (2,)), scores.reshape(lead), detected.reshape(lead)

    @staticmethod
    def _grouped(lead, n_ch, ch, px, py, score, top: int) -> list:
        starts = np.searchsorted(ch, np.arange(n_ch + 1))
        per = [np.stack([px[a:b], py[a:b], score[a:b]], axis=1)[:max(0, int(top))]
               for a, b in zip(starts[:-1], starts[1:])]
        if len(lead) == 1:
            return per
        k = lead[-1]
        return [per[i:i + k] for i in range(0, n_ch, k)]

    def _peaks(self, maps):
        """Steps 1-3 of decoding: (lead shape, channels, channel, x, y, raw score) of every peak,
        ordered by channel and, within one, strongest first."""
        if hasattr(maps, "detach"):
            maps = maps.detach().cpu().numpy()
        maps = np.asarray(maps)
        if maps.ndim not in (3, 4) or maps.shape[-1] < 1 or maps.shape[-2] < 1:
            raise InputError(f"decode wants maps (K,h,w) or (B,K,h,w), got shape {maps.shape}")
        if not np.issubdtype(maps.dtype, np.floating):
            maps = maps.astype(np.float32)
        lead = maps.shape[:-2]
        h, w = maps.shape[-2:]
        raw = maps.reshape((-1, h, w))
        n_ch = raw.shape[0]
        # 1. smoothing per channel (sigma 0 on the channel axis = not filtered)
        sm = (gaussian_filter(raw, sigma=(0, self.smooth_sigma, self.smooth_sigma),
                              mode=self.smooth_mode, truncate=self.smooth_truncate)
              if self.smooth_sigma > 0 else raw)
        # 2. 4-neighbour local maxima (outside = 0) above the threshold. strict_ties: strictly
        #    above the upper/left neighbours, so two equal neighbouring maxima give one peak.
        p = np.pad(sm, ((0, 0), (1, 1), (1, 1)))
        c = p[:, 1:-1, 1:-1]
        up, left = p[:, :-2, 1:-1], p[:, 1:-1, :-2]
        before = (c > up) & (c > left) if self.strict_ties else (c >= up) & (c >= left)
        is_peak = (before & (c >= p[:, 2:, 1:-1]) & (c >= p[:, 1:-1, 2:])
                   & (c > self.threshold))
        ch, r, col = np.nonzero(is_peak)
        score = raw[ch, r, col].astype(np.float64)
        # 3. sub-pixel refinement
        if self.refine == "mean5":
            px, py = self._refine_mean5(raw, ch, r, col)
        elif self.refine_sigma is None or self.refine_sigma == self.smooth_sigma:
            px, py = self._refine_logparabola(sm, ch, r, col)
        else:
            px, py = self._refine_light(raw, ch, r, col)
        order = np.lexsort((-score, ch))
        return (lead, n_ch, ch[order], px[order] + self.peak_offset, py[order] + self.peak_offset,
                score[order])

    def _refine_light(self, raw: np.ndarray, ch, r, col):
        """Sub-pixel positions on maps smoothed by ``refine_sigma``: each peak moves to the
        largest smoothed value of its 3x3 neighbourhood, then takes the log-parabola vertex there
        (as ``_refine_logparabola``). Written out because only the 5x5 window around each peak
        is needed: smoothing whole maps with scipy cost as much as the rest of decoding. The
        values equal gaussian_filter's (same kernel, radius and border mode)."""
        h, w = raw.shape[-2:]
        if ch.size == 0:
            return col.astype(np.float64), r.astype(np.float64)
        sigma = float(self.refine_sigma)
        rad = int(self.smooth_truncate * sigma + 0.5) if sigma > 0 else 0
        taps = np.exp(-0.5 * (np.arange(-rad, rad + 1) / max(sigma, 1e-12)) ** 2)
        taps /= taps.sum()
        pad = rad + 2
        padded = np.pad(raw.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)),
                        mode=_NUMPY_PAD[self.smooth_mode])
        d = np.arange(5 + 2 * rad)
        win = padded[ch[:, None, None], r[:, None, None] + d[None, :, None],
                     col[:, None, None] + d[None, None, :]]          # centred on each peak
        win = sliding_window_view(win, 2 * rad + 1, axis=1) @ taps   # (M, 5, 5 + 2 rad)
        win = sliding_window_view(win, 2 * rad + 1, axis=2) @ taps   # (M, 5, 5)
        # climb: the 3x3 maximum (first in row order), staying on the map; ties keep the peak
        dr, dc = np.meshgrid(np.arange(-1, 2), np.arange(-1, 2), indexing="ij")
        rr, cc = r[:, None, None] + dr, col[:, None, None] + dc
        near = np.where((rr >= 0) & (rr < h) & (cc >= 0) & (cc < w), win[:, 1:4, 1:4], -np.inf)
        flat = near.reshape(len(ch), 9)
        k = np.argmax(flat, axis=1)
        move = flat[np.arange(len(ch)), k] > win[:, 2, 2]
        k = np.where(move, k, 4)
        wr, wc = 1 + k // 3, 1 + k % 3                               # window row/col, 1..3
        r2, c2 = r + wr - 2, col + wc - 2
        lg = np.log(np.maximum(win, 1e-12))
        m = np.arange(len(ch))

        def shift(ok, lo, mid, hi):
            den = lo - 2.0 * mid + hi
            good = ok & (den < 0)
            return np.clip(np.where(good, 0.5 * (lo - hi) / np.where(good, den, -1.0), 0.0),
                           -0.5, 0.5)

        mid = lg[m, wr, wc]
        sx = shift((c2 > 0) & (c2 < w - 1), lg[m, wr, wc - 1], mid, lg[m, wr, wc + 1])
        sy = shift((r2 > 0) & (r2 < h - 1), lg[m, wr - 1, wc], mid, lg[m, wr + 1, wc])
        return c2 + sx, r2 + sy

    @staticmethod
    def _refine_mean5(raw: np.ndarray, ch, r, col):
        """DREAM: mean (col,row) over the 5x5 window weighted by raw values; outside weighs 0."""
        rp = np.pad(raw, ((0, 0), (2, 2), (2, 2))).astype(np.float64)
        d = np.arange(-2, 3)
        win = rp[ch[:, None, None], (r + 2)[:, None, None] + d[None, :, None],
                 (col + 2)[:, None, None] + d[None, None, :]]        # (M,5,5)
        sw = win.sum(axis=(1, 2))
        nz = sw != 0
        safe = np.where(nz, sw, 1.0)
        px = np.where(nz, col + (win.sum(axis=1) @ d) / safe, col)
        py = np.where(nz, r + (win.sum(axis=2) @ d) / safe, r)
        return px.astype(np.float64), py.astype(np.float64)

    @staticmethod
    def _refine_logparabola(sm: np.ndarray, ch, r, col):
        """Vertex of the parabola through log(smoothed) at the peak and its 2 neighbours, per axis.

        Exact for Gaussian peaks (the smoothed label is Gaussian); an axis without both neighbours
        inside the map, or without curvature, keeps the integer position. Shift clipped to 0.5 px.
        """
        h, w = sm.shape[-2:]
        eps = 1e-12
        lg = np.log(np.maximum(sm.astype(np.float64), eps))

        def shift(lo_ok, lo, mid, hi):
            den = lo - 2.0 * mid + hi
            good = lo_ok & (den < 0)
            s = np.where(good, 0.5 * (lo - hi) / np.where(good, den, -1.0), 0.0)
            return np.clip(s, -0.5, 0.5)

        cm, cp = np.clip(col - 1, 0, w - 1), np.clip(col + 1, 0, w - 1)
        rm, rp = np.clip(r - 1, 0, h - 1), np.clip(r + 1, 0, h - 1)
        mid = lg[ch, r, col]
        sx = shift((col > 0) & (col < w - 1), lg[ch, r, cm], mid, lg[ch, r, cp])
        sy = shift((r > 0) & (r < h - 1), lg[ch, rm, col], mid, lg[ch, rp, col])
        return col + sx, r + sy
