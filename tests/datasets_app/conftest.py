from __future__ import annotations

import os
import tempfile
from typing import Any

# `datasets` reads these when it is first imported: nothing may reach the network, and
# nothing may land in a shared cache.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))


import pytest


@pytest.fixture(autouse=True)
def fresh_media_root(settings: Any, tmp_path: Any) -> Any:
    """Each test stores its versions in its own folder: ids restart with every test database."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT
