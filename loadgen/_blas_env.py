"""loadgen does no linear algebra, yet numpy's OpenBLAS starts a thread per core at import that spins in sched_yield.

The command line keeps BLAS to the calling thread (the setting only takes effect when made before numpy is first
imported, and worker processes inherit it); a plain `import loadgen` leaves a notebook's numpy alone. A server loadgen
starts gets the environment it would have had: its models may well do linear algebra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# OpenBLAS (numpy's wheels), OpenMP and MKL (other numpy builds)
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_set_here: set[str] = set()


def single_threaded_blas() -> None:
    """Set each thread count the user left unset to 1 (before numpy is imported)."""
    for name, value in SINGLE_THREADED.items():
        if name not in os.environ:
            os.environ[name] = value
            _set_here.add(name)


def without_blas_limits(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` without the thread counts `single_threaded_blas` set (a user's own are kept)."""
    return {name: value for name, value in environment.items() if name not in _set_here}
