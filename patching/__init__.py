"""Activation patching in a cross-encoder: which heads carry the match between a query and its code."""
