"""KeypointDetector: RGB image -> named 2D keypoints in raw-image pixels (``Detections``).

preprocess (model's mode, exact inverse mapping) -> network (torch or ONNX Runtime) -> peak
extraction (the model's BeliefMapCodec) -> output map px -> net input px -> raw px. Keypoints that
map outside the raw image (e.g. into letterbox padding) are reported as not detected.

Zoom pass (our models): a second network pass on a crop around the first pass's keypoints, so a
robot far away fills the network input (``network/zoom.py``); its detections replace the first
pass's. Measured on the 640x480 synthetic test set (300 frames) with the shipped model after 378k
images: PCK AUC 0.315 -> 0.426, ADD AUC 0.068 -> 0.136, for one more forward pass
(docs/evaluation.md).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from dream_ros.errors import ConfigError, InputError
from dream_ros.network.codec import BeliefMapCodec
from dream_ros.network.model_file import ModelConfig, keypoint_chain_order, load_model
from dream_ros.network.preprocess import Geometry, inside_image
from dream_ros.network.zoom import DEFAULT_ZOOM_VIEWS, zoom_views as zoom_view_presets
from dream_ros.types import Detections

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
ONNX_BACKENDS = ("onnx", "onnx-int8")
# The zoom pass runs only when its crop magnifies the robot at least this much over the full
# image: below that it costs a second forward pass for little change.
ZOOM_MIN_GAIN = 1.2
# peaks per keypoint reported for the pose stage's choice: on the synthetic test set the truth
# is within 20 px of one of the 3 strongest peaks for 92 % of the keypoints, of the strongest for
# 87 % (docs/evaluation.md)
DEFAULT_CANDIDATES = 3
# A detection's expected pixel error grows steeply as its peak falls (session 7's model, 450
# validation frames: median 2.9 px for peaks >= 0.6, 9.2 px at 0.4-0.6, 16 px at 0.2-0.4), so the
# pose weighs each one by sigma_k * (SCORE_REF / score) ** SCORE_POWER, sigma_k the model's
# per-keypoint median error. On those frames, ADD AUC with pnp.py's Cauchy refinement: power 0
# 0.535, 2 0.573, 3 0.572, 4 0.565 (3 was chosen first, on a replay of the detections).
SCORE_REF = 0.8
SCORE_POWER = 3.0
SCORE_FLOOR = 0.05


def pick_device(device: Union[str, torch.device] = "auto") -> torch.device:
    """"auto": CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"bad device {device!r}: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available")
    return dev


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


