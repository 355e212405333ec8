"""How much of a memory-mapped file is resident in this process (Linux)."""

from __future__ import annotations

import numpy as np


def resident_pages(array: np.memmap) -> int:
    """Pages of ``array``'s memory map resident in this process (mincore is not in the
    standard library; /proc/self/smaps names the mapping's Rss)."""
    path = str(array.filename)
    rss_kib, in_mapping = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            if line[0] in "0123456789abcdef" and " " in line:
                in_mapping = line.rstrip().endswith(path)
            elif in_mapping and line.startswith("Rss:"):
                rss_kib += int(line.split()[1])
    return rss_kib // 4
