#!/usr/bin/env python3
"""What recording and replay cost beyond a run, for one build, measured so that a ratio near 1 can be stated on a
loaded 2-core host.

    python3 bench/record_cost.py [--rounds 21] [--guests sha256sum,gzip,bzip2,md5sum,bench] [--pin 1] [--root DIR]
    python3 bench/record_cost.py --baseline-root /check/base ...   # both builds in every round, side by side

How: every round runs each guest with `primary run`, `primary record` and `backup replay` of the same build, one after
the other (the order of the three and of the guests rotates from round to round, so no mode always follows another
or the same guest), and takes each process's CPU time (user + system from wait4's rusage: the wall time of a process
that waits for a core on a loaded host is not its cost). `busybox true` runs in every round as well: its record - run
is the fixed start-up share. Per guest it reports, over the rounds:
  - the median CPU seconds of each mode;
  - the median of each round's own ratio (record/run, replay/record) with its interquartile range and a 95 %
    distribution-free confidence interval of that median (order statistics of the binomial: no assumption about the
    noise's shape): the goal "<= 1.03" is shown when the interval's upper end is at or below 1.03;
  - record - run and replay - record in ms (medians of the rounds' differences);
  - the steady-state share: each round's (record - record of `busybox true`) / (run - run of `busybox true`), i.e.
    the ratio with the fixed start-up cost of both taken out, and the guest's M instructions per CPU second of run
    beyond start-up (the instruction count is the one the warm-up replay verified).
With --work (builds whose `backup replay` has --stats), every process also reports where its CPU time went
(HostWorkAccount: process CPU at the guest's start and end, the guest thread's execution — the execution loop without
the syscalls it calls out to —, its syscalls, stops and exit, the other threads) with the deterministic counts of the
guest's execution (instructions, blocks and regions compiled, instructions interpreted, syscalls, host methods
JIT-compiled during the run). The execution is the same code doing the same work in the three modes (the counts
show it), and it is where a loaded host's noise lands; so the "work" table models each round's process as run's median
execution plus that process's own other parts (start-up, syscalls and stops, other threads, exit), which are small
and so noisy only by milliseconds: record/run = (E + X_record) / (E + X_run), replay/record likewise, with the same
median and 95 % interval over the rounds; "steady" leaves start-up and exit out of X. The execution's own paired ratio
(record/run, replay/record) is printed beside it as the check that no cost hides in it (noisy, centred on 1).
Replays read the log of the newest recording of their guest (one warm-up recording and replay per guest come first,
unmeasured: the inputs and the build are in the page cache before round 1). --pin runs every measured process on the
given CPUs (sched_setaffinity; e.g. `--pin 1`), so none migrates between cores while another line of work runs on
both. --baseline-root measures an earlier build in the same rounds (the order of the two alternates), each build's
ratios from its own processes. Needs a Release build of primary and backup in --root (`dotnet build ReVirt.sln -c Release`).
"""
import argparse, math, os, re, shlex, statistics, subprocess, sys, tempfile, shutil, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))
from record_ab import bench_guests  # noqa: E402

MODES = ('run', 'record', 'replay')
GOAL = 1.03


def load():
    return ' '.join(open('/proc/loadavg').read().split()[:3])


def measured(cmd, cpus):
    """CPU seconds (user + system) of cmd, and its stderr."""
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    with open(os.devnull, 'wb') as dn, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=dn, stderr=err, preexec_fn=pin)
        _, st, ru = os.wait4(p.pid, 0)
        err.seek(0)
        text = err.read().decode(errors='replace')
    if os.waitstatus_to_exitcode(st) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {text[-400:]}")
    return ru.ru_utime + ru.ru_stime, text


WORK_FIELDS = ('start_ms', 'end_ms', 'execution_ms', 'kernel_ms', 'other_threads_ms', 'instructions', 'blocks_compiled',
               'regions', 'interpreted', 'syscalls', 'loop_entries', 'jit_methods', 'allocated_kb')


def work_of(text):
    """The fields of a `host work:` line of --stats (HostWorkAccount.Describe), or None."""
    line = next((l for l in text.splitlines() if 'host work:' in l), None)
    if line is None:
        return None
    w = {k: float(v) for k, v in re.findall(r'(\w+)=([0-9.]+)', line)}
    missing = [f for f in WORK_FIELDS if f not in w]
    if missing:
        raise RuntimeError(f'host work line without {missing}: {line}')
    return w


def accounts(root):
    """Whether the build in root reports its host work (its `backup replay` takes --stats)."""
    backup = os.path.join(root, 'backup/bin/Release/net10.0/backup.dll')
    out = subprocess.run(['dotnet', backup, 'replay', '--help'], capture_output=True, text=True).stdout
    return '--stats' in out


