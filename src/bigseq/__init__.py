"""bigseq: sequence-to-sequence language models."""
