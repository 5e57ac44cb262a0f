"""Tracking: run records, W&B and CSV loggers, run directories, the console report."""
