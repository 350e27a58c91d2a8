"""Synthetic data: URDF -> MuJoCo scene, domain randomization, NDDS writer."""
