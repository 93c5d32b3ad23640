"""moments: the CLI, the bench, the demo and the embedded local stack.

The only package that ties schemas, producers, processors and sinks together.
"""
