"""Root pytest configuration: nbval runs the notebooks in smoke mode (tiny, CPU, seconds)."""

import os

os.environ.setdefault("LAPE_SMOKE", "1")
# No test reaches the network: the Hub client fails at once (tests fake it where they need it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
