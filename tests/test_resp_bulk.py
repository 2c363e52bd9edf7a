"""The compiled RESP kernels (onlinestore.resp_bulk) on their own: each returns TOO_SMALL rather than write
past a short buffer, and fills an exactly sized one. `make test` runs this file again with
NUMBA_BOUNDSCHECK=1, where any index past an array's end raises instead of corrupting memory."""

from __future__ import annotations

import os
import subprocess
import sys

import hiredis
import numpy as np
import pytest

from core.settings import PROJECT_ROOT
from onlinestore import resp_bulk

pytestmark = pytest.mark.unit

GUARD = 0xAA


def _ragged(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    return np.frombuffer(b"".join(items), np.uint8).copy(), np.cumsum([0] + [len(i) for i in items]).astype(np.int64)


ROWS = 5
KEYS = _ragged([f"key-{r}".encode() * (r + 1) for r in range(ROWS)])
FIELDS = _ragged([b"\x01\x02\x03\x04", b"f" * 60, b"_ts:view"])
# field f of row r; up to 64 bytes, the longest value a listpack hash (so a RESTORE) takes
VALUES_BY_FIELD = [[bytes([65 + r]) * n for r, n in enumerate((0, 5, 40, 63, 64))] for _ in range(3)]
VALUE_DATA = np.frombuffer(b"".join(v for values in VALUES_BY_FIELD for v in values), np.uint8).copy()
VALUE_OFFSETS = np.stack([np.cumsum([0] + [len(v) for v in values]) + sum(len(v) for values in VALUES_BY_FIELD[:f] for v in values)
                          for f, values in enumerate(VALUES_BY_FIELD)]).astype(np.int64)


def _run(mode: str, out: np.ndarray, rows=np.arange(ROWS)) -> int:
    if mode == "probe":
        return resp_bulk.build_probes(rows, *KEYS, *FIELDS, out)
    if mode == "hset":
        return resp_bulk.build_hsets(rows, *KEYS, *FIELDS, VALUE_DATA, VALUE_OFFSETS, 3600, out)
    return resp_bulk.build_restores(rows, *KEYS, *FIELDS, VALUE_DATA, VALUE_OFFSETS, 3600, resp_bulk.CRC64_TABLE, out,
                                    np.zeros(ROWS, dtype=bool))


@pytest.mark.parametrize("mode", ["probe", "hset", "restore"])
def test_a_short_buffer_is_reported_and_never_overrun(mode):
    needed = _run(mode, np.empty(1 << 20, np.uint8))
    assert needed > 0 and (mode != "restore" or needed > 5 * 150)  # every row written
    for size in (0, 1, needed // 2, needed - 1):
        backing = np.full(needed + 64, GUARD, np.uint8)
        assert _run(mode, backing[:size]) == resp_bulk.TOO_SMALL
        assert (backing[size:] == GUARD).all(), f"{mode}: wrote past a {size}-byte buffer"
    exact = np.empty(needed, np.uint8)
    assert _run(mode, exact) == needed


@pytest.mark.parametrize("mode", ["probe", "hset", "restore"])
def test_commands_are_well_formed_resp(mode):
    out = np.empty(1 << 20, np.uint8)
    used = _run(mode, out)
    reader = hiredis.Reader()
    reader.feed(out[:used].tobytes())
    commands = list(iter(reader.gets, False))
    names = [command[0] for command in commands]
    expected = {"probe": [b"HGET"] * ROWS, "hset": [b"HSET", b"EXPIRE"] * ROWS, "restore": [b"RESTORE"] * ROWS}[mode]
    assert names == expected
    if mode == "hset":
        assert commands[2] == [b"HSET", KEYS[0][KEYS[1][1]:KEYS[1][2]].tobytes(),
                               *[item for f in range(3) for item in (FIELDS[0][FIELDS[1][f]:FIELDS[1][f + 1]].tobytes(), VALUES_BY_FIELD[f][1])]]


def test_with_numba_boundscheck_an_overrun_raises(tmp_path):
    """What make test's NUMBA_BOUNDSCHECK=1 pass relies on: our kernels, compiled with checks (a fresh
    numba cache, so nothing compiled without them is reused), raise IndexError on an overrun."""
    overrun = "import numpy as np; from onlinestore import resp_bulk; resp_bulk._put(np.empty(2, np.uint8), 0, np.ones(8, np.uint8), 0, 8)"
    result = subprocess.run([sys.executable, "-c", overrun], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)})
    assert result.returncode != 0 and "IndexError" in result.stderr, result.stderr[-2000:]
