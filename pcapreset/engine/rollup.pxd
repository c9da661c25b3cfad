# Compiled (Cython, pure Python mode) with no declarations: rollup.py runs as
# it reads, parsed once when it is built instead of at every start. The
# per-connection work it drives is typed in fold.pxd.
