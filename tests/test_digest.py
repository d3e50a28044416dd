"""HTTP Digest from a phone's challenge (pure): RFC 2617's own example, and hostile challenges."""

from __future__ import annotations

import pytest

from deskbot.senders.http import digest

RFC2617 = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_the_answer_to_rfc_2617s_example_is_rfc_2617s_response():
    header = digest.authorization(
        digest.parse(RFC2617),
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle Of Life",
        cnonce="0a4f113b",
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header
    assert "qop=auth, nc=00000001" in header


@pytest.mark.parametrize(
    ("challenge", "why"),
    [
        ('Basic realm="x"', "not Digest"),
        ('Digest nonce="n"', "no realm"),
        ('Digest realm="r\\"\r\nX-Evil: 1", nonce="n"', "characters a header cannot take"),
        ('Digest realm="r", nonce="n", algorithm=SHA-512-256', "algorithm"),
        ('Digest realm="r", nonce="n", qop="auth-int"', "qop"),
    ],
)
def test_a_challenge_deskbot_cannot_answer_is_refused_with_why(challenge, why):
    with pytest.raises(digest.ChallengeError, match=why):
        digest.authorization(digest.parse(challenge), "POST", "/push", "deskbot", "pw")


def test_a_huge_challenge_is_read_only_up_to_its_bound():
    params = digest.parse('Digest realm="r", nonce="n", ' + "x=1, " * 100_000)
    assert params["realm"] == "r" and len(params) <= digest.MAX_CHALLENGE
