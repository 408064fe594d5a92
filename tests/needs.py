"""Services some tests start themselves, and the mark that skips them (saying so) without."""

from __future__ import annotations

import shutil

import pytest

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="no redis-server installed (Debian: apt-get install -y redis-server; .ci/run installs it)",
)
