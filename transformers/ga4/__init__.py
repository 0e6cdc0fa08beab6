"""Google Analytics 4 via the Measurement Protocol."""
