"""CodeSearchNet data: readers for its on-disk forms, the local corpus builder, retrieval metrics."""
