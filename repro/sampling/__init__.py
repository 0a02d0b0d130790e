"""Samples from a model under a schedule: generation, seed shards, loop prefixes, prompts."""
