"""`make demo` (`python -m examples.demo`): synthetic pedestrians -> shards -> pretrain -> fine-tune -> report.

Kept outside the library's packages: it drives `shard_tools`, `slurm` and `personvit` together, and
no library module imports it, so the packages' import graph has no demo -> slurm -> personvit circle.
"""
