"""Generated Avro decoders, one module per record schema, compiled with mypyc by setup.py.

Written by `python -m schemas.native --write-native` from the same source the codec
generates and runs itself; the codec uses a module here only when its
`SOURCE_DIGEST` matches that source (tests keep the files current).
"""
