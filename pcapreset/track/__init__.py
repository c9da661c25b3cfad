"""track: TCP connections rebuilt from decoded segments (the connection model,
the tracker, HTTP exchanges, Zeek's connection state)."""
