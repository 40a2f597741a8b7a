"""Where a broker's static configuration comes from: a properties file, the environment and
the command line, merged in that order of precedence (command line > environment > file >
defaults), each value remembering its origin so a refusal can say where the bad value was.

The file is Kafka's `server.properties`, in the format of `java.util.Properties.load`:
`key=value`, `key: value` or `key value`; `#` and `!` start a comment line; a line ending in an
odd number of backslashes continues on the next (whose leading white space is dropped); the
escapes `\\t \\n \\r \\f \\uXXXX` and `\\<any>` (that character itself). The file is read as
UTF-8 (Java's `load(InputStream)` reads ISO-8859-1; ASCII files and `\\uXXXX` escapes mean the
same in both).

An environment variable `ACKLY_<NAME>` sets a key the way Confluent's Kafka images map
`KAFKA_<NAME>`: drop the prefix, lower-case, then `___` -> `-`, `__` -> `_`, `_` -> `.`
(`ACKLY_LOG_RETENTION_MS` is `log.retention.ms`; `ACKLY_LISTENER_NAME_INTERNAL__TLS_SSL_CLIENT_AUTH`
is `listener.name.internal_tls.ssl.client.auth`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ackly.config import BrokerConfig
from ackly.errors import ConfigError

ENV_PREFIX = "ACKLY_"
# Variables with the prefix that are not broker configs (read by other parts of ackly).
NOT_CONFIG_ENV: frozenset[str] = frozenset({"ACKLY_ETCD", "ACKLY_MEMBER_DEBUG"})

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_KEY_END = frozenset("=: \t\f")
_WHITE = " \t\f"


@dataclass(frozen=True)
class Entry:
    """One key and value of a properties file, with the line its logical line starts on."""

    key: str
    value: str
    line: int


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """(first line number, logical line with continuations joined), comments and blanks dropped."""
    lines = re.split(r"\r\n|\r|\n", text)
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(_WHITE)
        i += 1
        if not line or line[0] in "#!":
            continue  # a comment line never continues, as in Java
        parts: list[str] = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0 or i >= len(lines):
                if trailing % 2 == 1:
                    line = line[:-1]  # a last line's lone backslash: dropped, as Java does
                parts.append(line)
                break
            parts.append(line[:-1])
            line = lines[i].lstrip(_WHITE)
            i += 1
        yield start + 1, "".join(parts)


def _unescape(raw: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\" or i + 1 >= len(raw):
            out.append(ch)
            i += 1
            continue
        nxt = raw[i + 1]
        if nxt == "u":
            digits = raw[i + 2:i + 6]
            if len(digits) != 4 or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise ConfigError(f"line {line}", f"malformed \\uxxxx escape {raw[i:i + 6]!r}")
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    # \uD83D\uDE00 (how Java writes a character beyond the BMP) is one character.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


def _split_key(logical: str) -> tuple[str, str]:
    """The raw (still escaped) key and value of a logical line."""
    i = 0
    while i < len(logical) and logical[i] not in _KEY_END:
        i += 2 if logical[i] == "\\" else 1
    key = logical[:i]
    rest = logical[i:].lstrip(_WHITE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITE)
    return key, rest


def parse_properties_text(text: str) -> list[Entry]:
    """The entries of a properties file, in file order (a later duplicate wins when merged)."""
    entries = []
    for line, logical in _logical_lines(text):
        raw_key, raw_value = _split_key(logical)
        try:
            entries.append(Entry(_unescape(raw_key, line), _unescape(raw_value, line), line))
        except UnicodeDecodeError:
            raise ConfigError(f"line {line}", "an unpaired \\uD800-\\uDFFF escape") from None
    return entries


def _escape(text: str, *, is_key: bool) -> str:
    out: list[str] = []
    for index, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\t\n\r\f":
            out.append("\\" + {"\t": "t", "\n": "n", "\r": "r", "\f": "f"}[ch])
        elif ch in "=:#!" or (ch == " " and (is_key or index == 0)):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) < 0xE000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def write_properties_text(props: Mapping[str, str]) -> str:
    """A properties file that parse_properties_text reads back as `props`."""
    return "".join(f"{_escape(k, is_key=True)}={_escape(v, is_key=False)}\n" for k, v in props.items())


def env_var_to_key(name: str) -> str | None:
    """The config key an `ACKLY_...` variable sets (None: not a config variable)."""
    if not name.startswith(ENV_PREFIX) or name in NOT_CONFIG_ENV:
        return None
    rest = name[len(ENV_PREFIX):]
    if not rest or re.search(r"_{4,}", rest) or rest.startswith("_") or rest.endswith("_"):
        raise ConfigError(name, "not a config name: use _ for '.', __ for '_', ___ for '-'")
    return re.sub(r"_{1,3}", lambda m: {1: ".", 2: "_", 3: "-"}[len(m.group(0))], rest.lower())


def key_to_env_var(key: str) -> str:
    """The `ACKLY_...` variable that sets `key` (the inverse of env_var_to_key)."""
    mapped = re.sub(r"[._-]", lambda m: {".": "_", "_": "__", "-": "___"}[m.group(0)], key)
    return ENV_PREFIX + mapped.upper()


@dataclass
class SourcedProperties:
    """Broker properties after precedence, and where each one came from."""

    values: dict[str, str] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: str, origin: str) -> None:
        self.values[key] = value
        self.origins[key] = origin

    def refuse(self, exc: ConfigError) -> ConfigError:
        """`exc` again, naming the value and where it came from."""
        origin = self.origins.get(exc.key)
        if origin is None:
            return exc
        return ConfigError(exc.key, f"{exc.reason} (value {self.values[exc.key]!r}, from {origin})")

    def broker_config(self) -> BrokerConfig:
        """The validated configuration; a refusal names key, value and origin."""
        try:
            return BrokerConfig.from_properties(self.values)
        except ConfigError as exc:
            raise self.refuse(exc) from None


def gather_properties(*, file_path: str | None, env: Mapping[str, str],
                      command_line: Iterable[tuple[str, str]]) -> SourcedProperties:
    """Merge the three sources (command line > environment > file); raises ConfigError for a
    file that cannot be read or parsed, or a malformed variable name."""
    props = SourcedProperties()
    if file_path is not None:
        try:
            with open(file_path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("--config-file", f"cannot read {file_path}: {exc}") from None
        try:
            entries = parse_properties_text(text)
        except ConfigError as exc:
            raise ConfigError("--config-file", f"{file_path} {exc.key}: {exc.reason}") from None
        for entry in entries:
            props.set(entry.key, entry.value, f"{file_path} line {entry.line}")
    for name in sorted(env):
        key = env_var_to_key(name)
        if key is not None:
            props.set(key, env[name], f"environment variable {name}")
    for key, value in command_line:
        props.set(key, value, "the command line")
    return props
