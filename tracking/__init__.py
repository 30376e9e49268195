"""Weights & Biases: what every run logs, its dashboards' names and metrics, and sweeps run without a server."""
