"""imops serve stops cleanly under keep-alive load: SIGTERM in the middle of
load from many keep-alive connections (as `docker stop` under wrk does), and
every request that got a connection gets a complete HTTP answer: no reset, no
truncated response. Each connection's answer after SIGTERM says
"Connection: close", its client's reconnect is refused (the listener is shut:
that is the one legitimate failure, before a request is sent), a request
already begun on an open connection is still answered, an idle keep-alive
connection is closed cleanly, and the process exits 0.

With keep-alive the count of requests in flight touches 0 between one answer
and the next request on a connection; a drain that waited for that count
alone closed connections whose next request had arrived but was not yet read
(resets under wrk). The request begun before SIGTERM here (its headers still
coming) is that case made certain: the load's own failures depend on timing."""
import errno
import re
import signal
import socket
import threading
import time

from serve_helpers import server, ws  # noqa: F401  (fixtures)

CLIENTS = 32
ANSWERS_BEFORE_SIGTERM = 3  # per client: every connection is open and in keep-alive use


def read_response(sock, got):
    """One HTTP response from sock: (head, body). got (a list) collects the bytes read so
    far, for the failure report. EOFError when the server closes before it is whole."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before the end of the headers" if buf else "closed before any answer")
        buf += chunk
        got.append(len(chunk))
    head, body = buf.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert m, head
    while len(body) < int(m.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {len(body)} of {int(m.group(1))} body bytes")
        body += chunk
        got.append(len(chunk))
    return head, body


def says_close(head):
    return re.search(rb"(?i)\r\nconnection: *close\r\n", head + b"\r\n") is not None


class Client(threading.Thread):
    """POSTs the image again and again on one keep-alive connection; reconnects when an
    answer says Connection: close; ends when a connect is refused or anything fails."""

    def __init__(self, port, request):
        super().__init__(daemon=True)
        self.port, self.request = port, request
        self.answers = 0
        self.close_answers = 0
        self.refused = False
        self.failure = None  # (what, detail)

    def run(self):
        for _ in range(1000):  # connections (bounded)
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            except ConnectionRefusedError:
                self.refused = True
                return
            except OSError as e:
                self.failure = ("connect", errno.errorcode.get(e.errno, repr(e)))
                return
            with sock:
                for _ in range(100000):  # requests on this connection (bounded)
                    got = []
                    try:
                        sock.sendall(self.request)
                        head, body = read_response(sock, got)
                    except (OSError, EOFError) as e:
                        kind = errno.errorcode.get(e.errno, repr(e)) if isinstance(e, OSError) else str(e)
                        self.failure = (f"request {self.answers + 1} ({sum(got)} answer bytes read)", kind)
                        return
                    if not head.startswith(b"HTTP/1.1 200") or b'"predictions"' not in body:
                        self.failure = ("answer", head[:200])
                        return
                    self.answers += 1
                    if says_close(head):
                        self.close_answers += 1
                        break
        self.failure = ("bounds", "too many requests")


def test_sigterm_under_keepalive_load(ws, server):
    s = server()
    img = ws["images"][0].read_bytes()
    post = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: %d\r\n\r\n" % len(img)) + img
    # an idle keep-alive connection, answered once
    idle = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    idle.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = read_response(idle, [])
    assert head.startswith(b"HTTP/1.1 200") and not says_close(head)
    # a request begun on an open connection: the request line and part of the headers
    begun = socket.create_connection(("127.0.0.1", s.port), timeout=30)
    begun.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")

    clients = [Client(s.port, post) for _ in range(CLIENTS)]
    for c in clients:
        c.start()
    for _ in range(6000):  # until every client is in keep-alive use (bounded: 60 s)
        if all(c.answers >= ANSWERS_BEFORE_SIGTERM or not c.is_alive() for c in clients):
            break
        time.sleep(0.01)
    assert all(c.answers >= ANSWERS_BEFORE_SIGTERM for c in clients), [(c.answers, c.failure) for c in clients]

    s.p.send_signal(signal.SIGTERM)
    for c in clients:
        c.join(timeout=60)
    assert not any(c.is_alive() for c in clients)
    failures = [c.failure for c in clients if c.failure]
    assert not failures, f"{len(failures)} of {CLIENTS} connections failed: {failures}"
    # each connection was answered after SIGTERM with Connection: close; the reconnect was refused
    assert all(c.close_answers == 1 and c.refused for c in clients), \
        [(c.answers, c.close_answers, c.refused) for c in clients]

    # the server keeps the begun request's connection: it closes the idle one cleanly
    assert idle.recv(4096) == b""
    idle.close()
    assert s.p.poll() is None, s.p.stderr.read()[-3000:]
    try:
        begun.sendall(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(img) + img)
        head, body = read_response(begun, [])
    except (OSError, EOFError) as e:
        raise AssertionError(f"the request begun before SIGTERM was cut off: {e!r}") from None
    assert head.startswith(b"HTTP/1.1 200") and says_close(head), head
    assert b'"predictions"' in body
    assert begun.recv(4096) == b""
    begun.close()
    assert s.p.wait(timeout=60) == 0, s.p.stderr.read()[-3000:]
