"""``python -m pcapreset`` and the ``pcapreset`` console script."""

import os
import sys


def main() -> None:
    if "numpy" not in sys.modules:
        # the CLI does no linear algebra; numpy's OpenBLAS would otherwise start
        # a thread per CPU when numpy is imported, which spins for ~60 ms of CPU
        # (/proc/<pid>/task) while this process imports and the reader child
        # starts: on 2 CPUs it competes with both (a user's setting wins)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from .cli import run

    run()


if __name__ == "__main__":
    main()
