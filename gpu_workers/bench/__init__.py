"""Benchmarks of the model runtime: ``python -m gpu_workers.bench --help``.

One run measures, on the same stand-in checkpoints and inputs: the batched captioning
path against a per-image loop and transformers' pipeline, generation, a LoRA training
step, the warm model cache and the Celery queue overhead. It writes
``docs/benchmarks.json`` and ``docs/benchmarks.md``. It is a script with recorded results,
not a test: it asserts nothing and takes minutes.
"""
