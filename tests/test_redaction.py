"""Redaction of URLs in error messages: whatever a library quotes, no query or password shows."""

from __future__ import annotations

import pytest

from handler.redaction import redact_url_in

SINK = "https://hook:pw-SECRET@sink.example:8443/in/box?sig=a%2Bb%3D&code=c-SECRET#frag-SECRET"


@pytest.mark.parametrize(
    "message",
    [
        f"Invalid URL '{SINK}': No host supplied",
        "Max retries exceeded with url: /in/box?sig=a%2Bb%3D&code=c-SECRET (Caused by ...)",
        "Max retries exceeded with url: /in/box?sig=a+b=&code=c-SECRET (Caused by ...)",
        "url: /in/box?sig=a%2Bb%3D&code=c%2DSECRET",  # re-quoted differently
        "proxy said: https://hook:pw-SECRET@sink.example:8443/in/box refused",
        "fragment frag-SECRET and a password pw-SECRET on their own",
    ],
)
def test_no_query_password_or_fragment_of_the_url_survives_in_a_message(message):
    shown = redact_url_in(message, SINK)
    for secret in ("pw-SECRET", "c-SECRET", "c%2DSECRET", "a%2Bb", "a+b", "frag-SECRET", "sig="):
        assert secret not in shown


def test_the_redacted_message_still_says_where_the_call_went():
    shown = redact_url_in(f"Invalid URL '{SINK}': No host supplied", SINK)
    assert shown == "Invalid URL 'https://hook:***@sink.example:8443/in/box': No host supplied"
    shown = redact_url_in("Max retries exceeded with url: /in/box?sig=x&code=y (Caused)", SINK)
    assert shown == "Max retries exceeded with url: /in/box?*** (Caused)"


def test_a_url_without_secrets_leaves_the_message_as_it_is():
    message = "Read timed out. (read timeout=5.0) what?"
    assert redact_url_in(message, "http://127.0.0.1:9/sink") == message
