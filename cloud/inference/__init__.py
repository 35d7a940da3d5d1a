"""cloud.inference: the FP32 reference model behind a SageMaker endpoint (:mod:`cloud.inference.handler`).

Nothing is imported here: the serving container imports the handler module itself, and torch loads in
``model_fn`` only.
"""

__all__: list[str] = []
