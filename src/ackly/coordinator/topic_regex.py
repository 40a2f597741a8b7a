"""Topic regular expressions of consumer groups (KIP-848's SubscribedTopicRegex).

Kafka resolves them on the broker with RE2 (RE2/J) and a topic matches when the whole name
matches (`Matcher.matches`). ackly uses Python's `re` with `fullmatch`, which agrees with RE2
on the usual patterns (literals, `.`, classes, `*`, `+`, `?`, `{m,n}`, alternation, groups,
anchors, `\\d \\w \\s`). Where they differ:

- Python has backreferences and lookaround, RE2 has not: such patterns are refused here as
  RE2 refuses them (INVALID_REGULAR_EXPRESSION), so a pattern accepted by ackly means the same
  in Kafka;
- RE2's POSIX classes (`[[:alpha:]]`) and Unicode classes (`\\pL`, `\\p{Greek}`) are not Python
  syntax: refused as well, rather than read differently;
- RE2 guarantees linear time; Python's backtracking does not, so a pathological pattern costs
  more here (topic names are short, at most 249 characters).

Internal topics (`__consumer_offsets`, `__transaction_state`) never match, as in Kafka.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

# Python syntax RE2 lacks (or reads differently): lookaround, backreferences, POSIX and
# Unicode classes, possessive and atomic constructs, conditionals.
_NOT_RE2 = re.compile(r"\(\?(<?[=!]|>|\()|\\[1-9]|\\[pPk]|\[\[:|\(\?P=|[*+?}]\+")


class RegexError(ValueError):
    """The pattern is not a valid (RE2-compatible) regular expression."""


@functools.lru_cache(maxsize=256)
def compile_topic_regex(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise RegexError("the regular expression is empty")
    if _NOT_RE2.search(pattern):
        raise RegexError(f"{pattern!r} uses syntax that RE2 does not have "
                         "(backreferences, lookaround, POSIX or Unicode classes)")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise RegexError(f"{pattern!r} is not a valid regular expression: {exc}") from None


def matching_topics(pattern: str, names: Iterable[str]) -> set[str]:
    compiled = compile_topic_regex(pattern)
    return {n for n in names if not n.startswith("__") and compiled.fullmatch(n)}
