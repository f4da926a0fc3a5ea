"""Upload size limits are enforced while the body arrives, not after it has all been read."""

from __future__ import annotations

import socket
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.integration

BOUNDARY = "dlaas-test-boundary"


def _send_partly(api_url: str, token: str, first_part: str, field: str, declared: int) -> bytes:
    """Declares a `declared`-byte body, sends only `first_part` (the start of the `field` part)
    plus a little, and returns whatever the server answers within 10 s."""
    url = urlparse(api_url)
    head = (
        f"POST /v3/models HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="x"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(head.encode() + part.encode() + first_part.encode())
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
    return answer


@pytest.mark.parametrize(
    ("field", "sent", "declared"),
    [
        # A manifest past its 64 KiB limit inside a body the request cap allows: only the
        # per-field limit, applied while reading, can stop it before the 90 MB arrive.
        ("manifest", 64 * 1024 + 256 * 1024, 90 * 1024 * 1024),
        # A body declared larger than the cap (zip + manifest limits): refused unread.
        ("model_definition", 1024, 150 * 1024 * 1024),
    ],
)
def test_an_oversized_upload_is_refused_before_the_rest_arrives(
    stack, api_url, field, sent, declared
):
    answer = _send_partly(api_url, stack.tokens["alice"], "m" * sent, field, declared)
    status, _, rest = answer.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 413"), answer[:300]
