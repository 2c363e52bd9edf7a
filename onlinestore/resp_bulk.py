"""RESP for many rows at once, compiled with numba: HGET probes, HSET (+ EXPIRE) writes and RESTOREs
of a ready-made hash for the writer; a parser of HMGET replies straight into a byte matrix for the reader.

RESTORE is how a new entity key is written: its payload is the hash serialized the way DUMP does it
(a listpack, RDB type 16, RDB version 10, CRC64), so Redis only copies it in; a 10-field HSET makes
Redis build the same listpack field by field, which costs it about twice as much per key
(`INFO commandstats`: ~2 us per RESTORE against 4-5 us per HSET). What Redis holds afterwards is the
same hash either way: HGET/HMGET/HGETALL return the same bytes. Existing keys are written with HSET.

numba's import costs over a second: serving pays it once at start-up, the writer only when it publishes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Redis' crc64 (crc-64-jones: reflected polynomial 0xad93d23594c935a9, init 0, no final xor).
_REFLECTED_POLY = np.uint64(0x95AC9329AC4BC9B5)


def _crc64_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint64)
    for byte in range(256):
        crc = np.uint64(byte)
        for _ in range(8):
            crc = (crc >> np.uint64(1)) ^ _REFLECTED_POLY if crc & np.uint64(1) else crc >> np.uint64(1)
        table[byte] = crc
    return table


CRC64_TABLE = _crc64_table()
_RDB_TYPE_HASH_LISTPACK = 16
_RDB_VERSION = 10  # Redis 7.0's; 7.2+ loads older versions
# Redis' defaults of hash-max-listpack-entries / -value: HSET turns a bigger hash into a hashtable, while a
# RESTOREd listpack stays one (Redis 7.0), so such rows are written with HSET.
LISTPACK_MAX_ENTRIES = 128
LISTPACK_MAX_VALUE = 64
_HGET, _HSET, _EXPIRE, _RESTORE = (np.frombuffer(name, dtype=np.uint8) for name in (b"HGET", b"HSET", b"EXPIRE", b"RESTORE"))


@njit(cache=True, nogil=True)
def crc64(table, data, start, end):
    crc = np.uint64(0)
    for i in range(start, end):
        crc = table[(crc ^ np.uint64(data[i])) & np.uint64(0xFF)] ^ (crc >> np.uint64(8))
    return crc


@njit(cache=True, nogil=True)
def _digits(value):
    count = 1
    while value >= 10:
        value //= 10
        count += 1
    return count


@njit(cache=True, nogil=True)
def _put_decimal(out, pos, value):
    end = pos + _digits(value)
    for i in range(end - 1, pos - 1, -1):
        out[i] = 48 + value % 10
        value //= 10
    return end


@njit(cache=True, nogil=True)
def _put(out, pos, src, start, end):
    for i in range(start, end):
        out[pos] = src[i]
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def _put_bulk(out, pos, src, start, end):
    """$<len>\\r\\n<bytes>\\r\\n"""
    out[pos] = 36  # '$'
    pos = _put_decimal(out, pos + 1, end - start)
    out[pos] = 13
    out[pos + 1] = 10
    pos = _put(out, pos + 2, src, start, end)
    out[pos] = 13
    out[pos + 1] = 10
    return pos + 2


@njit(cache=True, nogil=True)
def _put_bulk_decimal(out, pos, value):
    out[pos] = 36
    pos = _put_decimal(out, pos + 1, _digits(value))
    out[pos] = 13
    out[pos + 1] = 10
    pos = _put_decimal(out, pos + 2, value)
    out[pos] = 13
    out[pos + 1] = 10
    return pos + 2


@njit(cache=True, nogil=True)
def _put_header(out, pos, arguments, name):
    """*<arguments>\\r\\n then the command name as a bulk string."""
    out[pos] = 42  # '*'
    pos = _put_decimal(out, pos + 1, arguments)
    out[pos] = 13
    out[pos + 1] = 10
    return _put_bulk(out, pos + 2, name, 0, len(name))


@njit(cache=True, nogil=True)
def looks_like_integer(src, start, end):
    """Whether Redis would store this listpack element as an integer (its lpStringToInt64 accepts it);
    over-inclusive on purpose (such rows are written with HSET, which is always right)."""
    length = end - start
    if length == 0 or length > 20:
        return False
    first = start + 1 if src[start] == 45 else start  # '-'
    if first == end:
        return False
    for i in range(first, end):
        if src[i] < 48 or src[i] > 57:
            return False
    return True


@njit(cache=True, nogil=True)
def _entry_size(length):
    """Bytes of a listpack string entry: encoding header, data, back-length."""
    header = 1 if length < 64 else (2 if length < 4096 else 5)
    encoded = header + length
    if encoded <= 127:
        back = 1
    elif encoded < 16383:
        back = 2
    elif encoded < 2097151:
        back = 3
    elif encoded < 268435455:
        back = 4
    else:
        back = 5
    return encoded + back


@njit(cache=True, nogil=True)
def _put_entry(out, pos, src, start, end):
    length = end - start
    if length < 64:
        out[pos] = 0x80 | length
        pos += 1
    elif length < 4096:
        out[pos] = 0xE0 | (length >> 8)
        out[pos + 1] = length & 0xFF
        pos += 2
    else:
        out[pos] = 0xF0
        for i in range(4):
            out[pos + 1 + i] = (length >> (8 * i)) & 0xFF
        pos += 5
    encoded = (1 if length < 64 else (2 if length < 4096 else 5)) + length
    pos = _put(out, pos, src, start, end)
    # back-length: the entry's encoded size, 7 bits per byte, most significant first, all but the
    # first byte with the high bit set (listpack's lpEncodeBacklen)
    if encoded <= 127:
        out[pos] = encoded
        return pos + 1
    if encoded < 16383:
        out[pos] = encoded >> 7
        out[pos + 1] = (encoded & 127) | 128
        return pos + 2
    if encoded < 2097151:
        out[pos] = encoded >> 14
        out[pos + 1] = ((encoded >> 7) & 127) | 128
        out[pos + 2] = (encoded & 127) | 128
        return pos + 3
    if encoded < 268435455:
        out[pos] = encoded >> 21
        out[pos + 1] = ((encoded >> 14) & 127) | 128
        out[pos + 2] = ((encoded >> 7) & 127) | 128
        out[pos + 3] = (encoded & 127) | 128
        return pos + 4
    out[pos] = encoded >> 28
    out[pos + 1] = ((encoded >> 21) & 127) | 128
    out[pos + 2] = ((encoded >> 14) & 127) | 128
    out[pos + 3] = ((encoded >> 7) & 127) | 128
    out[pos + 4] = (encoded & 127) | 128
    return pos + 5


@njit(cache=True, nogil=True)
def _bulk_size(length):
    """Bytes of a bulk string of `length` bytes: $<len>\\r\\n<bytes>\\r\\n"""
    return 1 + _digits(length) + 2 + length + 2


@njit(cache=True, nogil=True)
def _header_size(arguments, name):
    return 1 + _digits(arguments) + 2 + _bulk_size(len(name))


# Each kernel writes whole commands for `rows` (indexes into the key and value columns) into `out` and
# returns the bytes used, or TOO_SMALL (nothing usable written) when `out` cannot hold them all: it
# checks each command's exact size before writing it, so a short buffer is never overrun; the caller
# grows the buffer and calls again.
# Keys: Ragged (key_data, key_offsets). Fields: Ragged of the hash's field names (features, then `_ts`).
# Values: one byte string per field and row, all in value_data: field f of row r is
# value_data[value_offsets[f, r]:value_offsets[f, r + 1]].
TOO_SMALL = -1


@njit(cache=True, nogil=True)
def build_probes(rows, key_data, key_offsets, field_data, field_offsets, out):
    """HGET key <last field> (the `_ts` field) per row."""
    fields = len(field_offsets) - 1
    last_start, last_end = field_offsets[fields - 1], field_offsets[fields]
    pos = 0
    for row in rows:
        key_start, key_end = key_offsets[row], key_offsets[row + 1]
        if pos + _header_size(3, _HGET) + _bulk_size(key_end - key_start) + _bulk_size(last_end - last_start) > len(out):
            return TOO_SMALL
        pos = _put_header(out, pos, 3, _HGET)
        pos = _put_bulk(out, pos, key_data, key_start, key_end)
        pos = _put_bulk(out, pos, field_data, last_start, last_end)
    return pos


@njit(cache=True, nogil=True)
def build_hsets(rows, key_data, key_offsets, field_data, field_offsets, value_data, value_offsets, expire_seconds, out):
    """HSET key field value ... per row, each followed by EXPIRE key seconds when expire_seconds > 0."""
    fields = len(field_offsets) - 1
    pos = 0
    for row in rows:
        key_start, key_end = key_offsets[row], key_offsets[row + 1]
        size = _header_size(2 + 2 * fields, _HSET) + _bulk_size(key_end - key_start)
        for f in range(fields):
            size += _bulk_size(field_offsets[f + 1] - field_offsets[f]) + _bulk_size(value_offsets[f, row + 1] - value_offsets[f, row])
        if expire_seconds > 0:
            size += _header_size(3, _EXPIRE) + _bulk_size(key_end - key_start) + _bulk_size(_digits(expire_seconds))
        if pos + size > len(out):
            return TOO_SMALL
        pos = _put_header(out, pos, 2 + 2 * fields, _HSET)
        pos = _put_bulk(out, pos, key_data, key_start, key_end)
        for f in range(fields):
            pos = _put_bulk(out, pos, field_data, field_offsets[f], field_offsets[f + 1])
            pos = _put_bulk(out, pos, value_data, value_offsets[f, row], value_offsets[f, row + 1])
        if expire_seconds > 0:
            pos = _put_header(out, pos, 3, _EXPIRE)
            pos = _put_bulk(out, pos, key_data, key_start, key_end)
            pos = _put_bulk_decimal(out, pos, expire_seconds)
    return pos


@njit(cache=True, nogil=True)
def _put_payload(out, pos, listpack, length_size, fields, field_data, field_offsets, value_data, value_offsets, row, crc_table):
    """The DUMP payload of the row's hash: RDB type, RDB length, the listpack, RDB version, CRC64."""
    payload_start = pos
    out[pos] = _RDB_TYPE_HASH_LISTPACK
    pos += 1
    if length_size == 1:  # RDB length: 6 bits, 14 bits big-endian, or 0x80 + 32 bits big-endian
        out[pos] = listpack
    elif length_size == 2:
        out[pos] = 0x40 | (listpack >> 8)
        out[pos + 1] = listpack & 0xFF
    else:
        out[pos] = 0x80
        for i in range(4):
            out[pos + 1 + i] = (listpack >> (8 * (3 - i))) & 0xFF
    pos += length_size
    for i in range(4):  # listpack header: total bytes (u32 LE), element count (u16 LE)
        out[pos + i] = (listpack >> (8 * i)) & 0xFF
    elements = min(2 * fields, 65535)
    out[pos + 4] = elements & 0xFF
    out[pos + 5] = elements >> 8
    pos += 6
    for f in range(fields):
        pos = _put_entry(out, pos, field_data, field_offsets[f], field_offsets[f + 1])
        pos = _put_entry(out, pos, value_data, value_offsets[f, row], value_offsets[f, row + 1])
    out[pos] = 0xFF
    out[pos + 1] = _RDB_VERSION & 0xFF
    out[pos + 2] = _RDB_VERSION >> 8
    pos += 3
    crc = crc64(crc_table, out, payload_start, pos)
    for i in range(8):
        out[pos + i] = (crc >> np.uint64(8 * i)) & np.uint64(0xFF)
    return pos + 8


