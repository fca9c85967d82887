#!/usr/bin/env python3
"""A client of guests/src/bulkserver.c: downloads BYTES bytes of the body for SEED (GET) or uploads them (PUT),
checks every byte against the body it computes itself (the oracle: the same 64 KiB xorshift64 block with the stream
offset stamped every 1 KiB), and prints one JSON line: bytes, ok, first bad offset, seconds, MB/s, whether the
connection was reset, and the longest silence of the stream (longest wait between two reads that brought data, for a
download; between two writes that the kernel took, for an upload) with when it began and ended on CLOCK_MONOTONIC
(the same clock in every network namespace, so a caller can place it against a kill), and every wait over 20 ms.

    bulkclient.py HOST PORT BYTES SEED [--put] [--progress N]

With --progress N it prints "progress N" (flushed) once N bytes have moved, so a caller can act mid-transfer.
"""
import json, socket, struct, sys, time

BLOCK, STAMP = 65536, 1024


def base_block(seed):
    x = seed or 0x9E3779B97F4A7C15
    m = (1 << 64) - 1
    out = bytearray(BLOCK)
    for i in range(0, BLOCK, 8):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        struct.pack_into('<Q', out, i, x)
    return out


def block_at(base, at):
    b = bytearray(base)
    for i in range(0, BLOCK, STAMP):
        struct.pack_into('<Q', b, i, at + i)
    return b


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    put = '--put' in sys.argv
    progress = None
    if '--progress' in sys.argv:
        progress = int(sys.argv[sys.argv.index('--progress') + 1])
        args.remove(str(progress))
    host, port, total, seed = args[0], int(args[1]), int(args[2]), int(args[3])
    base = base_block(seed)
    s = socket.create_connection((host, port), timeout=120)
    s.sendall(b'%s %d %d\n' % (b'PUT' if put else b'GET', total, seed))
    t0 = last = time.monotonic()
    gap, gap_from, gap_to = 0.0, t0, t0
    gaps = []  # every wait over 20 ms, (from, to) on CLOCK_MONOTONIC (at most 10000)
    moved, bad, reset, said = 0, None, False, False
    expect, expect_at = b'', 0
    try:
        while moved < total:
            if moved >= expect_at + len(expect):
                expect_at = moved - moved % BLOCK
                expect = block_at(base, expect_at)[:min(BLOCK, total - expect_at)]
            off = moved - expect_at
            if put:
                n = s.send(expect[off:])
            else:
                got = s.recv(len(expect) - off)
                if not got:
                    break
                n = len(got)
                if bad is None and got != expect[off:off + n]:
                    i = next(i for i in range(n) if got[i] != expect[off + i])
                    bad = moved + i
            now = time.monotonic()
            if now - last > gap:
                gap, gap_from, gap_to = now - last, last, now
            if now - last > 0.02 and len(gaps) < 10000:
                gaps.append((last, now))
            last = now
            moved += n
            if progress is not None and not said and moved >= progress:
                print('progress', progress, flush=True)
                said = True
        if put:
            s.shutdown(socket.SHUT_WR)
            reply = s.makefile('rb').readline().decode().strip()
            if reply != 'OK %d' % total:
                bad = int(reply.split()[-1]) if reply.startswith('BAD AT') else 0
        else:
            if s.recv(1):
                bad = total if bad is None else bad  # more than asked for
    except ConnectionResetError:
        reset = True
    secs = time.monotonic() - t0
    print(json.dumps({'bytes': moved, 'ok': moved == total and bad is None and not reset, 'firstBad': bad, 'reset': reset,
                      'seconds': round(secs, 3), 'mbps': round(moved / secs / 1e6, 2), 'maxGapMs': round(gap * 1000, 1),
                      'gapFrom': gap_from, 'gapTo': gap_to, 'gaps': gaps}), flush=True)
    return 0 if moved == total and bad is None and not reset else 1


if __name__ == '__main__':
    sys.exit(main())
