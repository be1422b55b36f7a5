"""Entity-level scores (seqeval, lenient and strict) and scoring a model on a corpus."""
