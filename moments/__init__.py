"""moments: CLI, settings, metrics helpers and the embedded local stack.

The only package that ties schemas, producers, processors and sinks together.
"""
