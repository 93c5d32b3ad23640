"""Recognising moments: the pure trigger engine and the faust-streaming worker that hosts it.

Imports `schemas` and the base, `common`; never producers, sinks or the CLI's `moments`
(docs/design.md, section 1.2). The engine, `processors/engine/`, imports only `schemas`.
"""

from pathlib import Path

from schemas.compiled import load_fresh

#: The modules of this package the install compiles with mypyc (setup.py reads this list):
#: the sharded file replay's loop, which reads every line of the file in every shard.
COMPILED_MODULES = ("replay_shards",)

#: Whether the compiled sharded replay runs (same bytes, fewer CPU seconds per line).
REPLAY_SHARDS_COMPILED = load_fresh(__name__, COMPILED_MODULES, Path(__file__).parent)
