"""Stand-in for the ``cython`` module when Cython is not installed.

flows.py asks ``cython.compiled`` to pick its column representation; without
Cython it always runs as plain Python.
"""

compiled = False
