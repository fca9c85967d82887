#!/usr/bin/env python3
"""Relays Ethernet frames between two network devices (AF_PACKET, both directions), dropping each with probability
LOSS (seeded, so a run is repeatable in what it decides, if not in timing). Run inside the namespace that holds both
devices; needs root. The kernel here has no netem qdisc nor tc actions, so this is how a bench puts loss on a link.

    lossyrelay.py DEV_A DEV_B LOSS SEED

DEV_A is the guest's side (a TAP device), DEV_B the clients' (a veth whose peer is on their bridge). Linux leaves the
TCP checksum of what its clients send for the device to fill in (checksum offload), so a frame taken from DEV_B gets
its TCP checksum computed here. Frames bigger than the MTU (segmentation offload) are not split: the clients' side
must send one segment per frame (bench/vnet.py sets gso_max_segs 1 on the clients' bridge), else an upload stalls.
"""
import random, select, socket, struct, sys

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


def main():
    a, b, loss, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    socks = {}
    for dev in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        s.bind((dev, 0x0003))  # protocol 0 would receive nothing
        socks[dev] = s
    peer = {socks[a]: socks[b], socks[b]: socks[a]}
    print('relaying', flush=True)
    while True:
        ready, _, _ = select.select(list(peer), [], [])
        for s in ready:
            for _ in range(64):
                try:
                    frame, addr = s.recvfrom(65536, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING or rng.random() < loss:
                    continue
                if s is socks[b]:
                    frame = tcp_checksum_filled(frame)
                try:
                    peer[s].send(frame)
                except OSError:
                    pass


if __name__ == '__main__':
    main()
