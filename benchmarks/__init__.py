"""Benchmarks and the GPU check: scripts that print figures, run from the repository root as modules
(`.venv/bin/python -m benchmarks.batching`, `-m benchmarks.stop_budget`, `-m benchmarks.gpu_check`).
Not part of the image, not part of the laptop's cloud verbs."""
