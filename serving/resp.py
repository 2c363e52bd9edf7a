"""One-buffer pipelines: many pre-encoded RESP commands sent in one write, their replies parsed by
one hiredis reader straight off the socket (redis-py's per-reply read_response costs more than the
rest of a bulk read or write). Plain `redis.Redis` clients only: a cluster client needs slot routing."""

from __future__ import annotations

import hiredis
import redis


def send_packed(client: redis.Redis, packed: bytes, count: int) -> list:
    """Send `count` commands packed in `packed`; return their replies (a ResponseError if any failed).
    A pooled connection has no pending input, so the socket holds exactly our replies; on any failure
    the connection is dropped rather than returned to the pool with unread replies."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([packed], check_health=False)
        reader = hiredis.Reader()
        replies: list = []
        while len(replies) < count:
            try:
                chunk = connection._sock.recv(1 << 20)
            except TimeoutError as error:
                raise redis.TimeoutError(f"Redis did not answer within the socket timeout: {error}") from error
            except OSError as error:
                raise redis.ConnectionError(f"Redis connection failed while reading: {error}") from error
            if not chunk:
                raise redis.ConnectionError("Redis closed the connection while replies were pending")
            reader.feed(chunk)
            while (reply := reader.gets()) is not False:
                replies.append(reply)
        errors = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
        if errors:
            raise redis.ResponseError(f"{len(errors)} of {count} commands failed, first: {errors[0]}")
        return replies
    except BaseException:
        connection.disconnect()  # half-read replies must never reach the next user of the connection
        raise
    finally:
        pool.release(connection)
