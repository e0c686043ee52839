"""Fixtures shared with other test folders."""

# The headless-Chromium driver of the viewer's own browser test (skips where it is missing).
from tests.explain.test_viewer_chromium import driver  # noqa: F401
