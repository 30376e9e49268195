"""Comparing studies head by head: a base model against its fine-tuned copy on the same queries (paired, query by
query), or models and data sets of the same head grid by their maps alone (are the same heads important?)."""
