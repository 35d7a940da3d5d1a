"""cloud: the training side - data, training, evaluation, compile, registry and the pipeline that runs them.

May import ``edge_runtime`` (evaluation scores the on-device path); the reverse never happens.
"""

__all__: list[str] = []
