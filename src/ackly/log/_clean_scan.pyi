# The native record scan (_clean_scan.c); batch_filter.py wraps it.
from typing import TypeVar

_R = TypeVar("_R", bound=tuple[object, ...])

def scan_keys(
    section: bytes | bytearray | memoryview, base_offset: int, records_count: int, into: dict[bytes, int]
) -> None: ...
def filter_records(
    section: bytes | bytearray | memoryview,
    base_offset: int,
    records_count: int,
    base_timestamp: int,
    max_timestamp: int,
    log_append_time: bool,
    latest: dict[bytes, int] | None,
    drop_tombstones: bool,
    record_type: type[_R],
) -> tuple[list[_R], bool]: ...
