"""Fine-tuning: a BERT-family encoder trained as a bi-encoder retriever (in-batch negatives, Lightning), saved as a
model folder every command loads."""
