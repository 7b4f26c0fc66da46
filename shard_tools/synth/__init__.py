"""Synthetic pedestrians in the Market-1501 layout (demo and tests): `make_synthetic(out, ...)`,
its validation split of training people, and the person-vs-scene triplets of the demo's diagnostic."""

from shard_tools.synth.dataset import make_synthetic, write_validation_split
from shard_tools.synth.pairs import person_preference, person_scene_triplets

__all__ = ["make_synthetic", "person_preference", "person_scene_triplets", "write_validation_split"]
