"""Keypoint networks (ours and DREAM-compatible), model files, preprocessing and peak extraction."""
