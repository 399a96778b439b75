"""Model runtime for Versus: loads captioning and text-to-image models and runs batches on them.

Plain Python and torch, with no Django: the worker tasks call ``gpu_workers.runner`` with paths,
prompts and options, and store what it returns. ``gpu_workers.standins`` builds tiny
random-weight checkpoints that load through the same code, for tests and demos.
"""
