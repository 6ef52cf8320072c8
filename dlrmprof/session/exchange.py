"""What the ranks of a table-parallel `gen-trace` exchange, behind one interface, two engines.

`tracegen.capture.capture_rank(exchange, ...)` needs these from its peers:

- `all_gather(obj)`: every rank's object, in rank order (the span statistics, the profiles);
- `gather(obj)`: the same on rank 0 only, None on the others;
- `send(peer, obj)`, `recv(peer)`, `poll(peer)`, `flush()`: objects from one rank to another,
  in order (each synthesized table to rank 0 as it is made): `send` does not wait for the
  peer to receive, `poll` says whether `recv` would return at once, `flush` waits until
  this rank's sends are through;
- `exchange_rows(own, rows)`: a row block from every rank to every other (the span parse's
  raw values: rank o's span of this rank's tables), in rank order; `row_blocks(shapes)`
  allocates the blocks a rank fills for its peers (the engine may share them).

Two engines implement it:

- `TorchExchange`: torch.distributed (gloo).  The torchrun form (`torchrun ... -m dlrmprof
  gen-trace`), whose ranks may be on several hosts, uses it.
- `PipeExchange`: ranks on this host started by `run_local`, joined by a socket pair between
  every two of them; rank 0 is the calling process.  Row blocks are shared memory (a memfd
  whose descriptor goes to the peer over the socket) where the OS has it: the peer maps the
  block its owner parsed into instead of receiving a copy.  `gen-trace --nproc N` uses it:
  it needs no torch import (the largest part of starting the ranks, and serial: they could
  not start before it), no elastic agent or rendezvous, and no hand-back of rank 0's tables
  to a launching process.
  A rank that fails sends its error to every peer before it exits; a rank that dies closes
  its sockets; either way the others learn it at their next receive, and `run_local` stops
  them all and raises one line (`RankFailed`), as `session.launch` does for `run`.
"""

from __future__ import annotations

import mmap
import os
import pickle
import queue
import threading
import time
import traceback
from collections import deque
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, Callable

import numpy as np

from dlrmprof.errors import UserError
from dlrmprof.session.ranks import exit_failure, user_failure

__all__ = ["PipeExchange", "TorchExchange", "run_local"]

_SHARED = hasattr(os, "memfd_create")  # row blocks as shared memory (else sent as bytes)


class TorchExchange:
    """The interface over torch.distributed: joins the process group of the environment
    (RANK, WORLD_SIZE, MASTER_ADDR, ...; gloo) unless one is already up, and leaves the one
    it made on `close`."""

    def __init__(self, timeout_s: float = 3600):
        import datetime

        import torch.distributed as dist

        self._dist = dist
        self._own = not dist.is_initialized()
        if self._own:
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_s))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._sends: list = []                  # (request, tensor) of `send`s not waited on
        self._heads: dict = {}                  # {peer: (request, size tensor)} of `poll`

    def close(self) -> None:
        self.flush()
        if self._own and self._dist.is_initialized():
            self._dist.destroy_process_group()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def all_gather(self, obj) -> list:
        out = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out

    def gather(self, obj) -> list | None:
        out = [None] * self.world if self.rank == 0 else None
        self._dist.gather_object(obj, out, dst=0)
        return out

    def send(self, peer: int, obj) -> None:
        import torch

        data = bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        size = torch.tensor([len(data)], dtype=torch.int64)
        payload = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0)
        for t in (size, payload):
            self._sends.append((self._dist.isend(t, peer), t))   # the tensor kept until sent

    def flush(self) -> None:
        for req, _ in self._sends:
            req.wait()
        self._sends = []

    def poll(self, peer: int) -> bool:
        import torch

        if peer not in self._heads:             # the next object's size, received when it comes
            head = torch.zeros(1, dtype=torch.int64)
            self._heads[peer] = (self._dist.irecv(head, peer), head)
        return self._heads[peer][0].is_completed()

    def recv(self, peer: int):
        import torch

        self.poll(peer)
        req, head = self._heads.pop(peer)
        req.wait()
        payload = torch.empty(int(head[0]), dtype=torch.uint8)
        if payload.numel():
            self._dist.recv(payload, peer)
        return pickle.loads(payload.numpy().tobytes())

    def row_blocks(self, shapes: list) -> list:
        return [np.empty(shape, dtype=np.int64) for shape in shapes]

    def exchange_rows(self, own: list, rows: list) -> list:
        import torch

        dist, rank = self._dist, self.rank
        width = own[rank].shape[1]
        reqs, blocks = [], []
        for o in range(self.world):
            if o != rank and own[o].size:
                reqs.append(dist.isend(torch.from_numpy(own[o]), o))
        for o in range(self.world):
            if o == rank:
                blocks.append(own[rank])
            elif rows[o] and width:
                buf = torch.empty((rows[o], width), dtype=torch.int64)
                reqs.append(dist.irecv(buf, o))
                blocks.append(buf.numpy())
        for req in reqs:
            req.wait()
        return blocks