def median_ci(xs):
    """The 95 % confidence interval of the median of xs from order statistics: the widest [x(k), x(n+1-k)] whose
    binomial(n, 1/2) tails hold at most 2.5 % each (n >= 6; below that, the whole range)."""
    s = sorted(xs)
    n = len(s)
    k, tail = 0, 0.0
    while k < n // 2:
        nxt = tail + math.comb(n, k) / 2 ** n
        if nxt > 0.025:
            break
        tail, k = nxt, k + 1
    k = max(k, 1)
    return s[k - 1], s[n - k]


def spread(xs):
    """median, first and third quartile, confidence interval of the median."""
    q1, q2, q3 = statistics.quantiles(xs, n=4, method='inclusive')
    return statistics.median(xs), q1, q3, median_ci(xs)


def fmt_ratio(xs):
    m, q1, q3, (lo, hi) = spread(xs)
    return f'{m:.3f} ({q1:.3f}-{q3:.3f}) [{lo:.3f}, {hi:.3f}]{" ✓" if hi <= GOAL else ""}'


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--root', default=ROOT, help='checkout whose Release build is measured (default: this one)')
    ap.add_argument('--baseline-root', default='', help='an earlier build measured in the same rounds (optional)')
    ap.add_argument('--rounds', type=int, default=21)
    ap.add_argument('--guests', default='sha256sum,gzip,bzip2,md5sum,bench',
                    help='comma-separated, from: sha256sum, gzip, bzip2, md5sum, bench, memtouch (default: %(default)s); '
                         '`busybox true` is always added for the start-up share')
    ap.add_argument('--pin', default='', metavar='CPUS', help='comma-separated CPU numbers every measured process runs on')
    ap.add_argument('--record-options', default='', metavar='OPTS', help='options given to `record`')
    ap.add_argument('--work', action='store_true',
                    help='also split each process\'s CPU (--stats: HostWorkAccount) and model the ratios with the '
                         'execution\'s noise taken out (builds without the account are measured as before)')
    a = ap.parse_args()
    cpus = {int(c) for c in a.pin.split(',')} if a.pin else None
    work = tempfile.mkdtemp(prefix='revirt-reccost-')
    out = os.path.join(ROOT, 'guests', 'out')
    subprocess.run(['bash', os.path.join(ROOT, 'guests', 'build.sh'), out, 'bench.musl', 'memtouch.musl'], check=True)
    known = bench_guests(work, out)
    names = a.guests.split(',') + ['true']
    guests = {}
    for g in names:
        if g not in known:
            ap.error(f'unknown guest {g!r} (known: {", ".join(known)})')
        label, make = known[g]
        guests[label] = make()
    time.sleep(2.5)  # a file is read by reference only when it changed more than 2 s before the recorder started
    builds = {'this': a.root}
    if a.baseline_root:
        builds = {'before': a.baseline_root, 'this': a.root}
    cmds = {}
    working = {b for b, r in builds.items() if a.work and accounts(r)}
    for b, r in builds.items():
        primary = os.path.join(r, 'primary/bin/Release/net10.0/primary.dll')
        backup = os.path.join(r, 'backup/bin/Release/net10.0/backup.dll')
        stats = ['--stats'] if b in working else []
        for i, (g, args) in enumerate(guests.items()):
            log = os.path.join(work, f'{b}-{i}.rvlog')
            cmds[(b, g)] = {'run': ['dotnet', primary, 'run'] + stats + ['--'] + args,
                            'record': ['dotnet', primary, 'record', '--log', log] + stats + shlex.split(a.record_options) + ['--'] + args,
                            'replay': ['dotnet', backup, 'replay', '--log', log] + stats}
    instructions = {}
    for (b, g), c in cmds.items():
        measured(c['record'], cpus)
        _, verdict = measured(c['replay'], cpus)
        m = re.search(r'faithful: .*?(\d+) instructions', verdict)
        if not m:
            raise RuntimeError(f'{g}: the warm-up replay was not faithful: {verdict[-400:]}')
        instructions[g] = int(m.group(1))
    start_load = load()
    res = {(b, g, m): [] for b in builds for g in guests for m in MODES}
    works = {(b, g, m): [] for b in working for g in guests for m in MODES}
    order = list(guests)
    for i in range(a.rounds):
        modes = MODES[i % 3:] + MODES[:i % 3]
        bs = list(builds) if i % 2 == 0 else list(builds)[::-1]
        for g in order[i % len(order):] + order[:i % len(order)]:
            for b in bs:
                for m in modes:
                    cpu, text = measured(cmds[(b, g)][m], cpus)
                    res[(b, g, m)].append(cpu)
                    if b in working:
                        w = work_of(text)
                        if w is None:
                            raise RuntimeError(f'{g} {m} ({b}): no host work line in: {text[-400:]}')
                        w['total_ms'] = 1000 * cpu
                        works[(b, g, m)].append(w)
        print(f'round {i + 1}/{a.rounds}, load {load()}', flush=True)
    true = known['true'][0]
    print(f'\n{a.rounds} rounds, load at start {start_load}, at end {load()}, pinned to {a.pin or "no CPU"}; '
          f'ratios: median of the rounds (interquartile range) [95 % interval of the median]; ✓: upper end <= {GOAL}\n')
    print('| guest | build | run CPU s | record | replay | record/run | replay/record | record - run ms | replay - record ms '
          '| steady record/run | steady replay/record | steady M instr/s (run) |')
    print('|---|---|---:|---:|---:|---|---|---:|---:|---|---|---:|')
    med = statistics.median
    for g in guests:
        for b in builds:
            run, rec, rep = (res[(b, g, m)] for m in MODES)
            row = (f'| {g} | {b} | {med(run):.3f} | {med(rec):.3f} | {med(rep):.3f} | '
                   f'{fmt_ratio([r / u for r, u in zip(rec, run)])} | {fmt_ratio([p / r for p, r in zip(rep, rec)])} | '
                   f'{1000 * med([r - u for r, u in zip(rec, run)]):.1f} | {1000 * med([p - r for p, r in zip(rep, rec)]):.1f} | ')
            if g == true:
                row += '(start-up) | | |'
            else:
                trun, trec, trep = (res[(b, true, m)] for m in MODES)
                steady_run = [u - t for u, t in zip(run, trun)]
                steady_rec = [r - t for r, t in zip(rec, trec)]
                steady_rep = [p - t for p, t in zip(rep, trep)]
                row += (f'{fmt_ratio([r / u for r, u in zip(steady_rec, steady_run)])} | '
                        f'{fmt_ratio([p / r for p, r in zip(steady_rep, steady_rec)])} | '
                        f'{instructions[g] / med(steady_run) / 1e6:.0f} |')
            print(row)
    if working:
        work_table(guests, [b for b in builds if b in working], works, true)
    shutil.rmtree(work, ignore_errors=True)


