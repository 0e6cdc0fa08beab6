"""Workspace config (rudder-server / config-generator JSON) and typed service settings."""
