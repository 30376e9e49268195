"""Causal evidence: mask heads, measure the drop in retrieval MRR, test it query by query."""
