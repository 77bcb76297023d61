"""Developer tools: ``dump-hlo`` (:mod:`namax.tools.dump_hlo`) and its stages and summary.

Importing this package does not import jax, so the command can set ``XLA_FLAGS`` first.
"""
