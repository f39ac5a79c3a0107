"""How the parts of a split training batch meet: BatchSums for threads, and worker processes
(Linux) for parallel.SplitBatch.

Two training threads of one Python process share the GIL, which every NumPy call takes to
start: they wait for each other between calls (cnn-best, 2 x 64 images: ~35 ms per step in
two threads, ~31 ms in two processes, docs/performance.md). A worker process has its own
interpreter. Each extra part gets one, forked at the first step with a replica of the model
whose weights and gradients live in shared memory (an anonymous mmap survives fork):

- the parent copies the model's weights and the batch into shared memory and writes a command
  (the batch size, dropout seeds) to each worker's pipe, then runs part 0 itself;
- a worker runs its part (forward, loss, backward): its gradients land in shared memory,
  where the parent adds them to the model's as it does for threads;
- batch norm's exchanges go through the pipes: every worker sends its per-channel sums, the
  parent adds all parts' in order (its own first, as BatchSums does) and sends the totals back;
- each message from a worker says what it is (sums, done, error), and a worker that dies is an
  end-of-file: the parent never waits for a worker that can no longer answer.

A worker blocks SIGINT/SIGTERM/SIGHUP (the parent decides), closes every file it inherited (a
run directory's lock must not outlive the parent) and exits when its pipe closes: when the
split ends or the parent dies. After any error the workers are stopped; the next step forks
new ones.
"""

from __future__ import annotations

import builtins
import mmap
import os
import signal
import struct
import sys
import threading
import warnings

import numpy as np

_HEADER = struct.Struct("<cI")          # what follows (tag), its size in bytes
_DONE = struct.Struct("<dq?")           # part loss, correct predictions, loss finite
_COMMAND = struct.Struct("<q")          # rows in the whole batch; dropout seeds follow
_SEED = struct.Struct("<Q")
SUMS, DONE, ERROR = b"S", b"D", b"E"


def available() -> bool:
    """Whether parts can run in forked processes here (Linux: fork and CPU affinity)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def shared_copy(a: np.ndarray) -> np.ndarray:
    """A copy of `a` in anonymous shared memory: a forked child sees the parent's writes."""
    out = np.frombuffer(mmap.mmap(-1, max(a.nbytes, 1)), dtype=a.dtype, count=a.size)
    out = out.reshape(a.shape)
    out[...] = a
    return out


class BatchSums:
    """Sums over a batch that K threads hold in K parts: each passes its own (C,) sums and
    gets the whole batch's back. Used by batch norm, whose statistics (and gradient) need the
    whole batch's means. Every thread adds the parts in the same order, so all get the same
    numbers. Two sets of slots alternate, so one barrier per exchange is enough.
    """

    def __init__(self, parts: int):
        self.parts = parts
        self._barrier = threading.Barrier(parts)
        self._slots = [[None] * parts, [None] * parts]
        self._round = [0] * parts

    def total(self, part: int, local: np.ndarray) -> np.ndarray:
        r = self._round[part]
        self._round[part] = 1 - r
        slots = self._slots[r]
        slots[part] = local
        self._barrier.wait()                # raises BrokenBarrierError if a part failed
        total = slots[0].copy()
        for other in slots[1:]:
            total += other
        return total

    def abort(self) -> None:
        self._barrier.abort()


def _read_exact(fd: int, size: int) -> bytes | None:
    """`size` bytes from a pipe, or None at end of file (the other side is gone)."""
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class WorkerDied(ChildProcessError):
    """A worker process ended in the middle of a step (killed, or out of memory)."""


