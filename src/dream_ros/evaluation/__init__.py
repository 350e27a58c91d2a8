"""DREAM metrics, plots, evaluation command."""
