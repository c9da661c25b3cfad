# Compiled (Cython, pure Python mode) with no declarations: sources.py runs as
# it reads, parsed once when it is built instead of at every start. The
# per-record loops it drives are typed in pcap.pxd and pcapng.pxd.
