"""Delivers delivery jobs: per-destination workers, per-user order, retries, throttling, batching."""