@njit(cache=True, nogil=True)
def build_restores(rows, key_data, key_offsets, field_data, field_offsets, value_data, value_offsets, expire_seconds,
                   crc_table, out, fallback):
    """RESTORE key <ttl ms> <payload> per row; a row whose hash HSET would make differently (an element
    that looks like an integer, or one too long for a listpack hash) is not written and is flagged in
    `fallback` (for HSET)."""
    fields = len(field_offsets) - 1
    pos = 0
    for row in rows:
        key_start, key_end = key_offsets[row], key_offsets[row + 1]
        listpack = 6 + 1
        hset_only = fields > LISTPACK_MAX_ENTRIES // 2
        for f in range(fields):
            start, end = value_offsets[f, row], value_offsets[f, row + 1]
            listpack += _entry_size(field_offsets[f + 1] - field_offsets[f]) + _entry_size(end - start)
            hset_only |= looks_like_integer(value_data, start, end) or end - start > LISTPACK_MAX_VALUE \
                or field_offsets[f + 1] - field_offsets[f] > LISTPACK_MAX_VALUE
        if hset_only:
            fallback[row] = True
            continue
        length_size = 1 if listpack < 64 else (2 if listpack < 16384 else 5)
        payload = 1 + length_size + listpack + 2 + 8
        size = _header_size(4, _RESTORE) + _bulk_size(key_end - key_start) + _bulk_size(_digits(expire_seconds * 1000)) + _bulk_size(payload)
        if pos + size > len(out):
            return TOO_SMALL
        pos = _put_header(out, pos, 4, _RESTORE)
        pos = _put_bulk(out, pos, key_data, key_start, key_end)
        pos = _put_bulk_decimal(out, pos, expire_seconds * 1000)
        out[pos] = 36
        pos = _put_decimal(out, pos + 1, payload)
        out[pos] = 13
        out[pos + 1] = 10
        pos = _put_payload(out, pos + 2, listpack, length_size, fields, field_data, field_offsets, value_data, value_offsets,
                           row, crc_table)
        out[pos] = 13
        out[pos + 1] = 10
        pos += 2
    return pos


