"""Reads the gateway queue: dedup, fan-out, user and destination transformations, delivery jobs."""
