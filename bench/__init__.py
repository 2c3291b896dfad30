"""Benchmarks: `python -m bench` (or `make bench`) runs each named case against a peer (Postfix,
smtp-sink, ...) and against mailprime in the same invocation and prints the ratio.

Modules: `smtp_source` (the load: what smtp-source sends and what a run measured), `postfix_peer`
(the Postfix halves of the cases), `__main__` (the case table, the mailprime hooks, the report).
The method is written up in docs/benchmarks.md.
"""
