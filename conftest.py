"""Root pytest configuration: nbval runs the notebooks in smoke mode (tiny, CPU, seconds)."""

import os

os.environ.setdefault("LAPE_SMOKE", "1")
# papermill and nbval have no frontend: notebook 03's sliders become a static figure there (and
# nbclient cannot hang on a widget cell, jupyter/nbclient#312). The browser test unsets it: it moves them.
os.environ.setdefault("LAPE_NO_WIDGETS", "1")
# No test reaches the network: the Hub client fails at once (tests fake it where they need it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
