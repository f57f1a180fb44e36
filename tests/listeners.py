"""The listening sockets of a process tree (the loopback-only checks of Ray and Serve)."""

from __future__ import annotations

import socket

import psutil

from causalrec.platform.runtime import is_loopback


def listeners(root_pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP/UDP socket ``root_pid``'s tree listens on.

    Ray's workers and agents are children of its raylet, itself a child of the driver, so the
    tree of the process that started Ray holds all of them. Processes that exit while being
    listed are skipped.
    """
    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in tree:
        try:
            name = process.name()
            sockets = process.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN or (
                not sock.raddr and sock.type == socket.SOCK_DGRAM
            ):
                found.append((name, sock.laddr.ip, sock.laddr.port))
    return found


def exposed(found: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The listeners of ``found`` bound to a non-loopback address (``0.0.0.0``, ``::``, ...)."""
    return [entry for entry in found if not is_loopback(entry[1])]
