"""Developer tools: ``dump-hlo`` (:mod:`namax.tools.dump_hlo`) and its stages and summary.

Importing this package does not import jax, so the command can set ``XLA_FLAGS`` first.

>>> from namax.tools.dump_hlo import parse_arg_shapes, parse_resources
>>> parse_resources("batch=data,mlp=model"), parse_arg_shapes(["x=batch:8,embed:4"])
({'batch': 'data', 'mlp': 'model'}, [('x', (('batch', 8), ('embed', 4)))])
"""
