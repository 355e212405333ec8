"""What a benchmark's child process reports to its parent: its wall time and its own peak
resident memory (the kernel's VmHWM), as one JSON line (Linux)."""

import json


def peak_rss_mib() -> float:
    """This process's peak resident set size (VmHWM), MiB."""
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    return kib / 1024


def print_child_report(seconds: float) -> None:
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss_mib()}))
