"""Pre-encoded RESP on one pooled connection, replies parsed by one hiredis reader straight off the
socket (redis-py's per-reply read_response costs more than the rest of a bulk read or write).
Plain `redis.Redis` clients only: a cluster client needs slot routing."""

from __future__ import annotations

import hiredis
import redis


class StreamingConnection:
    """A pooled connection used as a stream: `send` buffers of commands without waiting, `read` their
    replies in order later, so Redis works through one batch while the caller encodes the next.

    A pooled connection has no pending input, so the socket holds exactly our replies; on any failure
    the connection is dropped rather than returned to the pool with unread replies."""

    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._connection = None
        self._reader = hiredis.Reader()

    def __enter__(self) -> StreamingConnection:
        self._connection = self._pool.get_connection()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self._connection.disconnect()  # half-read replies must never reach the next user
        self._pool.release(self._connection)

    def send(self, packed) -> None:
        """Send pre-encoded commands (bytes or any contiguous buffer)."""
        self._connection.send_packed_command([packed], check_health=False)

    def read(self, count: int) -> list:
        """The next `count` replies; error replies are returned as hiredis.ReplyError, not raised."""
        replies: list = []
        while len(replies) < count:
            reply = self._reader.gets()
            if reply is not False:
                replies.append(reply)
                continue
            self._reader.feed(self._receive(lambda sock: sock.recv(1 << 20)))
        return replies

    def receive_into(self, buffer: memoryview) -> int:
        """Raw reply bytes into `buffer` (for callers that parse RESP themselves; not mixed with `read`)."""
        return self._receive(lambda sock: sock.recv_into(buffer))

    def _receive(self, receive):
        try:
            received = receive(self._connection._sock)
        except TimeoutError as error:
            raise redis.TimeoutError(f"Redis did not answer within the socket timeout: {error}") from error
        except OSError as error:
            raise redis.ConnectionError(f"Redis connection failed while reading: {error}") from error
        if not received:
            raise redis.ConnectionError("Redis closed the connection while replies were pending")
        return received


def raise_errors(replies: list, what: str) -> None:
    errors = [reply for reply in replies if isinstance(reply, hiredis.ReplyError)]
    if errors:
        raise redis.ResponseError(f"{len(errors)} of {len(replies)} {what} failed, first: {errors[0]}")


def send_packed(client: redis.Redis, packed: bytes, count: int) -> list:
    """Send `count` commands packed in `packed`; return their replies (a ResponseError if any failed)."""
    with StreamingConnection(client) as connection:
        connection.send(packed)
        replies = connection.read(count)
    raise_errors(replies, "commands")
    return replies
