#!/usr/bin/env python3
"""Shared-storage benchmark (loopback): the wall time of a protected storelog run (appends, in-place rewrites, a
read-back every fourth iteration, which waits for the held writes) with the backup on the primary's root
(`backup listen --shared-storage`: the primary holds each file write until the backup holds its record) and on a
root of its own (the backup writes its own copy), from `primary protect`'s start to its exit (process start-up and
the handshake included).

    python3 bench/shared_storage.py [--guest storelog|storenames] [--iterations 2000] [--work 1000] [--runs 5] [--setups shared,separate] [--baseline DIR]

--guest storenames runs the changes-of-names workload instead (guests/src/storenames.c: per iteration an append,
a mkdir, and every third a rename of the open file, a write through it and a new open; an unlink and rmdir of an
older directory; a pwrite, and ftruncate/truncate with fstat/stat checks): each change of names waits for the one
before it under shared storage.

--baseline DIR runs the same rows with another build too (a checkout with its Release build, e.g. /check/base),
alternating run by run, and prints the ratio of the medians (this build / baseline). Needs the Release build and
guests/out/storelog.musl (guests/build.sh). Every process it starts is ended before it returns; every wait is bounded.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dlls(where):
    d = where if os.path.exists(os.path.join(where, 'primary.dll')) else os.path.join(where, 'tests', 'bin', 'Release', 'net10.0')
    return os.path.join(d, 'primary.dll'), os.path.join(d, 'backup.dll')


def one(build, setup, iterations, work, guest, done):
    primary, backup = build
    d = tempfile.mkdtemp(prefix='revirt-bench-storage-')
    try:
        roots = [os.path.join(d, 'a'), os.path.join(d, 'b')]
        for r in roots:
            os.makedirs(os.path.join(r, 'd'))
            shutil.copy(guest, os.path.join(r, 'prog'))
        broot = roots[0] if setup == 'shared' else roots[1]
        extra = ['--shared-storage'] if setup == 'shared' else []
        events = os.path.join(d, 'b.events')
        b = subprocess.Popen(['dotnet', backup, 'listen', '--listen', 'http://127.0.0.1:0', '--insecure-no-auth', *extra, '--root', broot,
                              '--arbiter', os.path.join(d, 'lock'), '--timeout-ms', '5000', '--events', events],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url, deadline = None, time.time() + 60
            while url is None and time.time() < deadline:
                if os.path.exists(events):
                    for line in open(events):
                        if '"listening"' in line:
                            url = line.split('"url":"')[1].split('"')[0]
                time.sleep(0.05)
            if url is None: raise RuntimeError('the backup did not listen')
            t0 = time.monotonic()
            p = subprocess.run(['dotnet', primary, 'protect', '--backup', url, '--root', roots[0], '--arbiter', os.path.join(d, 'lock'),
                                '--', '/prog', '/d', str(iterations), str(work)], capture_output=True, timeout=600)
            wall = time.monotonic() - t0
            if p.returncode != 0 or not p.stdout.endswith(done.encode()):
                raise RuntimeError(f'the guest failed: {p.returncode} {p.stderr.decode()[-500:]}')
            b.wait(timeout=60)
            return wall
        finally:
            if b.poll() is None:
                b.kill()
                b.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--iterations', type=int, default=2000)
    ap.add_argument('--work', type=int, default=1000)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--setups', default='shared,separate')
    ap.add_argument('--baseline')
    ap.add_argument('--guest', default='storelog', help='storelog (writes and read-backs) or storenames (mkdir, rename of the open file, unlink, rmdir, truncations while appending)')
    a = ap.parse_args()
    guest = os.path.join(ROOT, 'guests', 'out', f'{a.guest}.musl')
    builds = {'this': dlls(ROOT)}
    if a.baseline: builds['baseline'] = dlls(a.baseline)
    walls = {(n, s): [] for n in builds for s in a.setups.split(',')}
    print(f'load before: {os.getloadavg()[0]:.1f}', flush=True)
    for r in range(a.runs):
        for s in a.setups.split(','):
            for n, build in builds.items():
                w = one(build, s, a.iterations, a.work, guest, f'verified {a.iterations} lines\n' if a.guest == 'storelog' else f'done {a.iterations}\n')
                walls[(n, s)].append(w)
                print(f'run {r + 1} {n:8} {s:8} {w:6.2f} s', flush=True)
    print(f'load after: {os.getloadavg()[0]:.1f}')
    for s in a.setups.split(','):
        line = f'{s:8} median this {statistics.median(walls[("this", s)]):.2f} s'
        if a.baseline:
            base = statistics.median(walls[('baseline', s)])
            line += f', baseline {base:.2f} s, ratio {statistics.median(walls[("this", s)]) / base:.2f}'
        print(line)


if __name__ == '__main__':
    sys.exit(main())