class _PeerGone(Exception):
    """A peer failed or died: this rank stops (rank 0 says why, the others exit quietly)."""

    def __init__(self, peer: int, fail: tuple | None):
        super().__init__(peer)
        self.peer, self.fail = peer, fail


def _bytes(arr: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


class PipeExchange:
    """The interface over socket pairs (`multiprocessing.Pipe`), one to each peer.

    Every message is a pickled tuple: ("obj", value), ("rows", shape, dtype) followed by the
    array's bytes, ("shm", shape, rows used) followed by a memfd's descriptor (a shared row
    block), or ("fail", kind, text, traceback).  A receive waits on every peer at
    once and queues what others sent meanwhile (each pair's messages stay in order, and all
    ranks run the same collectives in the same order), so a failure anywhere ends the wait.
    Sends run in a thread while this rank receives: two ranks sending each other more than a
    socket's buffer would otherwise block for ever."""

    def __init__(self, rank: int, world: int, conns: dict):
        self.rank, self.world = rank, world
        self._conns = conns                   # {peer: Connection}
        self._queued = {p: deque() for p in conns}
        self._closed: set = set()             # peers whose socket closed
        self._shared: dict = {}               # {peer: (memfd, shape)} of row_blocks
        self._outbox: queue.SimpleQueue | None = None     # `send`'s, for its thread
        self._sender: threading.Thread | None = None

    # -- the interface
    def all_gather(self, obj) -> list:
        sender = self._send_async([(p, ("obj", obj)) for p in self._conns])
        out = [obj if p == self.rank else self._recv(p)[1] for p in range(self.world)]
        sender.join()
        return out

    def gather(self, obj) -> list | None:
        if self.rank != 0:
            self._send(0, ("obj", obj))
            return None
        return [obj if p == 0 else self._recv(p)[1] for p in range(self.world)]

    def send(self, peer: int, obj) -> None:
        """`obj` to `peer`, after this rank's earlier sends: a thread sends it while this rank
        goes on (a socket holds less than a table's ids)."""
        if self._sender is None:
            self._outbox = queue.SimpleQueue()
            self._sender = threading.Thread(target=self._send_queued, daemon=True,
                                            name="pipe-exchange-outbox")
            self._sender.start()
        self._outbox.put((peer, ("obj", obj)))

    def _send_queued(self) -> None:
        while (item := self._outbox.get()) is not None:
            try:
                self._send(*item)
            except (OSError, ValueError):
                return                        # a peer gone: the receives say so

    def flush(self) -> None:
        if self._sender is not None:
            self._outbox.put(None)
            self._sender.join()
            self._sender = self._outbox = None

    def poll(self, peer: int) -> bool:
        """Whether `recv(peer)` returns at once (what has come is read; a peer that failed
        or died raises, as at a receive)."""
        conn = self._conns[peer]
        if not self._queued[peer] and conn.poll(0):
            self._read(peer)
        return bool(self._queued[peer])

    def recv(self, peer: int):
        msg = self._recv(peer)
        if msg[0] != "obj":
            raise RuntimeError(f"rank {self.rank}: rank {peer} sent {msg[0]}, expected an "
                               "object")
        return msg[1]

    def row_blocks(self, shapes: list) -> list:
        """int64 blocks of `shapes`, one per rank: shared memory for the peers where the OS
        has memfd (pages never written are never resident), private for this rank."""
        out = []
        for p, shape in enumerate(shapes):
            nbytes = int(np.prod(shape)) * 8
            if p == self.rank or not nbytes or not _SHARED:
                out.append(np.empty(shape, dtype=np.int64))
                continue
            fd = os.memfd_create("dlrmprof-rows")
            os.ftruncate(fd, nbytes)
            out.append(np.frombuffer(mmap.mmap(fd, nbytes), dtype=np.int64).reshape(shape))
            self._shared[p] = (fd, tuple(shape))
        return out

    def exchange_rows(self, own: list, rows: list) -> list:
        width = own[self.rank].shape[1]
        sender = self._send_async([(p, own[p]) for p in self._conns if own[p].size])
        blocks = []
        for p in range(self.world):
            if p == self.rank:
                blocks.append(own[p])
            elif rows[p] and width:
                msg = self._recv(p)
                if msg[0] != "rows" or msg[1].shape != (rows[p], width):
                    raise RuntimeError(f"rank {self.rank}: rank {p} sent {msg[0]} "
                                       f"{getattr(msg[1], 'shape', '')}, expected rows "
                                       f"{(rows[p], width)}")
                blocks.append(msg[1])
        sender.join()
        for fd, _ in self._shared.values():  # blocks with no rows: not sent
            os.close(fd)
        self._shared.clear()
        return blocks

    # -- failures
    def tell_failure(self, kind: str, text: str, tb: str = "") -> None:
        """Send this rank's error to every peer (those gone are skipped), after what `send`
        queued (one writer per socket: a message is never cut by another)."""
        self.flush()
        for conn in self._conns.values():
            try:
                conn.send(("fail", kind, text, tb))
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        self.flush()
        for conn in self._conns.values():
            conn.close()

    # -- messages
    def _send(self, peer: int, item) -> None:
        conn = self._conns[peer]
        if isinstance(item, np.ndarray) and peer in self._shared:
            fd, shape = self._shared.pop(peer)
            conn.send(("shm", shape, item.shape[0]))
            send_handle(conn, fd, None)
            os.close(fd)
        elif isinstance(item, np.ndarray):
            conn.send(("rows", item.shape, item.dtype.str))
            conn.send_bytes(_bytes(item))
        else:
            conn.send(item)

    def _send_async(self, items: list) -> threading.Thread:
        def run():
            try:
                for peer, item in items:
                    self._send(peer, item)
            except (OSError, ValueError):
                pass                          # a peer gone: the receives say so

        t = threading.Thread(target=run, name="pipe-exchange-send", daemon=True)
        t.start()
        return t

    def _read(self, peer: int) -> None:
        """One message of `peer` into its queue (a "rows" header with its array)."""
        conn = self._conns[peer]
        try:
            msg = conn.recv()
            if msg[0] == "shm":               # the owner's block, mapped: no copy
                fd = recv_handle(conn)
                shape, used = msg[1], msg[2]
                mem = mmap.mmap(fd, int(np.prod(shape)) * 8)
                os.close(fd)
                msg = ("rows", np.frombuffer(mem, dtype=np.int64).reshape(shape)[:used])
            elif msg[0] == "rows":
                arr = np.empty(msg[1], dtype=np.dtype(msg[2]))
                conn.recv_bytes_into(_bytes(arr))
                msg = ("rows", arr)
        except (EOFError, OSError):
            raise _PeerGone(peer, None) from None
        if msg[0] == "fail":
            raise _PeerGone(peer, msg[1:])
        self._queued[peer].append(msg)

    def _recv(self, peer: int) -> tuple:
        """`peer`'s next message; a peer that sent its error ends the wait at once, one whose
        socket closed only when its message is the one awaited (a rank with nothing more to
        send exits: rank 0 reads its share first)."""
        from multiprocessing.connection import wait

        while not self._queued[peer]:
            live = {c: p for p, c in self._conns.items() if p not in self._closed}
            for conn in wait(list(live)):
                try:
                    self._read(live[conn])
                except _PeerGone as gone:
                    if gone.fail or gone.peer == peer:
                        raise
                    self._closed.add(gone.peer)
        return self._queued[peer].popleft()


def _pipes(ctx, world: int) -> dict:
    """{rank: {peer: Connection}}: one socket pair between every two ranks."""
    ends: dict = {r: {} for r in range(world)}
    for a in range(world):
        for b in range(a + 1, world):
            ends[a][b], ends[b][a] = ctx.Pipe(duplex=True)
    return ends


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when rank 0 ends (a `kill -9` of gen-trace must not
    leave ranks computing); elsewhere the next receive from rank 0 ends it."""
    from dlrmprof.procutil import die_with_parent

    if not die_with_parent():                 # rank 0 ended before the call
        os._exit(_PEER_GONE)


_PEER_GONE = 75         # a rank's exit status when it stopped because a peer failed


def _child(rank: int, world: int, conns: dict, others: list, entry, args) -> None:
    """A rank other than 0: its entry's return value is not kept (results go to rank 0
    through the exchange); errors go to the peers, then exit 1."""
    import sys

    _die_with_parent()
    for conn in others:                       # a fork's copies of the other ranks' ends:
        conn.close()                          # closed, so a dead peer reads as end of file
    ex = PipeExchange(rank, world, conns)
    code = 0
    try:
        entry(ex, *args)
    except _PeerGone:
        code = _PEER_GONE                     # rank 0 reports the peer that failed
    except KeyboardInterrupt:
        code = 130
    except UserError as exc:
        ex.tell_failure("user", str(exc))
        code = 1
    except BaseException as exc:  # noqa: BLE001 -- sent to rank 0 with its traceback
        ex.tell_failure("bug", f"{type(exc).__name__}: {exc}", traceback.format_exc())
        code = 1
    ex.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)                            # not the caller's atexit handlers (a fork)


def _failure(gone: _PeerGone, procs: dict, ex: PipeExchange) -> Exception:
    """One line for the first failure rank 0 saw: a rank's error (a user error first, read
    from any peer that sent one), else the death or exit of the rank whose socket closed."""
    fails = {gone.peer: gone.fail} if gone.fail else {}
    deadline = time.monotonic() + 0.5         # a peer's own error can trail a secondary EOF
    for peer in ex._conns:
        while peer not in fails:
            conn = ex._conns[peer]
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                break
            try:
                ex._read(peer)
            except _PeerGone as more:
                if more.fail:
                    fails[peer] = more.fail
                break
    if fails:
        rank, (kind, text, tb) = min(fails.items(), key=lambda kv: (kv[1][0] != "user", kv[0]))
        if kind == "user":
            return user_failure(rank, text)
        return RuntimeError(f"rank {rank} failed: {text}\n{tb}")
    for proc in procs.values():               # those stopped by the failure exit at once
        proc.join(2)
    dead = [r for r, p in procs.items() if p.exitcode not in (None, 0, _PEER_GONE)]
    rank = min(dead, key=lambda r: (procs[r].exitcode >= 0, r)) if dead else gone.peer
    proc = procs[rank]
    proc.join(5)
    return exit_failure(rank, proc.pid, proc.exitcode, "trace")


def run_local(nproc: int, entry: Callable, args: tuple = (),
              start_method: str = "fork", then: Callable | None = None) -> Any:
    """Run `entry(exchange, *args)` as `nproc` ranks on this host and return rank 0's value,
    or `then(value)` where given (rank 0 only, with the ranks still up: it may receive what
    they send after `entry`): rank 0 is this process, ranks 1.. are started by
    `start_method` ("fork" only where the caller runs no thread that a fork would leave
    holding a lock; "spawn" needs `entry` and `args` picklable).  A rank's failure stops
    every rank and raises one line."""
    import multiprocessing

    if nproc < 1:
        raise UserError(f"--nproc must be at least 1, got {nproc}")
    ctx = multiprocessing.get_context(start_method)
    ends = _pipes(ctx, nproc)
    procs: dict = {}
    ex = PipeExchange(0, nproc, ends[0])
    ok = False
    try:
        for r in range(1, nproc):
            others = [c for q, peers in ends.items() if q != r for c in peers.values()]
            procs[r] = ctx.Process(target=_child, name=f"rank-{r}",
                                   args=(r, nproc, ends[r], others, entry, args))
            procs[r].start()
        for r in range(1, nproc):
            for conn in ends[r].values():
                conn.close()
        try:
            out = entry(ex, *args)
            if then is not None:
                out = then(out)
        except _PeerGone as gone:
            raise _failure(gone, procs, ex) from None
        ok = True
        return out
    finally:
        if not ok:
            for proc in procs.values():
                proc.kill()
        for proc in procs.values():
            proc.join()
        ex.close()
