"""Baseline: 4 honest sites, 2 rounds (timing and reference weights)."""

import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from harness import Site, run

t = time.time()
run([Site(f"h{i}", 150) for i in range(4)], rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 2)
print(f"{time.time() - t:.1f}s")
