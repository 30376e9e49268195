"""Orchestration: the config schema, the command line, run folders and exports."""
