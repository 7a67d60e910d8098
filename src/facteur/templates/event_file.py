"""Write a run's event file from the base64 ``eventBody`` parameter.

The init container of every stage WorkflowTemplate runs ``python3 -m facteur.templates.event_file PATH``
with the parameter's value in the ``EVENT_BODY_BASE64`` environment variable (Argo puts it there; it holds
base64 only, so no ``{{…}}`` can reach Argo). The value is decoded and written as it is: no shell, no
template engine and no interpreter ever reads the text. It must decode to a JSON object, the event that
``facteur stage`` reads; anything else stops the pod before the stage starts, with a message that says why.

Kept to the standard library so that it starts fast and runs in any image that has Facteur installed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

ENV: Final = "EVENT_BODY_BASE64"
#: what a failure exits with (the stage itself never ran)
EXIT_INVALID: Final = 2
_USAGE: Final = "usage: python3 -m facteur.templates.event_file PATH (the event in $EVENT_BODY_BASE64)"


class EventBodyError(ValueError):
    """The parameter is not an event: empty, not base64, or not a JSON object once decoded."""


def decode(value: str) -> bytes:
    """The event's bytes from the parameter's base64 text (surrounding whitespace is ignored)."""
    text = value.strip()
    if not text:
        raise EventBodyError(f"the eventBody parameter is empty (${ENV} is unset or blank)")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EventBodyError(
            "the eventBody parameter is not base64: Facteur encodes the event, submit it the same way"
        ) from None
    try:
        document = json.loads(data)
    except ValueError:
        raise EventBodyError("the eventBody parameter does not decode to UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise EventBodyError(
            f"the eventBody parameter decodes to a JSON {type(document).__name__}, not an object"
        )
    return data


def write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only (the event carries the run's token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    env = os.environ if environ is None else environ
    if len(args) != 1 or args[0].startswith("-"):
        print(_USAGE, file=sys.stderr)
        return EXIT_INVALID
    path = Path(args[0])
    try:
        data = decode(env.get(ENV, ""))
        write(path, data)
    except EventBodyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"error: cannot write the event file {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    print(f"event file written: {path} ({len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
