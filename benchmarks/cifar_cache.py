"""Seconds to load CIFAR-10 the first time (decode the archive, write the cache) and after (read the cache).

    python benchmarks/cifar_cache.py [--root ../shared/data] [--out results/cifar_cache.json]

Loads the whole dataset (60,000 images) twice with ``lape_lib.data.load_cifar`` into an empty
cache folder of its own (``$LAPE_CACHE`` pointed at a temporary folder), so the first load
decodes and the second reads the safetensors cache, checksum included. A figure to read, not a test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lape_lib.data import load_cifar
from lape_lib.train import environment

from _table import command, host_name, merge_row  # benchmarks/ itself: on the path when run as a script


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="where the CIFAR-10 copy is (default: the loader's own search)")
    p.add_argument("--out", default="results/cifar_cache.json")
    args = p.parse_args(argv)
    env = environment()
    seconds = []
    before = os.environ.get("LAPE_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAPE_CACHE"] = tmp
        try:
            for what in ("decode and write the cache", "read the cache"):
                t0 = time.perf_counter()
                data = load_cifar("cifar10", args.root)
                seconds.append(time.perf_counter() - t0)
                print(f"{what}: {seconds[-1]:.1f} s ({data.n_train + data.n_test} images from {data.source})")
        finally:  # a caller's later loads must not look in the folder this call deletes
            if before is None:
                del os.environ["LAPE_CACHE"]
            else:
                os.environ["LAPE_CACHE"] = before
    name = host_name(env)
    record = {"device": name, "environment": env, "source": data.source, "images": data.n_train + data.n_test,
              "first_load_s": seconds[0], "cached_load_s": seconds[1],
              "command": command("cifar_cache.py", argv)}
    merge_row(Path(args.out), name, record)
    print(f"written to {args.out}")
    return record


if __name__ == "__main__":
    main()
