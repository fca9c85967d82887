#!/usr/bin/env python3
"""Replication benchmark (loopback): `primary run` vs `primary protect` with a `backup listen`, output-commit
latency, log bandwidth, and failover time split into detection and drain. Appends a section to
docs/PERFORMANCE.md.

    python3 bench/replication.py [--runs N]

Needs the tests built: dotnet build tests -c Release (uses tests/bin/Release/net10.0/{primary,backup}.dll)
and guests/out/counter.musl (guests/build.sh guests/out).
"""
import argparse, os, re, signal, statistics, subprocess, sys, threading, time, datetime, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'tests', 'bin', 'Release', 'net10.0')
PRIMARY, BACKUP = os.path.join(BIN, 'primary.dll'), os.path.join(BIN, 'backup.dll')
COUNTER = os.path.join(ROOT, 'guests', 'out', 'counter.musl')


class Proc:
    """A subprocess whose stderr lines are collected with arrival times."""
    def __init__(self, args):
        self.p = subprocess.Popen(['dotnet'] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        for line in self.p.stderr:
            self.lines.append((time.perf_counter(), line.rstrip('\n')))

    def wait_for(self, pattern, timeout=120):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for ts, l in list(self.lines):
                m = re.search(pattern, l)
                if m:
                    return ts, m
            if self.p.poll() is not None:
                time.sleep(0.2)
                for ts, l in list(self.lines):
                    m = re.search(pattern, l)
                    if m:
                        return ts, m
                raise RuntimeError(f'exited without /{pattern}/: ' + '\n'.join(l for _, l in self.lines))
            time.sleep(0.005)
        raise TimeoutError(pattern)

    def text(self):
        return '\n'.join(l for _, l in self.lines)


def backup(*extra):
    b = Proc([BACKUP, 'listen', '--listen', 'http://127.0.0.1:0'] + list(extra))
    _, m = b.wait_for(r'listening on (http://127\.0\.0\.1:\d+)')
    return b, m.group(1)


def timed_run(args):
    t0 = time.perf_counter()
    p = subprocess.run(['dotnet', PRIMARY] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return dt, p.stderr


def protected(guest_args, extra=()):
    b, url = backup()
    dt, err = timed_run(['protect', '--backup', url, '--stats'] + list(extra) + ['--'] + guest_args)
    b.p.wait(timeout=300)
    return dt, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=3)
    a = ap.parse_args()
    rows = []
    # throughput: a CPU-bound guest that prints little, and an output-heavy one (every line is an output commit)
    for name, gargs in [('counter 50 lines x 400k iterations (CPU-bound)', [COUNTER, '50', '400000']),
                        ('counter 2000 lines x 2k iterations (output-heavy)', [COUNTER, '2000', '2000'])]:
        run_t = statistics.median(timed_run(['run', '--'] + gargs)[0] for _ in range(a.runs))
        prot = [protected(gargs) for _ in range(a.runs)]
        prot_t = statistics.median(t for t, _ in prot)
        err = prot[len(prot) // 2][1]
        m = re.search(r'log (\d+) records, (\d+) bytes \(([\d.]+) MB/s\)', err)
        c = re.search(r'output commit: (\d+) outputs held, p50 ([\d.]+) ms, p99 ([\d.]+) ms', err)
        rows.append((name, run_t, prot_t, m.group(1), m.group(2), m.group(3), c.group(1), c.group(2), c.group(3)))
        print(rows[-1], flush=True)
    # failover: SIGKILL the primary mid-run; detection = kill -> backup notices; drain = notice -> took over
    fo = []
    for i in range(a.runs + 2):
        lock = os.path.join(tempfile.gettempdir(), f'revirt-bench-{os.getpid()}-{i}.lock')
        b, url = backup('--arbiter', lock, '--timeout-ms', '1000')
        p = Proc([PRIMARY, 'protect', '--backup', url, '--arbiter', lock, '--', COUNTER, '100000', '3000'])
        p.wait_for('protected by')
        time.sleep(1.5)
        t_kill = time.perf_counter()
        p.p.send_signal(signal.SIGKILL)
        t_lost, _ = b.wait_for('primary lost')
        t_over, m = b.wait_for(r'drained in (\d+) ms; won the arbiter; took over at instruction (\d+) \(record #(\d+)\)')
        b.p.send_signal(signal.SIGKILL)
        b.p.wait()
        os.remove(lock)
        fo.append(((t_lost - t_kill) * 1000, (t_over - t_lost) * 1000))
        print('failover', fo[-1], flush=True)
    det = statistics.median(x for x, _ in fo)
    drain = statistics.median(y for _, y in fo)

    out = ['', '## Replication (loopback, `bench/replication.py`)', '',
           f'{datetime.date.today()}, {os.cpu_count()} cores, median of {a.runs} runs; primary and backup on one machine over 127.0.0.1 (gRPC, HTTP/2 cleartext).', '',
           '| guest | `primary run` s | `primary protect` s | overhead | log records | log bytes | log bandwidth MB/s | outputs held | output commit p50 ms | p99 ms |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for (name, rt, pt, rec, by, bw, n, p50, p99) in rows:
        out.append(f'| {name} | {rt:.2f} | {pt:.2f} | {pt / rt:.2f}x | {rec} | {by} | {bw} | {n} | {p50} | {p99} |')
    out += ['', 'Output commit latency is the time an output spends in the gate: from the guest\'s write until the backup\'s '
            'acknowledgement of the log record that produced it (the guest does not wait; only the bytes do).', '',
            f'Failover (SIGKILL of the primary mid-run, {len(fo)} runs, medians): detection {det:.0f} ms (kill to the backup '
            f'noticing: the kernel resets the connection, so this is immediate; a silent partition is detected after '
            f'`--timeout-ms`), drain + arbiter + go-live {drain:.0f} ms. Per run (detection, drain) ms: '
            + ', '.join(f'({x:.0f}, {y:.0f})' for x, y in fo), '']
    path = os.path.join(ROOT, 'docs', 'PERFORMANCE.md')
    with open(path, 'a') as f:
        f.write('\n'.join(out) + '\n')
    print('\n'.join(out))


if __name__ == '__main__':
    main()
