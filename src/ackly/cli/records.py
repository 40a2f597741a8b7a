"""How `ackly produce` and `ackly consume` turn records into text and back.

Text: records are separated by a delimiter (a newline unless `-D` says otherwise), a key is
split from its value at the first key delimiter (`-K`), as kcat does; `\\n`, `\\t` and other
backslash escapes in a delimiter are understood. JSON: one object a record, `key`, `value` and
`headers` (a list of [name, value] pairs) as UTF-8 text, or `key_base64` / `value_base64`
when the bytes are not UTF-8; `consume --format json` writes what `produce --input json` reads.
A consumed record's line in text mode follows a kcat-like `--line` format:
%t topic, %p partition, %o offset, %T timestamp (ms), %k key, %s value, %h headers
(`name=value,...`), %K / %S key and value lengths (-1 for null), %% a percent sign.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

CHUNK_BYTES = 65536


@dataclass(frozen=True)
class OutRecord:
    """A record to produce."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def unescape(text: str) -> bytes:
    """A delimiter as typed (`\\n`, `\\t`, `\\x00` ...) to its bytes."""
    try:
        return codecs.decode(text, "unicode_escape").encode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{text!r}: {exc.reason}") from None


def split_records(stream: IO[bytes], delimiter: bytes) -> Iterator[bytes]:
    """The pieces of a byte stream between delimiters; a final piece without one counts, an
    empty final piece (the input ended with the delimiter) does not."""
    buffer = b""
    read = getattr(stream, "read1", stream.read)
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            break
        buffer += chunk
        *pieces, buffer = buffer.split(delimiter)
        yield from pieces
    if buffer:
        yield buffer


def text_record(piece: bytes, key_delimiter: bytes | None, empty_as_null: bool) -> OutRecord:
    key: bytes | None = None
    value: bytes | None = piece
    if key_delimiter is not None:
        head, sep, tail = piece.partition(key_delimiter)
        if sep:
            key, value = head, tail
    if empty_as_null and not value:
        value = None
    return OutRecord(key, value, [])


def _bytes_field(obj: dict[str, Any], name: str) -> bytes | None:
    if obj.get(f"{name}_base64") is not None:
        try:
            return base64.b64decode(obj[f"{name}_base64"], validate=True)
        except (binascii.Error, TypeError):
            raise ValueError(f"{name}_base64 is not base64") from None
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string or null")
    return value.encode("utf-8")


def json_record(piece: bytes) -> OutRecord:
    """One JSON object to a record; ValueError says what is wrong with it."""
    try:
        obj = json.loads(piece)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    raw_headers = obj.get("headers") or []
    if isinstance(raw_headers, dict):
        raw_headers = list(raw_headers.items())
    headers: list[tuple[str, bytes | None]] = []
    for pair in raw_headers:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)
                and (pair[1] is None or isinstance(pair[1], str))):
            raise ValueError("headers are [name, value] pairs of strings")
        headers.append((pair[0], None if pair[1] is None else pair[1].encode("utf-8")))
    # `topic`, `partition`, `offset` and `timestamp_ms` of a consumed record are left out:
    # the record goes where -p or the partitioner puts it, in the topic named.
    return OutRecord(_bytes_field(obj, "key"), _bytes_field(obj, "value"), headers)


def _text_or_base64(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def record_json(msg: Any) -> str:
    """A consumed message (confluent-kafka's Message) as one JSON line."""
    _, timestamp_ms = msg.timestamp()
    headers = [[name, None if value is None else value.decode("utf-8", "backslashreplace")]
               for name, value in (msg.headers() or [])]
    obj = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
           "timestamp_ms": timestamp_ms, **_text_or_base64("key", msg.key()),
           **_text_or_base64("value", msg.value()), "headers": headers}
    return json.dumps(obj)


def _length(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


def format_line(line_format: bytes, msg: Any) -> bytes:
    """A consumed message through a `--line` format (see the module's account)."""
    out = bytearray()
    i = 0
    while i < len(line_format):
        byte = line_format[i:i + 1]
        if byte != b"%" or i + 1 >= len(line_format):
            out += byte
            i += 1
            continue
        token = line_format[i + 1:i + 2]
        i += 2
        if token == b"t":
            out += msg.topic().encode()
        elif token == b"p":
            out += str(msg.partition()).encode()
        elif token == b"o":
            out += str(msg.offset()).encode()
        elif token == b"T":
            out += str(msg.timestamp()[1]).encode()
        elif token == b"k":
            out += msg.key() or b""
        elif token == b"s":
            out += msg.value() or b""
        elif token == b"K":
            out += _length(msg.key())
        elif token == b"S":
            out += _length(msg.value())
        elif token == b"h":
            out += b",".join(name.encode() + b"=" + (value or b"") for name, value in (msg.headers() or []))
        elif token == b"%":
            out += b"%"
        else:
            out += b"%" + token
    return bytes(out)
