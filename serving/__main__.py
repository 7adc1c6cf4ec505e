"""``python -m serving``: pin BLAS/OpenMP to one thread before numpy loads, then run the launcher.

One-row predictions gain nothing from BLAS threads and lose a lot to their wake-ups and to
oversubscription when several workers share the cores. An explicit setting in the environment wins.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_var, "1")

from serving.launcher import main  # noqa: E402  (after the environment is set)

raise SystemExit(main())
