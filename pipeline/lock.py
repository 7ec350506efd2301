"""One writer per dataset root: an advisory lock held for the whole of a run.

Two runs on one output_dir would mint the same shards twice and delete each other's pair
parts. `dataset_lock(root)` takes `fcntl.flock` on `<root>/.biomint-lock`: the kernel
releases it when the holding process exits, however it exits (kill -9 included), so a stale
lock from a killed run never blocks; the file's content (pid, host, start time, command)
only tells the second run whom it is waiting for. flock works on local file systems and,
on Linux >= 2.6.12, on NFS (emulated with POSIX locks); on a cluster file system without
locking the lock degrades to a no-op with a warning rather than refusing to run.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import ConfigError

LOCK_NAME = ".biomint-lock"
log = logging.getLogger("biomint")


class DatasetBusy(ConfigError):
    """Another biomint process holds the dataset root."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another biomint process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"biomint process {info.get('pid', '?')} on {info.get('host', '?')} "
            f"(`{info.get('command', '?')}`, since {started})")


@contextlib.contextmanager
def dataset_lock(root: Path, purpose: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock of dataset root `root` (created if need be) for the body.

    DatasetBusy (exit 2, one sentence naming the holder) when another process holds it,
    unless `wait`, which blocks until the holder is done.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            busy = e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
            if busy and wait:
                log.info("output_dir=%s is in use by %s; waiting for it (wait=true)", root, _holder(path))
                fcntl.flock(fd, fcntl.LOCK_EX)
            elif busy:
                raise DatasetBusy(f"output_dir={root} is in use by {_holder(path)}; wait for it to finish "
                                  f"(or rerun with wait=true) or choose another output_dir") from None
            elif e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                log.warning("the file system of %s does not support locks: nothing stops two runs "
                            "on it at once", root)
            else:
                raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "purpose": purpose, "command": " ".join(["biomint", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield
    finally:
        # closing the descriptor releases the lock; the file stays (removing it would let a
        # third process lock a new inode while a second still waits on the old one)
        os.close(fd)
