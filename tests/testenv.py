"""Environment for test runs, loaded as a pytest plugin (``-p tests.testenv`` in pytest.ini).

pytest-django imports the settings before any conftest.py runs, so these variables must be
set by a plugin that pytest loads earlier.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Test runs keep their files (database, media, stand-in checkpoints) apart from the demo's.
os.environ.setdefault("VERSUS_VAR_DIR", str(ROOT / "var" / "test"))
os.environ.setdefault("VERSUS_STANDIN_DIR", str(ROOT / "var" / "test" / "standins"))
# CLIPScore runs on a stand-in CLIP model, built by the ``standins`` fixture.
os.environ.setdefault("VERSUS_CLIP_CHECKPOINT", str(Path(os.environ["VERSUS_STANDIN_DIR"]) / "clip-seed0"))
os.environ.setdefault("VERSUS_THROTTLE_ANON", "100000/min")
os.environ.setdefault("VERSUS_THROTTLE_USER", "100000/min")
os.environ.setdefault("VERSUS_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