def work_table(guests, builds, works, true):
    """The ratios modelled from each process's parts other than the guest's execution (see the module's doc)."""
    med = statistics.median
    print('\nWork: ratios with the execution taken as run\'s median (E); X = process CPU - execution of each process; '
          'X\' = syscalls, stops and other threads only (start-up and exit out); ms: medians of the rounds\' paired differences '
          '[95 % interval]; counts: run / record / replay (last round)\n')
    print('| guest | build | E ms | record/run | replay/record | steady record/run | steady replay/record | '
          'record - run: start, syscalls+stops, other threads, end ms | replay - record: start, syscalls+stops, other, end ms | '
          'execution record/run, replay/record (noisy check) | instructions | blocks compiled | interpreted | syscalls | '
          'host JIT methods in the run |')
    print('|---|---|---:|---|---|---|---|---|---|---|---|---|---|---|---|')

    def parts(w):
        return (w['start_ms'], w['kernel_ms'], w['other_threads_ms'], w['total_ms'] - w['end_ms'])

    def diffs(hi, lo):
        out = []
        for k in range(4):
            d = [parts(h)[k] - parts(l)[k] for h, l in zip(hi, lo)]
            lo_, hi_ = median_ci(d)
            out.append(f'{med(d):.1f} [{lo_:.1f}, {hi_:.1f}]')
        return ', '.join(out)

    def counts(field, ws):
        return ' / '.join(f'{w[-1][field]:.0f}' for w in ws)

    for g in guests:
        for b in builds:
            run, rec, rep = (works[(b, g, m)] for m in MODES)
            e = med([w['execution_ms'] for w in run])
            x = {m: [w['total_ms'] - w['execution_ms'] for w in works[(b, g, m)]] for m in MODES}
            xs = {m: [w['kernel_ms'] + w['other_threads_ms'] for w in works[(b, g, m)]] for m in MODES}
            steady = g != true
            row = (f'| {g} | {b} | {e:.1f} | '
                   f'{fmt_ratio([(e + r) / (e + u) for r, u in zip(x["record"], x["run"])])} | '
                   f'{fmt_ratio([(e + p) / (e + r) for p, r in zip(x["replay"], x["record"])])} | '
                   + (f'{fmt_ratio([(e + r) / (e + u) for r, u in zip(xs["record"], xs["run"])])} | '
                      f'{fmt_ratio([(e + p) / (e + r) for p, r in zip(xs["replay"], xs["record"])])} | ' if steady else '(start-up) | | ')
                   + f'{diffs(rec, run)} | {diffs(rep, rec)} | '
                   f'{med([r["execution_ms"] / u["execution_ms"] for r, u in zip(rec, run)]):.3f}, '
                   f'{med([p["execution_ms"] / r["execution_ms"] for p, r in zip(rep, rec)]):.3f} | '
                   f'{counts("instructions", (run, rec, rep))} | {counts("blocks_compiled", (run, rec, rep))} | '
                   f'{counts("interpreted", (run, rec, rep))} | {counts("syscalls", (run, rec, rep))} | '
                   f'{counts("jit_methods", (run, rec, rep))} |')
            print(row)


if __name__ == '__main__':
    main()
