"""Output bytes unchanged: a full chain (convert, tokenize, chunk with three option sets, prepare, sample
split/budget/context, finalize with every profile and option) against the digests recorded from the code
before the fast paths (``tests/chain_digest.py``)."""

from __future__ import annotations

import json

from chain_digest import EXPECTED, chain_digest


def test_full_chain_writes_the_recorded_bytes(tmp_path):
    want = json.loads(EXPECTED.read_text())
    got = chain_digest(tmp_path)
    assert sorted(got) == sorted(want)
    for name in want:
        differ = sorted(f for f in set(want[name]) | set(got[name]) if want[name].get(f) != got[name].get(f))
        assert not differ, f"{name}: {differ[:10]}"
