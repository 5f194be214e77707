"""Colab: keep a notebook's outputs and the decoded-image cache on Google Drive.

Each Colab notebook runs in its own VM, whose disk goes when the runtime does: without Drive,
notebook 03 cannot find the weights notebook 02 trained, and every notebook decodes CIFAR again.
``storage`` (called right after a notebook's parameter check) mounts Drive on Colab and moves
``output_dir`` and the cache (``$LAPE_CACHE``) under ``DRIVE_ROOT``; elsewhere it changes nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DRIVE_MOUNT = "/content/drive"
DRIVE_ROOT = Path(DRIVE_MOUNT) / "MyDrive" / "lape-workbook"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def storage(output_dir: str, use_drive: bool | None) -> str:
    """The output folder to use: ``output_dir`` unchanged, or, on Colab with ``use_drive`` (None
    means yes there), its place under ``DRIVE_ROOT`` after mounting Drive; the cache moves too."""
    if use_drive is None:
        use_drive = on_colab()
    if not use_drive:
        return output_dir
    if not on_colab():
        raise ValueError("use_drive=True mounts Google Drive, which only Colab has; use use_drive=None or False here")
    from google.colab import drive

    drive.mount(DRIVE_MOUNT)
    runs = DRIVE_ROOT / "runs" / Path(output_dir).name
    os.environ["LAPE_CACHE"] = str(DRIVE_ROOT / "cache")
    runs.mkdir(parents=True, exist_ok=True)
    print(f"Google Drive: outputs in {runs}, decoded images cached in {DRIVE_ROOT / 'cache'} "
          "(every notebook of the workbook finds them there)")
    return str(runs)
