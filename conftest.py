"""Root pytest configuration: nbval runs the notebooks in smoke mode (tiny, CPU, seconds)."""

import os

os.environ.setdefault("LAPE_SMOKE", "1")
