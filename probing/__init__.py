"""Representational evidence: linear probes on each head's output."""
