"""MDS v2, the format every stage reads and writes: the only code that knows it (no torch import, see the
README's design notes). By job:

  encoding.py    column values to bytes and back (streaming's ``mds_encode``/``mds_decode``), vectorized helpers
  index.py       ``index.json``: typed shard entries (:class:`ShardEntry`, :class:`FileInfo`), reading a checked
                 index, finding units, root indexes over units at any depth
  indexcheck.py  every index is checked before anything reads or links its files (no path outside its folder)
  reader.py      a shard's bytes in memory, checked against its entry; samples decoded zero-copy
  writer.py      shards and ``index.json``, byte-identical to streaming's ``MDSWriter``
"""

from .encoding import TEXT_COLUMNS, TOKEN_COLUMNS, decode_value, encode_value, gather, scalar_dtype
from .index import INDEX, FileInfo, Index, ShardEntry, find_units, is_root_index, read_index, write_root_index
from .indexcheck import UnsafePath, check_member
from .reader import Shard, UnitReader, load_shard
from .writer import ShardWriter

__all__ = [
    "TEXT_COLUMNS", "TOKEN_COLUMNS", "encode_value", "decode_value", "gather", "scalar_dtype",
    "INDEX", "FileInfo", "Index", "ShardEntry", "find_units", "is_root_index", "read_index", "write_root_index",
    "UnsafePath", "check_member", "Shard", "UnitReader", "load_shard", "ShardWriter",
]
