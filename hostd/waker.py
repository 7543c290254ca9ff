"""Waking a thread that sleeps in a ZeroMQ poll, from any other thread."""
from __future__ import annotations

import itertools
import threading

import zmq

__all__ = ["Waker"]

_SERIAL = itertools.count()


class Waker:
    """An inproc PULL socket its owner polls, and :meth:`wake` for every other thread.

    Each calling thread gets its own PUSH socket (ZeroMQ sockets are not
    thread-safe); wake-ups beyond a few queued ones are dropped, since one is
    enough to make the owner look.

    :param context: the ``zmq.Context`` shared by the owner and the callers.
    :param name: part of the inproc endpoint's name, for debugging.
    """

    def __init__(self, context: zmq.Context, name: str):
        self._context = context
        self._endpoint = f"inproc://insights-wake-{name}-{next(_SERIAL)}"
        self._local = threading.local()
        self._pushers: list = []
        self._pushers_lock = threading.Lock()
        self._closed = False
        #: the owner's socket: register it in the owner's poller, then :meth:`drain` it.
        self.socket = context.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(self._endpoint)

    def wake(self) -> None:
        """Make the owner's poll return (callable from any thread; a no-op once closed)."""
        with self._pushers_lock:
            if self._closed:
                return
            sock = getattr(self._local, "sock", None)
            if sock is None:
                sock = self._local.sock = self._context.socket(zmq.PUSH)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.SNDHWM, 10)
                sock.connect(self._endpoint)
                self._pushers.append(sock)
            try:  # under the lock: the owner cannot close the socket meanwhile
                sock.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # wake-ups are queued already

    def drain(self) -> None:
        """Take every queued wake-up (the owner, after its poll returned)."""
        while self.socket.poll(0):
            self.socket.recv()

    def close(self) -> None:
        """Close every socket (once no thread uses them any more)."""
        with self._pushers_lock:
            self._closed = True
            for sock in self._pushers:
                sock.close(0)
            self._pushers.clear()
        self.socket.close(0)
