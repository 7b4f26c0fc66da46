"""`personvit report RUN_DIR|SWEEP_DIR`: PNG curves and a markdown summary of a run or a sweep (torch-free)."""
