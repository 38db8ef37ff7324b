"""What the benchmarks in tools/ share: interleaved timing rounds, and writing their JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path


def interleaved(runs, rounds, after_round=None):
    """``{key: [seconds, one per round]}`` for a dict of ``key: callable``.

    Round k calls every callable once before round k+1 starts, so that the machine's drift (other
    jobs, clocks, caches) hits all of them alike; compare them by the median over rounds.
    ``after_round(k)`` is called after each round (progress lines).
    """
    times = {key: [] for key in runs}
    for k in range(rounds):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
        if after_round:
            after_round(k)
    return times


def save_json(data, path):
    """Write ``data`` to ``path`` as indented JSON, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
