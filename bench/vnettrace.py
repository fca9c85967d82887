#!/usr/bin/env python3
"""Where a failover stall of the virtual network went, from the files `bench/vnet.py --kills-only --lossy-link
--keep-traces DIR` keeps per kill run: for each run, the requests that waited longest across the takeover, and for
each of them its connection's frames at the relay (bench/lossyrelay.py --trace) from just before the request was
sent until its reply, times in ms after the kill; then a tally of what the longest waits were made of.

    python3 bench/vnettrace.py DIR [--worst N] [--quiet]

A request's wait is classed by the frames of its connection, first match:
  - `link-before-kill`: the relay dropped a frame of the exchange (the request, the reply, a copy of either) before
    the kill: the request was waiting on the link's own loss recovery when the primary died;
  - `reply-lost`: the survivor's reply was sent and lost (dropped by the relay) and sent again later;
  - `request-lost`: a copy of the request sent after the takeover was dropped by the relay;
  - `client-rto`: the client's request (or a retransmission of it) went towards the guest before the interface was
    up and the next copy only came after it: the client's own timer (RTO, doubled after each attempt the dead
    primary swallowed) set the wait;
  - `other`: none of these.
The failover's own stall is then the longest wait among requests the link did not touch (no frame of theirs
dropped): what the kill alone cost.

    python3 bench/vnettrace.py DIR --repairs

counts, per build, the data segments of the takeover's repair (the guest's data segments from the kill until just
after its interface was up) that the relay dropped, and how long until the guest sent each of them again (its
retransmission time-out, or a probe after the repair).

    python3 bench/vnettrace.py DIR --resends

counts, per build (the middle word of the kept runs' names), the guest's data segments sent again (a copy of a
sequence number the relay had already seen from the guest; the relay's own duplicates do not count) and how many of
them went out when the client's ACK covering them had passed the relay towards the guest at least 2 ms (and at most
1 s) before: a resend the ACK already in the guest's device made unnecessary (a retransmission timer run before the
ACK was taken), or, after a kill, an ACK that went to the dead primary (the takeover's repair). Before the kill only
the first kind is possible.
"""
import argparse, glob, json, os, statistics, sys


def load_run(stem):
    """A kept kill run: the kill's clock, when the survivor's interface was up and when its descriptors were attached
    (monotonic s; the guest answers again from there), kvload's (sent, answered, port) and the relay's lines."""
    with open(stem + '.json') as f:
        meta = json.load(f)
    with open(stem + '.events') as f:
        evs = [json.loads(l) for l in f if l.strip()]
    killed_ms, killed = meta['killedUnixMs'], meta['killedMono']
    took = [e['unixMs'] for e in evs if e['event'] == 'takeover-descriptor']
    up = next((e['unixMs'] for e in evs if e['event'] == 'takeover-descriptor'
               and str(e.get('detail', '')).startswith('virtual interface')), None)
    up_mono = killed + (up - killed_ms) / 1000 if up is not None else killed
    attached_mono = killed + (max(took) - killed_ms) / 1000 if took else up_mono
    reqs = []
    with open(stem + '.trace') as f:
        for l in f:
            p = l.split()
            if len(p) >= 3:
                reqs.append((float(p[0]), float(p[1]), int(p[2])))
    frames = []
    if os.path.exists(stem + '.frames'):
        with open(stem + '.frames') as f:
            frames = [l.split() for l in f]
    return killed, up_mono, attached_mono, reqs, frames


def own_stall(stem):
    """(the failover's own stall: the longest wait, ms, among requests in flight across the takeover none of whose
    frames the relay dropped; the descriptors attached, ms after the interface was up)."""
    killed, up_mono, attached_mono, reqs, frames = load_run(stem)
    stalled = [(d - s, s, d, port) for s, d, port in reqs if d > killed and s < up_mono]
    untouched = [w for w, s, d, port in stalled
                 if not any(p[2] == 'drop' and int(p[8]) > 0 for p in conn_frames(frames, port, s - 0.005, d + 0.005))]
    return max(untouched, default=0) * 1000, (attached_mono - up_mono) * 1000


