"""Building blocks of ``benchmarks/bench_quality.py`` (the CLI entry point), one concept per module.

``degradation`` (k-space settings and the fixed test masks), ``metrics`` (PSNR/SSIM, Dice/IoU, summaries and the
patient-clustered paired difference), ``methods`` (the compared methods, their networks, training and the
``Runner``) and ``report`` (machine record, markdown, seed summaries, merges and the plot). Importing the package
puts ``bundle/`` (the bundle's ``scripts`` package) and the repository root on ``sys.path``, as the CLI does.
"""

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
for _p in (str(_REPO / "bundle"), str(_REPO)):
    if _p not in sys.path:
        sys.path.insert(0, _p)
