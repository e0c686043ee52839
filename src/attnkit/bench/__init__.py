"""``attnkit bench``: attnkit's kernels timed beside their baselines, in one process.

Each case (see :data:`attnkit.bench.cases.CASES`) runs interleaved with its baseline — PyTorch's
SDPA, a naive materialised implementation, or float32 matmul throughput — after a warm-up, and
reports the median of several repeats and the peak tensor memory beyond the inputs::

    python -m attnkit.bench --quick --json out.json
    rows = attnkit.bench.run(quick=True, json_path=Path("out.json"), cases=["local-*"])

Each row: ``{"case", "ours_ms", "baseline", "baseline_ms", "speedup", "ours_peak_mb",
"baseline_peak_mb", "target", "met", "ours_spread", "baseline_spread"}`` with
``speedup = baseline_ms / ours_ms`` and ``spread = (max − min) / median`` of the repeats.
"""

from attnkit.bench.cases import CASES, Case, Target
from attnkit.bench.measure import peak_bytes, time_interleaved
from attnkit.bench.runner import main, run

__all__ = ["CASES", "Case", "Target", "main", "peak_bytes", "run", "time_interleaved"]