def conn_frames(frames, port, t0, t1):
    """The relay's lines of the connection whose client port is `port`, between t0 and t1 (monotonic s)."""
    out = []
    for p in frames:
        t = float(p[0])
        if t < t0 or t > t1 or len(p) < 9:
            continue
        sport, dport = int(p[3]), int(p[4])
        if port in (sport, dport):
            out.append(p)
    return out


def classify(rows, killed, up_mono, port):
    """What made a request's wait long (see the module's text)."""
    to_guest = [p for p in rows if int(p[3]) == port and int(p[8]) > 0]
    from_guest = [p for p in rows if int(p[4]) == port and int(p[8]) > 0]
    if any(p[2] == 'drop' for p in to_guest + from_guest if float(p[0]) < killed):
        return 'link-before-kill'
    if any(p[2] == 'drop' for p in from_guest if float(p[0]) >= up_mono):
        return 'reply-lost'
    if any(p[2] == 'drop' for p in to_guest if float(p[0]) >= up_mono):
        return 'request-lost'
    before = [p for p in to_guest if float(p[0]) < up_mono]
    after = [p for p in to_guest if float(p[0]) >= up_mono and p[2] != 'drop']
    if before and after:
        return 'client-rto'
    return 'other'


ACK_BEFORE_S, ACK_WITHIN_S = 0.002, 1.0

# the takeover's repair: the guest's data segments from the kill until this long after the interface was up (the
# repair is sent as the interface comes up; the event is written after it)
REPAIR_AFTER_UP_S = 0.010


def repairs(stem):
    """(data segments of the takeover's repair, [ms from each one the relay dropped to the next copy of it the guest
    sent, or None when none came]) of one kept run."""
    killed, up_mono, _, _, frames = load_run(stem)
    guest = [p for p in frames if len(p) >= 9 and p[1] == 'g>c' and int(p[8]) > 0 and p[2] in ('pass', 'drop', 'held')]
    burst = [p for p in guest if killed < float(p[0]) <= up_mono + REPAIR_AFTER_UP_S]
    waits = []
    for p in burst:
        if p[2] != 'drop':
            continue
        t, key = float(p[0]), (p[4], p[5])
        again = next((float(q[0]) for q in guest if float(q[0]) > t and (q[4], q[5]) == key), None)
        waits.append(None if again is None else (again - t) * 1000)
    return len(burst), waits


