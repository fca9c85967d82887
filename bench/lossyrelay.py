#!/usr/bin/env python3
"""Relays Ethernet frames between two network devices (AF_PACKET, both directions), dropping each with probability
LOSS, and optionally sending one twice (--duplicate P) or holding it back 1-3 ms so that later frames overtake it
(--reorder P); the decisions are seeded, so a run is repeatable in what it decides, if not in timing. Run inside the
namespace that holds both devices; needs root. The kernel here has no netem qdisc nor tc actions, so this is how a
bench or a test puts loss, duplication and reordering on a link.

    lossyrelay.py DEV_A DEV_B LOSS SEED [--duplicate P] [--reorder P] [--stats FILE] [--trace FILE] [--realtime]

DEV_A is the guest's side (a TAP device, or a veth whose peer is a port of the replicas' bridge), DEV_B the clients'
(a veth whose peer is on their bridge or holds their address). Linux leaves the TCP checksum of what its clients send
for the device to fill in (checksum offload), so a frame taken from DEV_B gets its TCP checksum computed here. Frames
bigger than the MTU (segmentation offload) are not split: the clients' side must send one segment per frame
(bench/vnet.py sets gso_max_segs 1 on the clients' device), else an upload stalls. With --stats the counts so far
(relayed, dropped, duplicated, reordered: JSON) are written to FILE (replaced whole) at most every 200 ms and at the
end (SIGTERM), so a caller can check the faults it asked for happened. With --trace every frame's fate is written to
FILE, a line each: CLOCK_MONOTONIC seconds, direction (g>c: from DEV_A, c>g: from DEV_B), what was done (pass, drop,
dup: a second copy, held: held back, late: a held frame sent), then for TCP over IPv4 the source and destination
ports, sequence and acknowledgement numbers, flags (FSRPAU) and payload length, for ARP `arp`; where the time went
in a failover is read from it (bench/vnettrace.py).
"""
import argparse, heapq, json, os, random, select, signal, socket, struct, sys, time

PACKET_OUTGOING = 4


def tcp_checksum_filled(f):
    """The frame with its IPv4 TCP checksum computed (RFC 793 §3.1, over the pseudo-header)."""
    if len(f) < 34 or f[12:14] != b'\x08\x00' or f[23] != 6:
        return f
    ihl = (f[14] & 0xF) * 4
    total = struct.unpack_from('!H', f, 16)[0]
    seg = bytearray(f[14 + ihl:14 + total])
    if len(seg) < 20:
        return f
    seg[16:18] = b'\0\0'
    data = bytes(f[26:34]) + struct.pack('!BBH', 0, 6, len(seg)) + bytes(seg) + (b'\0' if len(seg) % 2 else b'')
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    out = bytearray(f)
    struct.pack_into('!H', out, 14 + ihl + 16, ~s & 0xFFFF)
    return bytes(out)


def describe(f):
    """A frame in a few words: TCP's ports, numbers, flags and length, or `arp`, or its EtherType."""
    if len(f) >= 14 and f[12:14] == b'\x08\x06':
        return 'arp'
    if len(f) < 34 or f[12:14] != b'\x08\x00' or f[23] != 6:
        return 'other'
    ihl = (f[14] & 0xF) * 4
    total = struct.unpack_from('!H', f, 16)[0]
    t = 14 + ihl
    if len(f) < t + 20:
        return 'short'
    sport, dport, seq, ack = struct.unpack_from('!HHII', f, t)
    off, flags = f[t + 12] >> 4, f[t + 13]
    names = ''.join(c for bit, c in zip((1, 2, 4, 8, 16, 32), 'FSRPAU') if flags & bit)
    return f'{sport} {dport} {seq} {ack} {names or "-"} {total - ihl - off * 4}'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('a')
    ap.add_argument('b')
    ap.add_argument('loss', type=float)
    ap.add_argument('seed', type=int)
    ap.add_argument('--duplicate', type=float, default=0.0)
    ap.add_argument('--reorder', type=float, default=0.0)
    ap.add_argument('--stats')
    ap.add_argument('--trace')
    ap.add_argument('--realtime', action='store_true', help='run as a real-time process (SCHED_RR 1; else nice -10): a link '
                    'does not wait for time slices, and on a loaded machine an ordinary relay held frames for hundreds of ms')
    o = ap.parse_args()
    if o.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except OSError:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, -10)
            except OSError:
                pass
    rng = random.Random(o.seed)
    socks = {}
    for dev in (o.a, o.b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        s.bind((dev, 0x0003))  # protocol 0 would receive nothing
        socks[dev] = s
    peer = {socks[o.a]: socks[o.b], socks[o.b]: socks[o.a]}
    counts = {'relayed': 0, 'dropped': 0, 'duplicated': 0, 'reordered': 0}
    held = []  # (due, order, socket, frame, direction): frames held back to be overtaken
    order = 0
    written = [0.0]

    def write_stats(force=False):
        now = time.monotonic()
        if o.stats and (force or now - written[0] >= 0.2):
            written[0] = now
            with open(o.stats + '.tmp', 'w') as f:
                json.dump(counts, f)
            os.replace(o.stats + '.tmp', o.stats)

    trace = open(o.trace, 'w', buffering=1 << 16) if o.trace else None

    def note(direction, what, frame):
        if trace:
            trace.write(f'{time.monotonic():.6f} {direction} {what} {describe(frame)}\n')

    def end(*_):
        write_stats(force=True)
        if trace:
            trace.close()
        sys.exit(0)
    signal.signal(signal.SIGTERM, end)

    def send(to, frame, direction, what='pass'):
        try:
            to.send(frame)
            counts['relayed'] += 1
            note(direction, what, frame)
        except OSError:
            pass

    print('relaying', flush=True)
    while True:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.2
        ready, _, _ = select.select(list(peer), [], [], timeout)
        for s in ready:
            for _ in range(64):
                try:
                    frame, addr = s.recvfrom(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                direction = 'g>c' if s is socks[o.a] else 'c>g'
                if rng.random() < o.loss:
                    counts['dropped'] += 1
                    note(direction, 'drop', frame)
                    continue
                if s is socks[o.b]:
                    frame = tcp_checksum_filled(frame)
                copies = 2 if o.duplicate and rng.random() < o.duplicate else 1
                if copies == 2:
                    counts['duplicated'] += 1
                for copy in range(copies):
                    if o.reorder and rng.random() < o.reorder:
                        counts['reordered'] += 1
                        order += 1
                        note(direction, 'held', frame)
                        heapq.heappush(held, (time.monotonic() + rng.uniform(0.001, 0.003), order, peer[s], frame, direction))
                    else:
                        send(peer[s], frame, direction, 'dup' if copy else 'pass')
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, to, frame, direction = heapq.heappop(held)
            send(to, frame, direction, 'late')
        write_stats()


if __name__ == '__main__':
    main()
