#!/usr/bin/env python3
"""A loopback TCP relay between a primary and its backup that a partition can cut: every TARGET port gets a listening
port of its own on 127.0.0.1 whose connections are relayed to 127.0.0.1:TARGET, both directions. SIGUSR1 cuts the link:
from then on the bytes of both directions are read and swallowed, and nothing is closed, so neither replica learns of
the cut except by the other's silence (a partition, as the chaos drill's TcpFaultProxy makes one). bench/vnet.py puts
it on both of the backup's ports (its gRPC endpoint and its data link: `primary protect --backup URL --backup-data
HOST:PORT`, which always means a TCP data link), as a real-time process (`chrt -r 1`): a link between the replicas
is a wire, which no CPU load delays.

    cutrelay.py TARGET_PORT [TARGET_PORT ...]

Prints one line once it listens: the relay's ports in the order of the targets, space-separated. On SIGTERM it prints
nothing more and exits; the bytes relayed and swallowed go to stderr as JSON at the end.
"""
import argparse, json, os, select, signal, socket, sys

CHUNK = 1 << 16


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('targets', type=int, nargs='+')
    o = ap.parse_args()
    listeners = {}
    for t in o.targets:
        l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        l.bind(('127.0.0.1', 0))
        l.listen(16)
        l.setblocking(False)
        listeners[l] = t
    print(' '.join(str(l.getsockname()[1]) for l in listeners), flush=True)
    state = {'cut': False, 'stop': False}
    signal.signal(signal.SIGUSR1, lambda *_: state.update(cut=True))
    signal.signal(signal.SIGTERM, lambda *_: state.update(stop=True))
    peer = {}                 # socket -> the socket its bytes go to
    pending = {}              # socket -> bytes read from its peer, not yet written to it
    counts = {'relayed': 0, 'swallowed': 0}
    while not state['stop']:
        writers = [s for s, b in pending.items() if b]
        try:
            r, w, _ = select.select(list(listeners) + list(peer), writers, [], 0.2)
        except InterruptedError:
            continue
        for s in r:
            if s in listeners:
                try:
                    a, _ = s.accept()
                except OSError:
                    continue
                b = socket.create_connection(('127.0.0.1', listeners[s]))
                for x in (a, b):
                    x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    x.setblocking(False)
                peer[a], peer[b] = b, a
                pending[a], pending[b] = b'', b''
                continue
            if s not in peer:
                continue
            try:
                data = s.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b''
            if not data:
                # an end seen before the cut is passed on (the replicas' own closes); after it, the cut hides it
                other = peer.pop(s)
                peer.pop(other, None)
                pending.pop(s, None)
                pending.pop(other, None)
                if not state['cut']:
                    s.close()
                    other.close()
                continue
            if state['cut']:
                counts['swallowed'] += len(data)
            else:
                counts['relayed'] += len(data)
                pending[peer[s]] += data
        for s in w:
            if s not in pending:
                continue
            if state['cut']:
                pending[s] = b''
                continue
            try:
                n = s.send(pending[s])
                pending[s] = pending[s][n:]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pending[s] = b''
    json.dump(counts, sys.stderr)


if __name__ == '__main__':
    main()
