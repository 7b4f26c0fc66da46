"""The one tar reader of the shard format: members in file order, headers only or with their bytes.

Three readers need a shard's members: the pretraining loader (an index of offsets, data seeked over),
the ReID loader (every sample's bytes, grouped by key) and `shard-tools verify` (every member, checked
strictly). They differ in what they do with a member, not in how a tar is walked or how a broken one
is reported, so both live here: a truncated or corrupt shard is a `TarReadError` that names the file.
Torch-free and numpy-free: `shard_tools` imports it without paying for either.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from personvit.data.format import split_member_name

__all__ = ["TarMember", "TarReadError", "iter_members", "read_samples"]


class TarReadError(ValueError):
    """A tar that cannot be read to its end (truncated, corrupt header, I/O error); names the file.

    Args:
        path: the tar file.
        cause: the error tarfile or the OS raised.
    """

    def __init__(self, path: str | Path, cause: BaseException) -> None:
        super().__init__(f"{path}: unreadable tar ({cause})")
        self.path, self.cause = Path(path), cause


@dataclass(frozen=True)
class TarMember:
    """One tar member as the shard format sees it.

    Attributes:
        name: the member path inside the tar, as written.
        key: sample key (webdataset's grouping: path up to the first dot of the basename).
        ext: lower-case extension after that dot (`jpg`, `json`).
        is_file: a regular file (directories, links and devices are not samples).
        offset: byte offset of the member's data in the tar file.
        size: data size in bytes.
        data: the member's bytes when read with `read_data=True` (regular files only), else None.
    """

    name: str
    key: str
    ext: str
    is_file: bool
    offset: int
    size: int
    data: bytes | None = None


def iter_members(path: str | Path, read_data: bool = False) -> Iterator[TarMember]:
    """Every member of a tar, in file order.

    Args:
        path: the tar file (plain, uncompressed: shards are never compressed).
        read_data: also read each regular file's bytes (else the data is seeked over).
    Raises:
        TarReadError: the file cannot be opened or read to its end.
    """
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                key, ext = split_member_name(m.name)
                data = None
                if read_data and m.isfile():
                    f = tar.extractfile(m)
                    data = f.read() if f is not None else b""
                yield TarMember(m.name, key, ext, m.isfile(), m.offset_data, m.size, data)
    except (tarfile.TarError, OSError) as e:
        raise TarReadError(path, e) from None


def read_samples(path: str | Path) -> dict[str, dict[str, bytes]]:
    """The bytes of every sample of a tar: key -> {extension: bytes}, keys in order of first appearance.

    Members that are not regular files are left out (as webdataset does).

    Args:
        path: the tar file.
    Raises:
        TarReadError: the file cannot be read to its end.
    """
    samples: dict[str, dict[str, bytes]] = {}
    for m in iter_members(path, read_data=True):
        if m.is_file:
            samples.setdefault(m.key, {})[m.ext] = m.data or b""
    return samples
