"""Pack raw person-image datasets into verified webdataset tar shards (see DESIGN.md, issue 3).

Public entry points: `shard_tools.pack.pack`, `shard_tools.verify.verify`,
`shard_tools.synth.make_synthetic`, and the `shard-tools` console script (`shard_tools.cli:main`).
"""

__version__ = "0.1.0"
