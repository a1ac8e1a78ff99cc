"""Read deadlines: a socket past its deadline stops giving data, one within it does not."""

import socket
import time

from spam_filter.serving.read_deadlines import ReadDeadlines


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """The server's and the client's end of one connection on 127.0.0.1, reads bounded to 5 s."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.settimeout(5)
    return server, client


def test_only_a_socket_past_its_deadline_is_cut_off() -> None:
    deadlines = ReadDeadlines(check_seconds=3600)  # the test takes the watchdog's steps itself
    late_server, late_client = _tcp_pair()
    timely_server, timely_client = _tcp_pair()
    with late_server, late_client, timely_server, timely_client:
        with (
            deadlines.bounded(late_server, 0.0) as late,
            deadlines.bounded(timely_server, 60.0) as timely,
        ):
            time.sleep(0.01)
            deadlines.cut_off_expired()
            assert late.expired and not timely.expired
            # The read ends at once, though the client neither sent nor closed.
            assert late_server.recv(10) == b""
            timely_client.sendall(b"more")
            assert timely_server.recv(10) == b"more"


def test_a_block_that_ended_leaves_its_socket_alone() -> None:
    deadlines = ReadDeadlines(check_seconds=3600)
    server, client = _tcp_pair()
    with server, client:
        with deadlines.bounded(server, 0.0) as deadline:
            pass
        deadlines.cut_off_expired()
        assert not deadline.expired
        client.sendall(b"more")
        assert server.recv(10) == b"more"


def test_without_a_socket_nothing_is_watched() -> None:
    deadlines = ReadDeadlines(check_seconds=3600)
    with deadlines.bounded(None, 0.0) as deadline:
        deadlines.cut_off_expired()
        assert not deadline.expired
