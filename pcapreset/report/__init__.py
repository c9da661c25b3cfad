"""report: the report of a capture (model, JSON, text)."""
