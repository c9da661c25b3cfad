"""engine: runs the stages over a capture, fast and in bounded memory (sharding,
the reader pipeline, eviction into a rollup, packed connections, spill files).
The stages never import it."""
