"""fact: one named fact about a RST, and the table a RST's facts are collected in.

A *fact* is a name plus a sentence a person reads ("the backend answered the
SYN with RST,ACK"). The fact modules (:mod:`~pcapreset.interpret.evidence`,
:mod:`~pcapreset.interpret.forgery`, :mod:`~pcapreset.interpret.conversation`)
add the facts that hold to a :class:`FactTable`; the rules read it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    text: str


class FactSink(Protocol):
    """Where facts go (a :class:`FactTable`)."""

    def add(self, name: str, text: str) -> None: ...

    def __contains__(self, name: object) -> bool: ...


#: Fact objects by (name, text), shared between resets (most texts are
#: constant; a report keeps every reset's facts); at most _SHARED_FACTS_MAX
_shared_facts: dict[tuple[str, str], Fact] = {}
_SHARED_FACTS_MAX = 4096


class FactTable(dict):
    """The facts that hold for one RST event, by name."""

    def add(self, name: str, text: str) -> None:
        f = _shared_facts.get((name, text))
        if f is None:
            f = Fact(name, text)
            if len(_shared_facts) < _SHARED_FACTS_MAX:
                _shared_facts[(name, text)] = f
        self[name] = f
