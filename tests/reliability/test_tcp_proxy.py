"""The RESP framing the cutting proxy relies on."""

from __future__ import annotations

from kelpie.testing.tcp_proxy import command_end, reply_end


def test_command_end_finds_whole_commands_only() -> None:
    block = b"*1\r\n$5\r\nMULTI\r\n*3\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nEXEC\r\n"
    assert command_end(block) == (15, b"MULTI")
    end, name = command_end(block, 15) or (0, b"")
    assert name == b"HSET"
    assert command_end(block, end) == (len(block), b"EXEC")
    for cut in range(1, len(block) - 1):  # a partial command is never taken for a whole one
        parsed = command_end(block[:cut], 0)
        assert parsed is None or parsed[0] <= cut
    assert command_end(b"PING\r\n") == (6, b"PING")


def test_reply_end_handles_nested_exec_replies() -> None:
    exec_reply = b"*3\r\n:1\r\n$-1\r\n*2\r\n+OK\r\n$3\r\nabc\r\n"
    assert reply_end(exec_reply) == len(exec_reply)
    for cut in range(len(exec_reply)):
        assert reply_end(exec_reply[:cut]) is None
    assert reply_end(b"*-1\r\n") == 5  # a nil EXEC (conflict)
    assert reply_end(b"-EXECABORT discarded\r\n+OK\r\n") == 22
