"""Benchmark: coverage of the analysis's intervals on stores of known truth, the README's table.

For 2, 3, 5 and 10 replicates (dense checkpoints) × 2 calibration seeds, in the two settings of
analysis/simulate.py (replicate: checkpoints dominate, sd 0.05 of top-1; image: eval-image noise
dominates, sd 0.002 between checkpoints), 1000 studies each (12 sparsities, LAMP and ERK with
true difference 0, 2000 eval images shared by every row), written through the real store writer
and analysed by regime_table: coverage of the nominal 95 % intervals of LAMP − ERK and of mean r,
the rate of LAMP − ERK winners named where there is none, and the boundaries' coverage. The
table is printed, then a JSON line. Any option of `python -m analysis.simulate` overrides the
defaults here (1000 studies, 2 processes).

    .venv/bin/python bench/coverage.py [--stores 1000] [--jobs 2] [--replicates 2 3 5 10]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, only bench/ is on sys.path: put this checkout first, so that its own packages
# are measured whatever the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.simulate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--stores", "1000", "--jobs", "2", *sys.argv[1:]]))
