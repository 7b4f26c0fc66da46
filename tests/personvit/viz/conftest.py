"""Fixtures of the viz tests live in tests/support/viz_fixtures.py (importable helpers + fixtures)."""

from tests.support.viz_fixtures import pretrain_run, shard_set  # noqa: F401  (pytest fixtures)
