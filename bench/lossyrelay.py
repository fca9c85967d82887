#!/usr/bin/env python3
"""Relays Ethernet frames between two network devices (AF_PACKET, both directions), dropping each with probability
LOSS (seeded, so a run is repeatable in what it decides, if not in timing). Run inside the namespace that holds both
devices; needs root. The kernel here has no netem qdisc nor tc actions, so this is how a bench puts loss on a link.

    lossyrelay.py DEV_A DEV_B LOSS SEED
"""
import random, select, socket, sys

PACKET_OUTGOING = 4


def main():
    a, b, loss, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    socks = {}
    for dev in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
        s.bind((dev, 0))
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
                try:
                    peer[s].send(frame)
                except OSError:
                    pass


if __name__ == '__main__':
    main()
