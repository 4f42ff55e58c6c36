"""An invocation's id: what log lines correlate on, so it must look and behave like a UUID."""

from __future__ import annotations

import uuid

from handler.invocation import Invocation, random_id


def test_an_invocation_id_is_a_random_version_4_uuid_in_its_usual_text_form():
    for _ in range(200):
        text = Invocation().id
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12


def test_invocation_ids_do_not_repeat():
    assert len({random_id() for _ in range(1000)}) == 1000
