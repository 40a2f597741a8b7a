# The native record scan (_clean_scan.c); batch_filter.py wraps it.
from typing import TypeVar

_R = TypeVar("_R", bound=tuple[object, ...])

class OffsetMap:
    def __init__(self) -> None: ...
    def get(self, key: bytes, /) -> int | None: ...
    def __getitem__(self, key: bytes, /) -> int: ...
    def __setitem__(self, key: bytes, offset: int, /) -> None: ...
    def __len__(self) -> int: ...
    def items(self) -> list[tuple[bytes, int]]: ...

def scan_keys(
    section: bytes | bytearray | memoryview,
    base_offset: int,
    records_count: int,
    into: dict[bytes, int] | OffsetMap | object,
) -> None: ...
def filter_records(
    section: bytes | bytearray | memoryview,
    base_offset: int,
    records_count: int,
    base_timestamp: int,
    max_timestamp: int,
    log_append_time: bool,
    latest: dict[bytes, int] | OffsetMap | object | None,
    drop_tombstones: bool,
    record_type: type[_R],
) -> tuple[list[_R], bool]: ...