def resends(stem):
    """(the guest's data segments sent again, those of them whose ACK had passed the relay towards the guest before,
    the same two counts before the kill) of one kept run (see the module's text)."""
    killed, _, _, _, frames = load_run(stem)
    acks, sent = {}, {}
    for p in frames:
        if len(p) < 9:
            continue
        t = float(p[0])
        if p[1] == 'c>g' and p[2] in ('pass', 'late', 'dup'):
            acks.setdefault(int(p[3]), []).append((t, int(p[6])))
        elif p[1] == 'g>c' and int(p[8]) > 0 and p[2] in ('pass', 'drop', 'held'):   # each frame the guest sent, once
            sent.setdefault((int(p[4]), int(p[5])), []).append(t)
    total = acked = total_before = acked_before = 0
    for (port, seq), ts in sent.items():
        for t in sorted(ts)[1:]:
            covered = any(t - ACK_WITHIN_S < ta < t - ACK_BEFORE_S and 0 < ((a - seq) & 0xFFFFFFFF) < 1 << 20
                          for ta, a in acks.get(port, ()))
            total += 1
            acked += covered
            if t < killed:
                total_before += 1
                acked_before += covered
    return total, acked, total_before, acked_before


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('dir')
    ap.add_argument('--resends', action='store_true', help="per build: the guest's resends, and those whose ACK had already passed")
    ap.add_argument('--repairs', action='store_true', help="per build: the takeover's repair segments the link dropped and how "
                    'long until the guest sent each again')
    ap.add_argument('--worst', type=int, default=2, help='requests shown per run')
    ap.add_argument('--quiet', action='store_true', help='the tally only')
    a = ap.parse_args()
    if a.repairs:
        per = {}
        for stem in sorted(p[:-5] for p in glob.glob(os.path.join(a.dir, '*.json'))):
            build = os.path.basename(stem).split('-')[1]
            per.setdefault(build, []).append(repairs(stem))
        for build, rows in sorted(per.items()):
            waits = [w for _, ws in rows for w in ws]
            got = sorted(w for w in waits if w is not None)
            print(f"{build}: {len(rows)} runs; the takeover's repair: {sum(n for n, _ in rows)} data segments, the link dropped "
                  f"{len(waits)} (in {sum(1 for _, ws in rows if ws)} runs); sent again after "
                  + (', '.join(f'{w:.0f}' for w in got) or '-') + ' ms'
                  + (f' (median {statistics.median(got):.0f})' if got else '') + (f'; {len(waits) - len(got)} never' if len(got) < len(waits) else ''))
        return
    if a.resends:
        per = {}
        for stem in sorted(p[:-5] for p in glob.glob(os.path.join(a.dir, '*.json'))):
            build = os.path.basename(stem).split('-')[1]
            per.setdefault(build, []).append(resends(stem))
        for build, rows in sorted(per.items()):
            t, k, tb, kb = (sum(r[i] for r in rows) for i in range(4))
            print(f'{build}: {len(rows)} runs; the guest resent {t} data segments, {k} of them after the ACK covering them had '
                  f'passed the link; before the kill {tb} and {kb}')
        return
    tally, own = {}, []
    for stem in sorted(p[:-5] for p in glob.glob(os.path.join(a.dir, '*.json'))):
        killed, up_mono, attached_mono, reqs, frames = load_run(stem)
        stalled = sorted(((d - s, s, d, port) for s, d, port in reqs if d > killed and s < up_mono), reverse=True)
        if not stalled:
            continue
        ms = lambda t: (t - killed) * 1000
        own.append(own_stall(stem)[0])
        if not a.quiet:
            print(f'== {os.path.basename(stem)}: interface up +{ms(up_mono):.0f} ms, descriptors attached +{ms(attached_mono):.0f}; longest waits '
                  + ', '.join(f'{w * 1000:.0f}' for w, *_ in stalled[:8]) + f'; longest the link did not touch {own[-1]:.0f}')
        for w, s, d, port in stalled[:a.worst]:
            rows = conn_frames(frames, port, s - 0.005, d + 0.005)
            kind = classify(rows, killed, up_mono, port)
            tally.setdefault(kind, []).append(w * 1000)
            if a.quiet:
                continue
            print(f'  port {port}: sent +{ms(s):.1f}, answered +{ms(d):.1f} ({w * 1000:.0f} ms): {kind}')
            for p in rows:
                way = 'client>guest' if int(p[3]) == port else 'guest>client'
                print(f'    +{ms(float(p[0])):8.1f} {way} {p[2]:4} seq {p[5]} ack {p[6]} {p[7]} len {p[8]}')
    if own:
        print(f'\nThe failover\'s own stall (the longest wait of a request none of whose frames the relay dropped), per run: '
              f'{", ".join(f"{x:.0f}" for x in own)} ms; median {statistics.median(own):.0f}, max {max(own):.0f}')
    print(f'\nThe {a.worst} longest waits of each run, by cause (ms):')
    for k, v in sorted(tally.items()):
        print(f'  {k}: {len(v)} (median {statistics.median(v):.0f}): {", ".join(f"{x:.0f}" for x in sorted(v))}')


if __name__ == '__main__':
    main()
