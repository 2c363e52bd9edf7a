"""The settings live in core/settings.py; feature_repo/data_sources.py still imports them by this old path
(feature_repo/ is edited elsewhere). Delete this module once it imports core.settings."""

from core.settings import *  # noqa: F401,F403
