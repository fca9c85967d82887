#!/usr/bin/env python3
"""Kernel CPU per message of the two data-link transports, measured apart from the replicas.

A parent and a forked child play primary and backup: the parent writes a batch-sized message (--batch bytes, a length
prefix and the body, as DataLink does), the child reads it whole and answers an ack-sized one (--ack bytes), one
round trip at a time like a closed-loop client's request, --count times, over loopback TCP (TCP_NODELAY, 1 MiB
buffers, as DataLink sets them) and over an abstract Unix stream socket, alternating --runs times. It reports the
system CPU microseconds (both processes) per round trip: what the kernel spends carrying one batch and one ack, which
is what the transport changes; user time is Python's and the same for both. CPU time, not wall time, so a loaded
machine slows the run without changing the figure much (quote the load all the same).

    python3 bench/linkcost.py [--count 20000] [--runs 5] [--batch 400] [--ack 20]
"""
import argparse, os, resource, socket, statistics, struct


def pair(kind):
    if kind == 'unix':
        name = f'\0revirt-linkcost-{os.getpid()}'
        lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lst.bind(name)
        addr, family = name, socket.AF_UNIX
    else:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.bind(('127.0.0.1', 0))
        addr, family = lst.getsockname(), socket.AF_INET
    lst.listen(1)
    return lst, addr, family


def tune(s):
    if s.family == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)


def read_exactly(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def one(kind, count, batch, ack):
    lst, addr, family = pair(kind)
    pid = os.fork()
    if pid == 0:  # the backup: read a message, answer an ack
        c = socket.socket(family, socket.SOCK_STREAM)
        tune(c)
        c.connect(addr)
        answer = struct.pack('<i', ack) + bytes(ack)
        try:
            while True:
                n = struct.unpack('<i', read_exactly(c, 4))[0]
                read_exactly(c, n)
                c.sendall(answer)
        except EOFError:
            os._exit(0)
    s, _ = lst.accept()
    lst.close()
    tune(s)
    msg = struct.pack('<i', batch) + bytes(batch)
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(count):
        s.sendall(msg)
        n = struct.unpack('<i', read_exactly(s, 4))[0]
        read_exactly(s, n)
    after = resource.getrusage(resource.RUSAGE_SELF)
    s.close()
    os.waitpid(pid, 0)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_stime - before.ru_stime, child.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--count', type=int, default=20000)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--batch', type=int, default=400, help='bytes of each primary message (a batch of a few records)')
    ap.add_argument('--ack', type=int, default=20, help='bytes of each answer (an Ack)')
    a = ap.parse_args()
    res = {'tcp': [], 'unix': []}
    child_total = 0.0
    for r in range(a.runs):
        for kind in ('tcp', 'unix') if r % 2 == 0 else ('unix', 'tcp'):
            parent, children = one(kind, a.count, a.batch, a.ack)
            child, child_total = children - child_total, children  # RUSAGE_CHILDREN accumulates
            us = (parent + child) * 1e6 / a.count
            res[kind].append(us)
            print(f'{kind:4} run {r + 1}: system CPU {us:.2f} us per round trip (primary {parent * 1e6 / a.count:.2f}, backup {child * 1e6 / a.count:.2f}); load {os.getloadavg()[0]:.1f}', flush=True)
    t, u = statistics.median(res['tcp']), statistics.median(res['unix'])
    print(f'median system CPU per round trip ({a.batch} + {a.ack} bytes, {a.count} round trips, {a.runs} runs each): '
          f'tcp {t:.2f} us, unix {u:.2f} us, unix/tcp {u / t:.2f}')


if __name__ == '__main__':
    main()
