"""Turn-taking judgements that do not depend on state: what counts as words."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def is_backchannel(text: str, backchannels: tuple[str, ...]) -> bool:
    """True when everything said is acknowledgement ("uh-huh", "okay, right").

    Each backchannel phrase is matched as whole words, repeated or combined,
    so "okay okay" is a backchannel and "okay book it" is not.
    """
    words = normalize(text)
    if not words:
        return False
    phrases = sorted((normalize(b) for b in backchannels), key=len, reverse=True)
    rest = words
    while rest:
        for phrase in phrases:
            if phrase and (rest == phrase or rest.startswith(phrase + " ")):
                rest = rest[len(phrase) :].lstrip()
                break
        else:
            return False
    return True
