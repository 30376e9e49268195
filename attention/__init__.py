"""Descriptive evidence: where each head's attention goes between query and code, what code it singles out, how
heads and examples cluster, and whether any of it predicts a head's importance."""
