"""Batches: the per-case store (resume, shards), the merge of shard outputs, progress reports."""
