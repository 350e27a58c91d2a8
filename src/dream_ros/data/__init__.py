"""Datasets: NDDS read/write, belief-map labels, augmentation."""
