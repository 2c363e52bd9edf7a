"""The object workspace.yaml loads: an edge, where the settings are read from the environment once and
handed to everything it builds."""

from assets.definitions import build_definitions
from core.settings import load_settings

defs = build_definitions(load_settings())
