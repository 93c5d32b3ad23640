"""Helpers and fixtures that more than one test module uses, for every tier.

A test module imports what it shares from here, never from another test module, and a
helper module of one tier (tests/integration/read_back.py, tests/reliability/harness.py,
...) is used only within that tier (tests/unit/test_tests_house.py checks both). Each
module here is named for what it holds: `engine` for event and rule builders, `sinks` for
the sinks' stand-ins and sample records, `stack` for the embedded broker and database
fixtures, and so on.
"""
