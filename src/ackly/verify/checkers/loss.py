"""Checkers of loss: acknowledged sends that the log no longer gives back (docs/guarantees.md rules 6,
12, 13). The two findings split those sends in two, so none is counted twice:
- lost-write: no poll ever returned it, though polls reached its offset or beyond: it is gone;
- unseen: lost or late. Where the runner marked final reads (extra "final": fresh readers from the
  log start after healing), an acknowledged send they did not return, even one some earlier poll
  returned (it was there, then vanished); elsewhere, a send no poll ever returned and that no
  read reached.
Sends acknowledged after the last marked final read began are held to the second rule only. An
indeterminate send may or may not appear and a failed one must not, so neither counts here (a
failed send that is read is an aborted-read).
"""

from __future__ import annotations

from ackly.verify.checkers.model import Model, Write
from ackly.verify.findings import Example, Finding, example, finding


def _is_lost(model: Model, write: Write) -> bool:
    reached = model.read_max.get(write.key)
    return (
        write.offset is not None
        and reached is not None
        and write.offset <= reached
        and not model.was_read(write.key, write.value)
    )


def _acknowledged(model: Model) -> list[Write]:
    return sorted((w for w in model.writes.values() if w.outcome == "ok"), key=lambda w: w.invoke_index)


def lost_write(model: Model) -> Finding:
    found: list[Example] = []
    for write in _acknowledged(model):
        if _is_lost(model, write):
            assert write.complete_index is not None
            reached = model.read_max[write.key]
            note = "polls read up to the second offset"
            found.append(example(write.key, [write.offset, reached], [write.value], [write.complete_index], note))
    return finding("lost-write", found)


def unseen(model: Model) -> Finding:
    found: list[Example] = []
    cutoff = model.marked_final_poll_index
    for write in _acknowledged(model):
        if _is_lost(model, write):
            continue
        assert write.complete_index is not None
        read_before = model.was_read(write.key, write.value)
        held_to_final = (
            write.key in model.marked_final_keys and cutoff is not None and write.complete_index < cutoff
        )
        if held_to_final and write.value not in model.marked_final_values.get(write.key, ()):
            note = "read by an earlier poll, absent from the final reads" if read_before else "not in the final reads"
            found.append(example(write.key, [write.offset], [write.value], [write.complete_index], note))
        elif not held_to_final and not read_before:
            found.append(example(write.key, [write.offset], [write.value], [write.complete_index]))
    return finding("unseen", found)
