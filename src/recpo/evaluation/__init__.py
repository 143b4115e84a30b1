"""Evaluation: ranking metrics, the paper's generation protocol, likelihood ranking."""
