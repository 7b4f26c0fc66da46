"""Dataset sources: `open_source(name, src)` -> an object with `.list()` and `.read(path)`."""

from __future__ import annotations

from pathlib import Path

from shard_tools.sources.base import Listing, Record, Skip, Source, SourceError
from shard_tools.sources.dukemtmc import dukemtmc, occluded_duke
from shard_tools.sources.luperson import luperson
from shard_tools.sources.market1501 import market1501
from shard_tools.sources.msmt17 import MSMT17Source

SOURCES = {
    "luperson": luperson,
    "market1501": market1501,
    "dukemtmc": dukemtmc,
    "occluded-duke": occluded_duke,
    "msmt17": MSMT17Source,
}


def open_source(name: str, src: str | Path) -> Source:
    """The source `name` (one of SOURCES) rooted at `src`; SourceError names what is wrong."""
    if name not in SOURCES:
        raise SourceError(f"unknown source {name!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[name](src)


__all__ = ["SOURCES", "Listing", "Record", "Skip", "Source", "SourceError", "open_source"]