@njit(cache=True, nogil=True)
def _parse_integer(buffer, pos, end):
    """RESP integer line at `pos` (after its type byte): (value, position after CRLF, complete)."""
    negative = pos < end and buffer[pos] == 45
    if negative:
        pos += 1
    value = 0
    while pos < end and buffer[pos] != 13:
        value = value * 10 + (buffer[pos] - 48)
        pos += 1
    if pos + 1 >= end:
        return 0, pos, False
    return (-value if negative else value), pos + 2, True


@njit(cache=True, nogil=True)
def parse_hmget_replies(buffer, end, pos, done, count, cells, lengths):
    """Parse complete HMGET replies of `width` = cells.shape[1] fields from buffer[pos:end] into
    cells[done:count] (each value's first cells.shape[2] bytes) and lengths (0 for nil or empty).
    Returns (position, replies done, status): status 0 = fine (call again with more bytes while
    done < count), 1 = an error reply starts at position, 2 = not an HMGET reply of this width."""
    width, room = cells.shape[1], cells.shape[2]
    while done < count:
        start = pos
        if pos >= end:
            return start, done, 0
        if buffer[pos] == 45:  # '-'
            return start, done, 1
        if buffer[pos] != 42:  # '*'
            return start, done, 2
        fields, pos, complete = _parse_integer(buffer, pos + 1, end)
        if not complete:
            return start, done, 0
        if fields != width:
            return start, done, 2
        for field in range(width):
            if pos >= end:
                return start, done, 0
            if buffer[pos] != 36:  # '$'
                return start, done, 2
            length, pos, complete = _parse_integer(buffer, pos + 1, end)
            if not complete:
                return start, done, 0
            if length < 0:  # nil: no such field
                lengths[done, field] = 0
                continue
            if pos + length + 2 > end:
                return start, done, 0
            for i in range(min(length, room)):
                cells[done, field, i] = buffer[pos + i]
            for i in range(min(length, room), room):
                cells[done, field, i] = 0
            lengths[done, field] = length
            pos += length + 2
        done += 1
    return pos, done, 0


