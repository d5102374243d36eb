"""Peak memory of one stage of a step (``memory/<stage>_peak_gb``, and ``memory/peak_gb`` the step's
largest): on a GPU the most memory torch allocated on it during the stage
(``torch.cuda.max_memory_allocated`` after a reset); on a CPU the process's peak resident set size
during the stage (Linux's VmHWM, reset by writing 5 to /proc/self/clear_refs; where that is not
allowed the peak since the process started). Each rank reports its own."""
from __future__ import annotations

import torch

from rlrun.runtime import dist

GB = 2**30


def _cuda() -> bool:
    return dist.device().type == "cuda"


def reset_peak() -> None:
    if _cuda():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_gb() -> float:
    if _cuda():
        return torch.cuda.max_memory_allocated() / GB
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB
