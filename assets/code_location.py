"""The object workspace.yaml loads: the code location built from the current settings."""

from assets.definitions import build_definitions

defs = build_definitions()