VARINT, DOUBLE, FLOAT = 0, 1, 2  # how a numeric feast Value carries its number (int32/int64/bool: varint)
_NULL_VALUE_TAG = 0x98  # Value.null_val (field 19, varint)
_MAX_NUMERIC_VALUE_BYTES = 11  # tag + a 10-byte varint


@njit(cache=True, nogil=True)
def decode_numeric_values(cells, lengths, kinds, out):
    """Serialized numeric feast Values -> float64: field f of entity e is cells[e, f, :lengths[e, f]],
    decoded as kinds[f] into out[e, f]; NaN for an empty value or null_val. Returns -1, or the index of a
    field holding a value too long to be a number."""
    scratch = np.zeros(8, dtype=np.uint8)
    as_double = scratch.view(np.float64)
    as_float = scratch[:4].view(np.float32)
    for e in range(cells.shape[0]):
        for f in range(len(kinds)):
            length = lengths[e, f]
            if length > _MAX_NUMERIC_VALUE_BYTES:
                return f
            if length == 0 or cells[e, f, 0] == _NULL_VALUE_TAG:
                out[e, f] = np.nan
            elif kinds[f] == DOUBLE or kinds[f] == FLOAT:  # fixed64 / fixed32 after the tag byte
                for i in range(8 if kinds[f] == DOUBLE else 4):
                    scratch[i] = cells[e, f, 1 + i]
                out[e, f] = as_double[0] if kinds[f] == DOUBLE else as_float[0]
            else:
                raw = np.uint64(0)
                for i in range(1, length):
                    byte = np.uint64(cells[e, f, i])
                    raw |= (byte & np.uint64(0x7F)) << np.uint64(7 * (i - 1))
                    if byte < 0x80:
                        break
                out[e, f] = np.float64(np.int64(raw))
    return -1


def warm_up() -> None:
    """Compile (or load from numba's cache) the reader's kernels now, not on the first request."""
    cells = np.zeros((1, 2, 16), dtype=np.uint8)
    lengths = np.zeros((1, 2), dtype=np.int64)
    reply = np.frombuffer(b"*2\r\n$-1\r\n$-1\r\n", dtype=np.uint8)
    parse_hmget_replies(reply, len(reply), 0, 0, 1, cells, lengths)
    decode_numeric_values(cells, lengths, np.zeros(1, dtype=np.int64), np.empty((1, 1)))
