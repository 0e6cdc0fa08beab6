"""Amplitude via the HTTP V2, batch, groupidentify and usermap APIs."""
