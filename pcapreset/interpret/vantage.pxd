# Compiled (Cython, pure Python mode) with no declarations: vantage.py runs as it
# reads, parsed once when it is built instead of at every start.
