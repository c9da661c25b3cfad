# Compiled (Cython, pure Python mode) with no declarations: summary.py runs as
# it reads, parsed once when it is built instead of at every start.
