"""The principal of a TLS client: its certificate's subject, as Kafka names it.

Kafka's DefaultKafkaPrincipalBuilder makes `User:<name>` from the peer certificate's subject
distinguished name in RFC 2253 form (Java's `X500Principal.getName()`), passed through
`ssl.principal.mapping.rules` (Kafka's SslPrincipalMapper, KIP-371):
- rules are separated by commas; each is `DEFAULT` (the DN as it is) or
  `RULE:pattern/replacement/` with an optional `L` or `U` suffix (lower or upper case);
- the first rule whose pattern matches the whole DN gives the name, the pattern's matches
  replaced by the replacement (`$1` refers to a group);
- no rule matching is an error: the connection is refused.

The subject is read from the certificate's DER bytes (a minimal reader of the X.509 Name), so
the DN is exact: RDNs last-first, the keywords Java knows (CN, C, L, ST, O, OU, STREET, DC,
UID) by name and any other attribute as its OID with the `#` hex of its DER value, as Java
writes them, with RFC 2253 escaping.

Pure functions of bytes and strings: the shell hands in what the TLS layer gives it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_RULES = "DEFAULT"
ANONYMOUS = "User:ANONYMOUS"

# --- the rules -----------------------------------------------------------------------------

_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?)"
_SPLITTER = re.compile(r"\s*(" + _RULE + r".*?|.*?)\s*(?:,\s*|$)")
_PARSER = re.compile(_RULE)


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""  # in Python's re.sub syntax
    case: str = ""  # "L", "U" or ""

    def apply(self, dn: str) -> str | None:
        if self.pattern is None:
            return dn
        if self.pattern.fullmatch(dn) is None:
            return None
        # As Java's String.replaceAll: every match of the pattern is replaced.
        name = self.pattern.sub(self.replacement, dn)
        if self.case == "L":
            return name.lower()
        if self.case == "U":
            return name.upper()
        return name


def _python_replacement(java: str) -> str:
    """A Java replacement string (`$1` a group, `\\x` a literal x) in re.sub syntax."""
    out: list[str] = []
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "\\" and i + 1 < len(java):
            literal = java[i + 1]
            out.append("\\\\" if literal == "\\" else literal)
            i += 2
        elif ch == "$":
            match = re.match(r"\$(\d+|\{\w+\})", java[i:])
            if match is None:
                raise ValueError(f"bad group reference in replacement {java!r}")
            group = match.group(1).strip("{}")
            out.append(f"\\g<{group}>")
            i += len(match.group(0))
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_rules(raw: str) -> tuple[Rule, ...]:
    """The rules of an `ssl.principal.mapping.rules` value; ValueError says which is wrong."""
    rules: list[Rule] = []
    text = raw.strip()
    pos = 0
    while pos <= len(text):
        match = _SPLITTER.match(text, pos)
        if match is None:  # pragma: no cover - the pattern matches the empty string
            break
        piece = match.group(1)
        if piece:
            parsed = _PARSER.fullmatch(piece)
            if parsed is None:
                raise ValueError(f"invalid rule {piece!r}: expected DEFAULT or RULE:pattern/replacement/[LU]")
            if parsed.group(1):
                rules.append(Rule(None))
            else:
                try:
                    pattern = re.compile(parsed.group(2))
                except re.error as exc:
                    raise ValueError(f"invalid rule {piece!r}: bad pattern: {exc}") from None
                rules.append(Rule(pattern, _python_replacement(parsed.group(3)), parsed.group(4)))
        if match.end() == pos:
            break
        pos = match.end()
    return tuple(rules)


def map_principal(rules: tuple[Rule, ...], dn: str) -> str:
    """The principal name for a subject DN; ValueError if no rule applies (Kafka refuses the
    connection then)."""
    for rule in rules:
        name = rule.apply(dn)
        if name is not None:
            return name
    raise ValueError(f"no ssl.principal.mapping.rules rule applies to {dn!r}")


# --- the subject of a DER certificate --------------------------------------------------------

_KEYWORDS = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O",
    "2.5.4.11": "OU", "2.5.4.9": "STREET", "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06
_STRINGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
            0x1C: "utf-32-be", 0x1A: "ascii", 0x12: "ascii"}


class CertificateError(ValueError):
    pass


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the value) of the DER element at `pos`."""
    if pos + 2 > len(data):
        raise CertificateError("truncated DER")
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise CertificateError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise CertificateError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in data[start:end]."""
    out = []
    pos = start
    while pos < end:
        tag, value_start, value_end = _tlv(data, pos)
        out.append((tag, pos, value_start, value_end))
        pos = value_end
    return out


def _oid(value: bytes) -> str:
    if not value:
        raise CertificateError("empty OID")
    parts = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    number = 0
    for byte in value[1:]:
        number = (number << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(number)
            number = 0
    return ".".join(str(p) for p in parts)


def _escape(value: str) -> str:
    """RFC 2253 section 2.4 escaping, as Java writes it."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def subject_dn(der: bytes) -> str:
    """The subject of a DER certificate as an RFC 2253 string (Java's X500Principal form)."""
    tag, start, _ = _tlv(der, 0)
    if tag != _SEQUENCE:
        raise CertificateError("not a certificate")
    tag, tbs_start, tbs_end = _tlv(der, start)
    if tag != _SEQUENCE:
        raise CertificateError("not a certificate")
    fields = _children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject
    if len(fields) < 5 or fields[4][0] != _SEQUENCE:
        raise CertificateError("no subject in the certificate")
    _, _, name_start, name_end = fields[4]
    rdns = []
    for rdn_tag, _, rdn_start, rdn_end in _children(der, name_start, name_end):
        if rdn_tag != _SET:
            raise CertificateError("bad RDN")
        avas = []
        for ava_tag, _, ava_start, ava_end in _children(der, rdn_start, rdn_end):
            if ava_tag != _SEQUENCE:
                raise CertificateError("bad attribute")
            parts = _children(der, ava_start, ava_end)
            if len(parts) != 2 or parts[0][0] != _OID:
                raise CertificateError("bad attribute")
            oid = _oid(der[parts[0][2]:parts[0][3]])
            value_tag, element_start, value_start, value_end = parts[1]
            keyword = _KEYWORDS.get(oid)
            encoding = _STRINGS.get(value_tag)
            if keyword is not None and encoding is not None:
                try:
                    text = der[value_start:value_end].decode(encoding)
                except UnicodeDecodeError:
                    raise CertificateError(f"bad string in {keyword}") from None
                avas.append(f"{keyword}={_escape(text)}")
            else:
                avas.append(f"{keyword or oid}=#{der[element_start:value_end].hex()}")
        rdns.append("+".join(avas))
    return ",".join(reversed(rdns))


def principal_of(der: bytes | None, rules: tuple[Rule, ...]) -> str:
    """`User:<name>` for a client certificate (DER); ANONYMOUS without one."""
    if der is None:
        return ANONYMOUS
    return "User:" + map_principal(rules, subject_dn(der))
