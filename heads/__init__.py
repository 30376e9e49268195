"""The instrument: load an encoder, address its heads, hook them (capture, mask, read attention)."""
