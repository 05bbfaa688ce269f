from __future__ import annotations

import os
import tempfile

# `datasets` reads these when it is first imported: nothing may reach the network, and
# nothing may land in a shared cache.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))
