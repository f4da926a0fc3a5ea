"""The CLI's HTTP client over a real connection: a kept-alive connection that the server closes
as the next request comes (gunicorn's keep-alive is 2 s; a poll every 2 s met it) costs a GET
nothing, and a POST is never sent twice."""

from __future__ import annotations

import socket
import threading

import pytest

from api.client import ClientError, DlaasClient


class ClosingServer(threading.Thread):
    """On 127.0.0.1, HTTP/1.1 with keep-alive: answers the first request of each connection,
    then takes the next one on it and closes without an answer, as a server whose keep-alive
    ran out just as the request came ("Remote end closed connection without response")."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answered: list[str] = []
        self.dropped: list[str] = []

    def run(self):
        try:
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        except OSError:
            pass  # closed at the end of the test

    def _serve(self, conn):
        with conn:
            conn.settimeout(5)
            for answer in (True, False):
                method = _request_method(conn)
                if method is None:
                    return
                if not answer:
                    self.dropped.append(method)
                    return
                self.answered.append(method)
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )


def _request_method(conn) -> str | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data.split(b" ", 1)[0].decode()


@pytest.fixture
def server():
    made = ClosingServer()
    made.start()
    yield made
    made.sock.close()


def test_a_get_on_a_connection_the_server_closed_is_sent_again(server):
    client = DlaasClient(f"http://127.0.0.1:{server.port}", "token", timeout=5)
    for _ in range(3):
        assert client._call("GET", "/v3/models/training-a") == {"ok": True}
    assert server.answered == ["GET"] * 3 and server.dropped == ["GET"] * 2


def test_a_post_is_never_sent_twice(server):
    client = DlaasClient(f"http://127.0.0.1:{server.port}", "token", timeout=5)
    assert client._call("GET", "/v3/models") == {"ok": True}
    with pytest.raises(ClientError, match="cannot reach the dlaas service"):
        client._call("POST", "/v3/models/training-a/store")
    assert server.answered == ["GET"] and server.dropped == ["POST"]
