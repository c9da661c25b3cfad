"""jsonreport: the report written as ``--format json`` and ``--format jsonl``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

from . import jsonout
from .model import Report


class _ResetsJSON(list):
    """The resets' JSON for :func:`write_json`: each dict made as the encoder
    reaches it (:mod:`pcapreset.jsonout`, like json's encoder that runs with
    an indent, walks a list with ``not lst`` and ``for value in lst``)."""

    def __init__(self, rep: Report) -> None:
        super().__init__()
        self.rep = rep

    def __len__(self) -> int:
        return len(self.rep.resets)

    def __iter__(self) -> Iterator[dict]:  # type: ignore[override]
        reset_json = self.rep.reset_json
        return (reset_json(r) for r in self.rep.resets)


def write_json(rep: Report, out: TextIO) -> None:
    """``json.dump(rep.to_json(), out, indent=2)``'s bytes (through
    :func:`pcapreset.jsonout.dump`), each reset's dict made as it is written:
    a long capture's reset dicts, all built at once, were its largest
    allocation at the end (~1 KB per reset)."""
    top = rep.to_json(resets=False)
    top["resets"] = _ResetsJSON(rep)
    jsonout.dump(top, out)


def jsonl_reset(r: dict) -> dict:
    """A reset's ``--format jsonl`` line: ``{"type": "reset"}`` and the reset's
    object as the report gives it."""
    return {"type": "reset", **r}


def jsonl_report(j: dict) -> dict:
    """The last ``--format jsonl`` line: ``{"type": "report"}`` and the report."""
    return {"type": "report", **j}


def write_jsonl(rep: Report, out: TextIO) -> None:
    """``--format jsonl`` offline: one line per reset (``json.dumps`` of
    :func:`jsonl_reset`), then the whole report on one line: the bytes of
    ``json.dumps(jsonl_report(rep.to_json()))``, the resets' dicts made as
    they are written (not all at once, and not one string for the whole
    report)."""
    dumps = jsonout.dumps  # (no indent: the C encoder; strict JSON)
    reset_json = rep.reset_json
    for r in rep.resets:
        out.write('{"type": "reset", ' + dumps(reset_json(r))[1:] + "\n")
    out.write('{"type": "report"')
    for k, v in rep.to_json(resets=False).items():
        out.write(", " + dumps(k) + ": ")
        if k != "resets":
            out.write(dumps(v))
            continue
        out.write("[")
        for i, r in enumerate(rep.resets):
            out.write((", " if i else "") + dumps(reset_json(r)))
        out.write("]")
    out.write("}\n")