class Worker:
    """One forked process that runs one part of every batch with its own replica."""

    def __init__(self, replica, part, *, layers, cpu, inputs, labels, loss, run_part):
        self.replica = replica
        for p in replica.parameters():          # the parent's handle on the shared arrays
            p.data, p.grad = shared_copy(p.data), shared_copy(p.grad)
        self.dropouts, self.norms = layers      # SplitBatch's lists for this replica
        command_r, command_w = os.pipe()
        answer_r, answer_w = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12+ warns on fork() with other threads alive (BLAS's, a progress bar's):
            # the child runs only this replica's NumPy code and takes none of their locks.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:                            # the child: serve, then exit without cleanup
            code = 1
            try:
                self._prepare_child(command_r, answer_w, cpu)
                code = self._serve(part, inputs, labels, loss, run_part)
            finally:
                os._exit(code)
        os.close(command_r)
        os.close(answer_w)
        self.pid, self.command, self.answers = pid, command_w, answer_r

    # The child ---------------------------------------------------------------------------

    def _prepare_child(self, command_r: int, answer_w: int, cpu) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        low, high = sorted((command_r, answer_w))
        os.closerange(3, low)
        os.closerange(low + 1, high)
        os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))
        self.command, self.answers = command_r, answer_w
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        for layer in self.norms:
            layer.batch_sums = self._child_total

    def _child_total(self, local: np.ndarray) -> np.ndarray:
        """batch_sums in the child: send this part's sums, get the whole batch's back."""
        payload = local.tobytes()
        _write_all(self.answers, _HEADER.pack(SUMS, len(payload)) + payload)
        total = _read_exact(self.command, len(payload))
        if total is None:
            raise WorkerDied("the training process is gone")
        return np.frombuffer(total, dtype=local.dtype).copy()

    def _serve(self, part, inputs, labels, loss, run_part) -> int:
        """Run this part of every batch the parent sends, until its pipe closes."""
        size = _COMMAND.size + _SEED.size * len(self.dropouts)
        while (command := _read_exact(self.command, size)) is not None:
            (m,) = _COMMAND.unpack_from(command)
            for i, layer in enumerate(self.dropouts):
                seed = _SEED.unpack_from(command, _COMMAND.size + i * _SEED.size)[0]
                layer.rng = np.random.default_rng(seed)
            lo, hi = part_bounds(m, part[1])[part[0]:part[0] + 2]
            try:
                answer = _DONE.pack(*run_part(self.replica, inputs[lo:hi], labels[lo:hi],
                                              loss, m))
                tag = DONE
            except BaseException as error:      # noqa: BLE001 - every error goes to the parent
                answer = f"{type(error).__name__}\0{error}".encode("utf-8", "replace")
                tag = ERROR
            _write_all(self.answers, _HEADER.pack(tag, len(answer)) + answer)
            if tag == ERROR:
                return 1
        return 0

    # The parent --------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        try:
            _write_all(self.command, data)
        except BrokenPipeError:
            self.receive(DONE)      # its last words (an error), or WorkerDied if it had none
            raise

    def start(self, m: int, seeds: list[int]) -> None:
        """Send the command for a batch of m rows (already in the shared input buffer)."""
        self.send(_COMMAND.pack(m) + b"".join(_SEED.pack(s) for s in seeds))

    def receive(self, expected: bytes) -> bytes:
        """The worker's next message, which must be `expected`; its error is raised here."""
        header = _read_exact(self.answers, _HEADER.size)
        payload = None if header is None else _read_exact(self.answers, _HEADER.unpack(header)[1])
        if payload is None:
            raise WorkerDied(f"training stopped: its worker process {self.pid} ended "
                             f"unexpectedly (killed, or out of memory?); run it again "
                             f"(train --resume continues a run from its last checkpoint)")
        tag = _HEADER.unpack(header)[0]
        if tag == ERROR:
            name, _, message = payload.decode("utf-8", "replace").partition("\0")
            kind = getattr(builtins, name, None)
            if isinstance(kind, type) and issubclass(kind, Exception):
                raise kind(message)
            raise RuntimeError(f"{name}: {message}")
        if tag != expected:
            raise RuntimeError(f"training worker protocol error: got {tag!r}, "
                               f"expected {expected!r}")
        return payload

    def finish(self) -> tuple[float, int, bool]:
        return _DONE.unpack(self.receive(DONE))

    def stop(self, *, kill: bool = False) -> None:
        """End the process: close its pipe (it exits), or kill it mid-step; reap it."""
        if self.pid is None:
            return
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for fd in (self.command, self.answers):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        self.pid = None


def part_bounds(m: int, parts: int) -> list[int]:
    """Row bounds of `parts` near-equal parts of m rows: part i is [b[i], b[i + 1])."""
    return [m * i // parts for i in range(parts + 1)]


class Workers:
    """Parts 1..K-1 of every batch in K-1 worker processes; part 0 stays with the caller."""

    def __init__(self, split):
        """split: the SplitBatch (its model, replicas, CPUs, per-replica layer lists)."""
        self.model, self.replicas, self.cpus = split.model, split.replicas, split._cpus
        self.layers = list(zip(split.dropouts[1:], split.norms[1:]))
        self.run_part = split._part
        self.workers: list[Worker] = []
        self._key = None                        # (loss, batch capacity, dtype, sample shape)

    def ensure(self, x: np.ndarray, loss) -> None:
        """Fork the workers for batches like x (again if the batch outgrew their buffers)."""
        key = self._key
        if (self.workers and key[0] is loss and len(x) <= key[1] and key[2] == x.dtype
                and key[3] == x.shape[1:]):
            return
        self.stop()
        capacity = max(len(x), key[1] if key else 0)
        self.inputs = shared_copy(np.zeros((capacity, *x.shape[1:]), dtype=x.dtype))
        self.labels = shared_copy(np.zeros(capacity, dtype=np.int64))
        parts = len(self.replicas) + 1
        self.workers = [Worker(replica, (i + 1, parts), layers=self.layers[i], cpu=self.cpus[i + 1],
                               inputs=self.inputs, labels=self.labels, loss=loss,
                               run_part=self.run_part)
                        for i, replica in enumerate(self.replicas)]
        self._key = (loss, capacity, x.dtype, x.shape[1:])

    def start(self, x: np.ndarray, y: np.ndarray, seeds: list[list[int]]) -> None:
        """Weights and batch into shared memory, then every worker's command."""
        for worker in self.workers:
            for own, twin in zip(self.model.parameters(), worker.replica.parameters()):
                twin.data[...] = own.data
        self.inputs[:len(x)] = x
        self.labels[:len(y)] = y
        for worker, worker_seeds in zip(self.workers, seeds):
            worker.start(len(x), worker_seeds)

    def total(self, local: np.ndarray) -> np.ndarray:
        """batch_sums for part 0: all parts' sums added in part order, sent back to each."""
        total = local.copy()
        for worker in self.workers:
            total += np.frombuffer(worker.receive(SUMS), dtype=local.dtype)
        payload = total.tobytes()
        for worker in self.workers:
            worker.send(payload)
        return total

    def finish(self) -> list[tuple[float, int, bool]]:
        return [worker.finish() for worker in self.workers]

    def stop(self, *, kill: bool = False) -> None:
        for worker in self.workers:
            worker.stop(kill=kill)
        self.workers = []
