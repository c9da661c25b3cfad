"""interpret: what the connections mean. The per-capture context, the facts of
each reset, the rules table that turns facts into a verdict, findings, advice."""