class KeypointDetector:
    """Detect the model's keypoints in RGB images.

    model: a model file path, a robot name (its shipped default) or DREAM .pth, or a
    ``(net, ModelConfig)`` pair. backend "onnx" runs on the CPU with ONNX Runtime (exported once,
    cached under ``onnx_cache_dir`` or the temp dir); "onnx-int8" runs the model file's int8
    network (``ModelConfig.onnx_int8``, network/quantize.py) with ONNX Runtime; "auto" picks the
    int8 network when the model has one, else fp32 ONNX Runtime, for our architectures on the CPU
    (2-3x faster than eager torch here, scripts/bench_network.py; int8 another 2.4x), and torch
    otherwise (CUDA, DREAM's nets, preprocessing "none"). Codec overrides (threshold,
    ambiguity, peak_offset ...) replace the model's peak-extraction parameters. num_threads, when
    given, sets torch's (process-wide) and ONNX Runtime's CPU threads. channels_last: None = on for
    the CPU (measured faster for ours), off on CUDA. zoom: the second pass on robot-centred
    crops; None = on for our models, off for DREAM's (so they give DREAM's outputs); zoom_views:
    how many crops it pools (network/zoom.py ZOOM_VIEWS: 1, fastest, 5 or 7, most accurate).
    candidates: report each keypoint's this many strongest peaks (``Detections.candidates``) for
    the pose stage to choose from (peak_selection.py); None = 3 for our models, 0 (off) for
    DREAM's.
    """

    def __init__(self, model: Union[str, Path, Tuple[nn.Module, ModelConfig]],
                 device: Union[str, torch.device] = "auto", backend: str = "auto",
                 threshold: Optional[float] = None, ambiguity: Optional[float] = None,
                 num_threads: Optional[int] = None, channels_last: Optional[bool] = None,
                 onnx_cache_dir: Optional[Union[str, Path]] = None, zoom: Optional[bool] = None,
                 candidates: Optional[int] = None, zoom_views: int = DEFAULT_ZOOM_VIEWS,
                 **codec_overrides):
        if backend not in BACKENDS:
            raise ConfigError(f"backend {backend!r} not in {BACKENDS}")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if isinstance(model, (tuple, list)) and len(model) == 2:
            net, config = model
        else:
            net, config = load_model(model)
        if not isinstance(config, ModelConfig):
            raise ConfigError(f"model config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        self.keypoint_names: List[str] = list(config.keypoint_names)
        self.preprocessor = config.make_preprocessor()
        overrides = dict(codec_overrides)
        if threshold is not None:
            overrides["threshold"] = float(threshold)
        if ambiguity is not None:
            overrides["ambiguity"] = float(ambiguity)
        unknown = set(overrides) - {f.name for f in dataclasses.fields(BeliefMapCodec)}
        if unknown:
            raise ConfigError(f"unknown detector options {sorted(unknown)}")
        self.codec = dataclasses.replace(config.make_codec(), **overrides)
        self._sigma_px = np.array(config.keypoint_sigma_px, dtype=np.float64) \
            if config.keypoint_sigma_px else None
        if backend == "auto":
            backend = "torch"
            if (pick_device(device).type == "cpu" and not config.is_dream
                    and self.preprocessor.mode != "none" and _have_onnxruntime()):
                backend = "onnx-int8" if config.onnx_int8 else "onnx"
        if backend == "onnx-int8" and not config.onnx_int8:
            raise ConfigError("backend 'onnx-int8' asked for, but the model has no int8 network: "
                              "add one with `python -m dream_ros quantize --model M --data DIR`, "
                              "or use backend 'onnx'")
        self.backend = backend
        self.zoom = (not config.is_dream and self.preprocessor.mode != "none") if zoom is None \
            else bool(zoom)
        try:
            self.zoom_views = zoom_view_presets(int(zoom_views))
        except ValueError as exc:
            raise ConfigError(str(exc))
        # the half-arm zoom views need the keypoints from base to tip
        self.chain_order = keypoint_chain_order(config) if self.zoom \
            else list(range(config.num_keypoints))
        self.candidates = (0 if config.is_dream else DEFAULT_CANDIDATES) if candidates is None \
            else max(0, int(candidates))
        self.device = torch.device("cpu") if backend in ONNX_BACKENDS else pick_device(device)
        self.channels_last = (self.device.type == "cpu") if channels_last is None else channels_last
        net = net.eval().float()
        if backend in ONNX_BACKENDS:
            from dream_ros.network.onnx_backend import OnnxRunner
            if self.preprocessor.mode == "none":
                raise ConfigError("backend %r needs a fixed input size: preprocessing 'none' "
                                  "varies with the image; use backend 'torch'" % backend)
            if backend == "onnx-int8":
                self._onnx = OnnxRunner(config.onnx_int8, num_threads=num_threads)
            else:
                self._onnx = OnnxRunner.from_network(net.cpu(), config.input_size,
                                                     cache_dir=onnx_cache_dir,
                                                     num_threads=num_threads)
            self.net = None
        else:
            self._onnx = None
            net = net.to(self.device)
            if self.channels_last:
                net = net.to(memory_format=torch.channels_last)
            self.net = net

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoint_names)

    # ------------------------------------------------------------------ inference
    def belief_maps(self, batch: np.ndarray) -> np.ndarray:
        """Network on a normalised float32 (B,3,H,W) batch -> float32 (B,K,h,w) numpy."""
        if self._onnx is not None:
            return self._onnx.run(batch)
        x = torch.from_numpy(batch).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.net(x)
        if isinstance(out, (list, tuple)):   # multi-head nets: the last head, as DREAM
            out = out[-1]
        return out.float().contiguous().cpu().numpy()

    def detect(self, rgb: np.ndarray, return_belief: bool = False,
               expected_uv: Optional[np.ndarray] = None) -> Detections:
        """uint8 (H,W,3) RGB image -> Detections (uv in raw pixels, NaN where not detected).

        ``expected_uv`` (K,2 raw pixels, NaN where unknown): where the keypoints should be, e.g.
        the robot's keypoints at this frame's joint angles projected with the last accepted
        camera pose. The zoom pass then places its crops there and the first pass is skipped
        (about a third of a frame's time); a keypoint no crop finds is missing. The full detector
        runs when fewer than two expected keypoints are on the image, when no crop would zoom
        in, when belief maps are asked for, or without a zoom pass.
        """
        if expected_uv is not None and self.zoom and not return_belief:
            det = self._guided(rgb, expected_uv)
            if det is not None:
                return self._with_detection_sigma(det)
        return self.detect_batch([rgb], return_belief=return_belief)[0]

    def detect_batch(self, images: Sequence[np.ndarray], return_belief: bool = False
                     ) -> List[Detections]:
        """Several images in one network pass (mode "none" needs equal image sizes)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise InputError("detect_batch wants a list of images; use detect() for one image")
        images = list(images)
        dets = self._single_pass(images, return_belief)
        if self.zoom:
            dets = self.zoom_refine(images, dets)
        return [self._with_detection_sigma(d) for d in dets]

    def _with_detection_sigma(self, det: Detections) -> Detections:
        if self._sigma_px is None:
            return det
        return dataclasses.replace(det, sigma_px=detection_sigma_px(self._sigma_px, det.scores,
                                                                    det.detected))

    def _single_pass(self, images: List[np.ndarray], return_belief: bool) -> List[Detections]:
        batch, geometries = self.preprocessor.batch(images)
        maps = self.belief_maps(batch)
        if maps.ndim != 4 or maps.shape[:2] != (len(geometries), self.num_keypoints):
            raise ConfigError(f"network output {maps.shape} does not match {self.num_keypoints} "
                              "keypoints of the model config")
        if self.candidates:
            xy_out, scores, detected, cands = self.codec.decode_with_candidates(maps,
                                                                                self.candidates)
        else:
            xy_out, scores, detected = self.codec.decode(maps)
            cands = [None] * len(geometries)
        out_size = (maps.shape[-1], maps.shape[-2])     # the actual map size, as DREAM
        return [self._to_detections(xy_out[i], scores[i], detected[i], geometries[i], out_size,
                                    maps[i] if return_belief else None, cands[i])
                for i in range(len(geometries))]

    def zoom_refine(self, images: List[np.ndarray], first: List[Detections]) -> List[Detections]:
        """The zoom pass: re-detect on crops around ``first``'s keypoints (``self.zoom_views``);
        each keypoint takes the median of the crops' detections of it (the first pass's where no
        crop finds it); belief maps, when asked for, stay the first pass's."""
        plans, crops = [], []
        for rgb, det in zip(images, first):
            plan, image_crops = self._zoom_plan(rgb, det.uv, det.detected)
            plans.append(plan)
            crops += image_crops
        if not crops:
            return first
        zoomed = iter(self._single_pass(crops, False))
        return [self._pool_views(det, [(idx, box, next(zoomed)) for idx, box in plan])
                if plan else det for det, plan in zip(first, plans)]

    def _zoom_plan(self, rgb: np.ndarray, uv: np.ndarray, known: np.ndarray):
        """The zoom views' crops of one image around the ``known`` keypoints ``uv``:
        ([(keypoint indices, box)], [crop image]); views that would hardly zoom in are left out."""
        from dream_ros.network.zoom import crop_box, crop_image
        w_in, h_in = self.config.input_size
        plan, crops = [], []
        for view in self.zoom_views:
            idx = view.keypoints(self.chain_order)
            box = crop_box(uv[idx[known[idx]]], w_in / h_in, view.margin,
                           centre_shift=view.centre_shift)
            if box is None or min(rgb.shape[1] / box[2], rgb.shape[0] / box[3]) < ZOOM_MIN_GAIN:
                continue             # the crop would hardly zoom in: not worth a pass
            plan.append((idx, box))
            crops.append(crop_image(rgb, box))
        return plan, crops

    def _guided(self, rgb: np.ndarray, expected_uv) -> Optional[Detections]:
        """The zoom pass alone, its crops around ``expected_uv`` (see detect); None when the
        full detector has to run."""
        K = self.num_keypoints
        expected_uv = np.asarray(expected_uv, dtype=np.float64)
        if expected_uv.shape != (K, 2):
            raise InputError("expected keypoints must be (%d, 2) pixels, got shape %s"
                             % (K, expected_uv.shape))
        size = (rgb.shape[1], rgb.shape[0])
        on_image = inside_image(expected_uv, size)
        if np.count_nonzero(on_image) < 2:
            return None
        plan, crops = self._zoom_plan(rgb, expected_uv, on_image)
        if not plan:
            return None
        nothing = Detections(names=list(self.keypoint_names), uv=np.full((K, 2), np.nan),
                             scores=np.zeros(K), detected=np.zeros(K, bool), image_size=size,
                             candidates=[np.zeros((0, 3))] * K if self.candidates else None)
        zoomed = self._single_pass(crops, False)
        return self._pool_views(nothing, [(idx, box, z) for (idx, box), z in zip(plan, zoomed)])

    def _pool_views(self, det: Detections, views) -> Detections:
        """One image's detections from its zoom crops [(keypoint indices, box, crop detections)]."""
        K = self.num_keypoints
        found = np.full((len(views), K, 2), np.nan)
        scores = np.zeros((len(views), K))
        for i, (idx, box, z) in enumerate(views):
            uv = z.uv + np.array(box[:2], dtype=np.float64)
            use = np.zeros(K, bool)
            use[idx] = True
            use &= z.detected & inside_image(uv, det.image_size)
            found[i, use] = uv[use]
            scores[i, use] = z.scores[use]
        counts = np.isfinite(found[..., 0]).sum(axis=0)
        pooled = counts > 0
        uv = det.uv.copy()
        if pooled.any():
            uv[pooled] = _median_of_found(found[:, pooled], counts[pooled])
        detected = pooled | det.detected
        uv[~detected] = np.nan
        # the candidate peaks come from the first whole-robot crop (the half-robot ones miss the
        # other half's keypoints), else from the first pass
        whole = next(((z, box) for idx, box, z in views if len(idx) == K), (None, None))
        return dataclasses.replace(det, uv=uv, detected=detected,
                                   scores=np.where(pooled, scores.max(axis=0), det.scores),
                                   candidates=_merged_candidates(det, *whole, uv, pooled))

    def _to_detections(self, xy_out, scores, detected, geometry: Geometry, out_size,
                       maps: Optional[np.ndarray], cands: Optional[list] = None) -> Detections:
        def to_raw(xy):
            return geometry.to_raw(self.codec.output_to_input(xy, out_size, geometry.input_size))

        uv = to_raw(xy_out)
        det = detected & geometry.inside_raw(uv)    # e.g. peaks inside letterbox padding
        uv[~det] = np.nan
        if cands is not None:
            cands = [np.column_stack([to_raw(c[:, :2]), c[:, 2]]).reshape(-1, 3) for c in cands]
            cands = [c[geometry.inside_raw(c[:, :2])] for c in cands]
        return Detections(names=list(self.keypoint_names), uv=uv, scores=scores.astype(np.float64),
                          detected=det, image_size=tuple(geometry.raw_size), belief_maps=maps,
                          candidates=cands)


