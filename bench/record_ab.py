#!/usr/bin/env python3
"""Record/run and replay/record of two builds, interleaved: each round runs, records and replays every guest with
the baseline build and then with this one (CPU seconds, user + system, of each process). Made for ratios near 1 on
a loaded machine: many short rounds side by side, medians and the median of each round's own ratio.

    python3 bench/record_ab.py --baseline-root /check/base [--rounds 8]
    python3 bench/record_ab.py --baseline-root . --before-options "--checkpoint-interval 20000000"  # one build, two options

Guests: busybox sha256sum of 8 MB and md5sum of 16 MB (inputs as bench/run.py makes them); `--guests` picks others
from the bench set (gzip 4 MB, bzip2 2 MB, bench.musl 10) and memtouch of 256 MiB (guests/src/memtouch.c: a
memory-heavy guest, 2,000 lines each rewriting 16 pages), e.g. `--guests sha256sum,gzip,bzip2,md5sum,bench,memtouch`.
Both roots must hold Release builds of primary and backup (`dotnet build ReVirt.sln -c Release`).
"""
import argparse, os, shlex, statistics, subprocess, sys, tempfile, shutil, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
from run import make_input  # noqa: E402


def cpu(cmd):
    with open(os.devnull, 'wb') as dn:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=dn, stderr=dn)
        _, st, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(st) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return ru.ru_utime + ru.ru_stime


def bench_guests(work, out):
    """The guests of these benches by name: (label, a function that makes the inputs and returns the command)."""
    known = {}
    for applet, mb, args in (('sha256sum', 8, []), ('gzip', 4, ['-c']), ('bzip2', 2, ['-c']), ('md5sum', 16, [])):
        path = os.path.join(work, applet + '.bin')
        known[applet] = (f'{applet} {mb} MB', lambda applet=applet, mb=mb, args=args, path=path:
                         (make_input(path, mb << 20), ['/bin/busybox', applet] + args + [path])[1])
    known['bench'] = ('bench.musl 10', lambda: [os.path.join(out, 'bench.musl'), '10'])
    known['memtouch'] = ('memtouch 256 MiB', lambda: [os.path.join(out, 'memtouch.musl'), os.path.join(work, 'no-stop-file'), '256', '0', '2000'])
    known['true'] = ('busybox true', lambda: ['/bin/busybox', 'true'])
    return known


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--baseline-root', required=True, help='checkout of the earlier build (with its Release output)')
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--before-options', default='', metavar='OPTS',
                    help="options given only to the baseline's `record` (e.g. --baseline-root . --before-options "
                         "'--checkpoint-interval 20000000' compares one build's default with that option)")
    ap.add_argument('--record-options', default='', metavar='OPTS',
                    help="options given to both builds' `record` (e.g. '--checkpoint-interval 20000000')")
    ap.add_argument('--guests', default='sha256sum,md5sum',
                    help='comma-separated, from: sha256sum, gzip, bzip2, md5sum, bench, memtouch (default: %(default)s)')
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix='revirt-recab-')
    out = os.path.join(ROOT, 'guests', 'out')
    subprocess.run(['bash', os.path.join(ROOT, 'guests', 'build.sh'), out, 'bench.musl', 'memtouch.musl'], check=True)
    known = bench_guests(work, out)
    guests = {}
    for g in a.guests.split(','):
        if g not in known:
            ap.error(f'unknown guest {g!r} (known: {", ".join(known)})')
        name, make = known[g]
        guests[name] = make()
    time.sleep(2.5)  # a file is read by reference only when it changed more than 2 s before the recorder started
    roots = {'before': a.baseline_root, 'this': ROOT}
    res = {}
    for i in range(a.rounds):
        for g, args in guests.items():
            for b, r in roots.items():
                primary = f'{r}/primary/bin/Release/net10.0/primary.dll'
                backup = f'{r}/backup/bin/Release/net10.0/backup.dll'
                log = os.path.join(work, f'{b}.rvlog')
                res.setdefault((g, b, 'run'), []).append(cpu(['dotnet', primary, 'run', '--'] + args))
                opts = shlex.split(a.record_options) + (shlex.split(a.before_options) if b == 'before' else [])
                res.setdefault((g, b, 'record'), []).append(cpu(['dotnet', primary, 'record', '--log', log] + opts + ['--'] + args))
                res.setdefault((g, b, 'replay'), []).append(cpu(['dotnet', backup, 'replay', '--log', log]))
        print(f'round {i + 1}/{a.rounds}, load {" ".join(open("/proc/loadavg").read().split()[:3])}', flush=True)
    print('| guest | build | run | record | replay | record/run | replay/record | paired record/run | paired replay/record |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|')
    med = statistics.median
    for g in guests:
        for b in roots:
            run, rec, rep = (res[(g, b, m)] for m in ('run', 'record', 'replay'))
            print(f'| {g} | {b} | {med(run):.3f} | {med(rec):.3f} | {med(rep):.3f} | {med(rec) / med(run):.3f} | '
                  f'{med(rep) / med(rec):.3f} | {med([x / y for x, y in zip(rec, run)]):.3f} | {med([x / y for x, y in zip(rep, rec)]):.3f} |')
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
