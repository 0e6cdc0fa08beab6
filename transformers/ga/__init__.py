"""Google Analytics Universal via the Measurement Protocol v1 (kept for compatibility; UA is sunset)."""