def detection_sigma_px(keypoint_sigma_px, scores, detected) -> np.ndarray:
    """(K,) expected pixel error of each detection: its keypoint's typical error scaled by
    (SCORE_REF / peak height) ** SCORE_POWER; keypoints not detected keep the typical error."""
    scores = np.clip(np.nan_to_num(np.asarray(scores, float), nan=SCORE_REF), SCORE_FLOOR, None)
    factor = np.where(np.asarray(detected, bool), (SCORE_REF / scores) ** SCORE_POWER, 1.0)
    return np.asarray(keypoint_sigma_px, float) * factor


def _median_of_found(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per column of ``values`` (V, N, 2), the median of its finite rows (``counts`` (N,) >= 1 of
    them, NaN in both coordinates otherwise): np.nanmedian's result at a tenth of its 0.15 ms per
    call, which the live frame rate feels."""
    ordered = np.sort(values, axis=0)          # NaN rows last
    lo = ((counts - 1) // 2)[None, :, None]
    hi = (counts // 2)[None, :, None]
    return 0.5 * (np.take_along_axis(ordered, np.broadcast_to(lo, (1,) + values.shape[1:]), 0)
                  + np.take_along_axis(ordered, np.broadcast_to(hi, (1,) + values.shape[1:]), 0))[0]


def _merged_candidates(first: Detections, zoomed: Optional[Detections], box,
                       pooled_uv: np.ndarray, pooled: np.ndarray) -> Optional[list]:
    """Per keypoint, the ``zoomed`` crop's peaks (moved to raw pixels, on the image) where it
    found any, else the first pass's; the strongest stands at the pooled position if any."""
    if first.candidates is None:
        return None
    out = []
    for k, c1 in enumerate(first.candidates):
        c = c1.copy()
        if zoomed is not None and zoomed.candidates is not None:
            cz = zoomed.candidates[k] + np.array([box[0], box[1], 0.0])
            cz = cz[inside_image(cz[:, :2], first.image_size)]
            c = cz if len(cz) else c
        if len(c) and pooled[k]:
            c[0, :2] = pooled_uv[k]
        out.append(c)
    return out
