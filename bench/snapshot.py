#!/usr/bin/env python3
"""Snapshot re-protection benchmark (loopback): the guest's pause for a snapshot and the snapshot's transfer, for a
memtouch guest that touched MIB MiB (issue 12's target: a pause of at most 50 ms with 64 MiB touched), and the longest
gap in the guest's output the world saw from the backup's death until after the join.

    python3 bench/snapshot.py [--sizes 64,512] [--runs 3] [--timeout S] [--baseline DIR]

Each run starts a backup and a standby (`backup listen --shared-storage`, so the standby takes a snapshot) and a
`primary protect --standby` running `memtouch STOP MIB 10`; once the guest prints, the backup is SIGKILLed, the
primary re-protects itself with the standby by snapshot, and the figures come from the replicas' named events
(`--events`): primary `snapshot-taken` (pauseMs, pauseCpuMs, pages), `snapshot-sent` (bytes, encodeMs, sendMs), `standby-holds`
(transferMs), `reprotected` (mode); standby `snapshot-restored` (bytes, receiveMs, restoreMs); and each replica's peak
resident memory (VmHWM in /proc/PID/status, read once the standby holds the snapshot: the guest's memory, the runtime
and whatever the snapshot's transfer held; in parentheses, the same just before the join). MB/s is the snapshot's bytes over the transfer (join point to
standby-holds: the handshake, the capture, encoding, sending, restoring and verifying). CPU ms is each replica's CPU
time (all threads, /proc/PID/stat) from the backup's kill to standby-holds: what the join cost, which on a loaded
host decides its speed more than the pipelining does. Prints medians.

--baseline DIR runs the same rows with another build too (DIR is a repository checkout with its Release build, e.g.
/check/base, or its tests/bin/Release/net10.0 directory), alternating run by run with this one, and prints both
tables and the ratios of the medians (baseline / this build).

Needs the Release build (dotnet build ReVirt.sln -c Release: tests/bin/Release/net10.0/{primary,backup}.dll);
builds guests/out/memtouch.musl with guests/build.sh. Every process it starts is killed before it returns; every
wait is bounded.
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, threading, time, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'tests', 'bin', 'Release', 'net10.0')


def build_dlls(where):
    """(primary.dll, backup.dll) of a build: a checkout with its Release build, or the directory holding them."""
    d = where if os.path.exists(os.path.join(where, 'primary.dll')) else os.path.join(where, 'tests', 'bin', 'Release', 'net10.0')
    return os.path.join(d, 'primary.dll'), os.path.join(d, 'backup.dll')


PRIMARY, BACKUP = build_dlls(BIN)
GUEST_DIR = os.path.join(ROOT, 'guests', 'out')
MEMTOUCH = os.path.join(GUEST_DIR, 'memtouch.musl')


class Replica:
    """A replica process writing its named events (one JSON object per line) to a file of its own."""
    def __init__(self, args, tmp, name, timed=False):
        """timed: the replica's stdout is read through a pipe and each read's time kept (output_times), as the world
        would see it arrive."""
        self.events_path = os.path.join(tmp, name + '.events')
        self.out = open(os.path.join(tmp, name + '.stdout'), 'wb')
        self.err = open(os.path.join(tmp, name + '.stderr'), 'wb')
        at = args.index('--') if '--' in args else len(args)  # options go before the guest's command line
        self.p = subprocess.Popen(['dotnet'] + args[:at] + ['--events', self.events_path] + args[at:], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if timed else self.out, stderr=self.err, start_new_session=True)
        self.name = name
        self.output_times = []
        self._pump = None
        if timed:
            self._pump = threading.Thread(target=self._read_stdout, daemon=True)
            self._pump.start()

    def _read_stdout(self):
        fd = self.p.stdout.fileno()
        while True:
            b = os.read(fd, 65536)
            if not b:
                return
            self.out.write(b)
            self.out.flush()
            self.output_times.append(time.monotonic())

    def events(self):
        try:
            with open(self.events_path) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for l in lines:
            try:
                out.append(json.loads(l))
            except ValueError:
                pass  # a line still being written
        return out

    def wait_event(self, name, deadline, count=1):
        """The count-th event NAME, waiting until deadline (time.monotonic()); raises naming what it waited for."""
        while True:
            hits = [e for e in self.events() if e.get('event') == name]
            if len(hits) >= count:
                return hits[count - 1]
            if self.p.poll() is not None and len([e for e in self.events() if e.get('event') == name]) < count:
                raise RuntimeError(f'{self.name} exited ({self.p.returncode}) without event {name}: {self.stderr_tail()}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'{self.name}: no event {name} in time: {self.stderr_tail()}')
            time.sleep(0.02)

    def stderr_tail(self):
        self.err.flush()
        with open(self.err.name, 'rb') as f:
            return f.read()[-800:].decode(errors='replace')

    def stdout_lines(self):
        self.out.flush()
        with open(self.out.name, 'rb') as f:
            return f.read().count(b'\n')

    def kill(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        if self._pump is not None:
            self._pump.join(timeout=10)
        self.out.close()
        self.err.close()


def peak_mib(pid):
    """The process's peak resident memory so far (VmHWM), MiB; None when it cannot be read."""
    try:
        with open(f'/proc/{pid}/status') as f:
            for l in f:
                if l.startswith('VmHWM:'):
                    return int(l.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_ms(pid):
    """The process's CPU time so far (user + system, all threads), ms; None when it cannot be read."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


def listen(tmp, name, arbiter, backup):
    r = Replica([backup, 'listen', '--listen', 'http://127.0.0.1:0', '--insecure-no-auth', '--shared-storage',
                 '--arbiter', arbiter, '--timeout-ms', str(REPLICA_TIMEOUT_MS)], tmp, name)
    return r, r.wait_event('listening', time.monotonic() + 60)['url']


REPLICA_TIMEOUT_MS = 2000


def one_run(mib, timeout, dlls):
    """One protected memtouch guest of MIB MiB whose backup dies; returns the figures of its snapshot join."""
    primary, backup = dlls
    tmp = tempfile.mkdtemp(prefix='revirt-snapbench-')
    arbiter, stop = os.path.join(tmp, 'arbiter.lock'), os.path.join(tmp, 'stop')
    procs = []
    try:
        deadline = time.monotonic() + timeout
        b, url = listen(tmp, 'backup', arbiter, backup); procs.append(b)
        s, surl = listen(tmp, 'standby', arbiter, backup); procs.append(s)
        p = Replica([primary, 'protect', '--backup', url, '--standby', surl, '--standby-retry-ms', '200', '--arbiter', arbiter,
                     '--timeout-ms', str(REPLICA_TIMEOUT_MS), '--checkpoint-interval', '2000000', '--', MEMTOUCH, stop, str(mib), '10'], tmp, 'primary', timed=True)
        procs.append(p)
        p.wait_event('protected', deadline)
        while p.stdout_lines() < 20:  # the guest has touched its memory and runs
            if p.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'the guest did not print 20 lines: {p.stderr_tail()}')
            time.sleep(0.05)
        cpu0 = cpu_ms(p.p.pid), cpu_ms(s.p.pid)
        before = peak_mib(p.p.pid), peak_mib(s.p.pid)
        killed_at = time.monotonic()
        b.kill()
        again = p.wait_event('reprotected', deadline)
        if again.get('mode') != 'snapshot':
            raise RuntimeError(f're-protected by {again.get("mode")}, not by snapshot')
        taken = p.wait_event('snapshot-taken', deadline)
        restored = s.wait_event('snapshot-restored', deadline)
        sent = p.wait_event('snapshot-sent', deadline)
        holds = p.wait_event('standby-holds', deadline)
        # the world's longest wait for output from the backup's death until the guest printed after the join (the
        # standby holds its join point): the whole transfer when output is held from the hello to the acknowledgement
        held_seen = time.monotonic()
        while not any(t > held_seen for t in p.output_times) and time.monotonic() < deadline:
            time.sleep(0.01)
        ts = [t for t in list(p.output_times) if t >= killed_at]
        end = next((i for i, t in enumerate(ts) if t > held_seen), len(ts) - 1)
        gap = max((ts[i] - ts[i - 1] for i in range(1, end + 1)), default=None)
        peaks = peak_mib(p.p.pid), peak_mib(s.p.pid)
        cpu1 = cpu_ms(p.p.pid), cpu_ms(s.p.pid)
        cpu = [b - a if a is not None and b is not None else None for a, b in zip(cpu0, cpu1)]
        refused = [e for e in s.events() if e.get('event') == 'snapshot-refused']
        if refused:
            raise RuntimeError(f'standby refused a snapshot: {refused[0].get("reason")}')
        open(stop, 'wb').close()
        for r in (p, s):
            try:
                r.p.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TimeoutError(f'{r.name} did not exit after the stop file')
        if p.p.returncode != 0 or s.p.returncode != 0:
            raise RuntimeError(f'exit codes primary {p.p.returncode} standby {s.p.returncode}: {p.stderr_tail()} {s.stderr_tail()}')
        return {
            'pauseMs': taken['pauseMs'], 'pauseCpuMs': taken.get('pauseCpuMs'), 'pages': taken['pages'],
            'bytes': restored['bytes'], 'encodeMs': sent.get('encodeMs'), 'sendMs': sent.get('sendMs'),
            'receiveMs': restored['receiveMs'], 'restoreMs': restored['restoreMs'], 'transferMs': holds['transferMs'],
            'mbPerS': restored['bytes'] / 1e6 / (holds['transferMs'] / 1e3), 'primaryPeakMiB': peaks[0], 'standbyPeakMiB': peaks[1],
            'primaryCpuMs': cpu[0], 'standbyCpuMs': cpu[1], 'primaryPeakBeforeMiB': before[0], 'standbyPeakBeforeMiB': before[1],
            'outputGapMs': gap * 1000 if gap is not None else None,
        }
    finally:
        for r in reversed(procs):
            r.kill()
        for f in os.listdir(tmp):
            os.remove(os.path.join(tmp, f))
        os.rmdir(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sizes', default='64,512', help='MiB the guest touches, comma-separated (default 64,512)')
    ap.add_argument('--runs', type=int, default=3, help='runs per size; medians are printed (default 3)')
    ap.add_argument('--timeout', type=float, default=300, help='seconds one run may take before it is abandoned (default 300)')
    ap.add_argument('--replica-timeout-ms', type=int, default=2000,
                    help="the replicas' --timeout-ms: how long they wait for each other before one is declared lost (default 2000; "
                         'raise it on a heavily loaded machine)')
    ap.add_argument('--baseline', metavar='DIR',
                    help='also run another build (a checkout with its Release build, e.g. /check/base, or its tests/bin/Release/net10.0), '
                         'alternating run by run with this one; prints both tables and the ratios baseline/this')
    a = ap.parse_args()
    global REPLICA_TIMEOUT_MS
    REPLICA_TIMEOUT_MS = a.replica_timeout_ms
    builds = [('this build', (PRIMARY, BACKUP))]
    if a.baseline:
        builds.insert(0, (f'baseline {a.baseline}', build_dlls(a.baseline)))
    for _, dlls in builds:
        for f in dlls:
            if not os.path.exists(f):
                sys.exit(f'{f} missing: dotnet build ReVirt.sln -c Release')
    subprocess.run(['bash', os.path.join(ROOT, 'guests', 'build.sh'), GUEST_DIR, 'memtouch.musl'], check=True, timeout=300)
    print(f'# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}, '
          f'{os.cpu_count()} CPUs', flush=True)
    cols = ['pauseMs', 'pauseCpuMs', 'pages', 'bytes', 'encodeMs', 'sendMs', 'receiveMs', 'restoreMs', 'transferMs', 'mbPerS', 'primaryPeakMiB', 'standbyPeakMiB',
            'primaryCpuMs', 'standbyCpuMs', 'primaryPeakBeforeMiB', 'standbyPeakBeforeMiB', 'outputGapMs']
    rows = {name: [] for name, _ in builds}
    for mib in [int(x) for x in a.sizes.split(',')]:
        got = {name: [] for name, _ in builds}
        errors = {name: [] for name, _ in builds}
        for i in range(a.runs):
            for name, dlls in builds:  # alternating, so both builds see the same load
                try:
                    r = one_run(mib, a.timeout, dlls)
                    got[name].append(r)
                    print(f'{name}: {mib} MiB run {i + 1}: ' + ', '.join(f'{k} {r[k]:.1f}' if isinstance(r[k], float) else f'{k} {r[k]}' for k in cols), flush=True)
                except Exception as e:
                    errors[name].append(str(e))
                    print(f'{name}: {mib} MiB run {i + 1} failed: {e}', flush=True)
        for name, _ in builds:
            vals = {k: [float(r[k]) for r in got[name] if r[k] is not None] for k in cols}
            med = {k: statistics.median(v) if v else None for k, v in vals.items()}
            rows[name].append((mib, len(got[name]), med, errors[name]))
    print(f'# load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')

    def f(v, fmt):
        return format(v, fmt) if v is not None else '-'
    for name, _ in builds:
        print(f'\n{name}:\n')
        print('| guest MiB | runs ok | pause ms | pause CPU ms | pages | snapshot MiB | encode ms | send ms | standby receive ms | standby restore ms '
              '| transfer ms (join to standby-holds) | MB/s | primary peak MiB (before the join) | standby peak MiB (before) | primary CPU ms | standby CPU ms '
              '| longest output gap ms (backup killed to output after standby-holds) |')
        print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
        for mib, ok, m, errs in rows[name]:
            if not ok:
                print(f'| {mib} | 0/{a.runs} | failed: {errs[0][:200]} ||||||||||||||')
                continue
            print(f'| {mib} | {ok}/{a.runs} | {m["pauseMs"]:.1f} | {f(m["pauseCpuMs"], ".1f")} | {m["pages"]:.0f} | {m["bytes"] / 2**20:.1f} | {m["encodeMs"]:.0f} '
                  f'| {m["sendMs"]:.0f} | {m["receiveMs"]:.0f} | {m["restoreMs"]:.0f} | {m["transferMs"]:.0f} | {m["mbPerS"]:.0f} '
                  f'| {f(m["primaryPeakMiB"], ".0f")} ({f(m["primaryPeakBeforeMiB"], ".0f")}) | {f(m["standbyPeakMiB"], ".0f")} ({f(m["standbyPeakBeforeMiB"], ".0f")}) '
                  f'| {f(m["primaryCpuMs"], ".0f")} | {f(m["standbyCpuMs"], ".0f")} | {f(m["outputGapMs"], ".0f")} |')
    if len(builds) == 2:
        print('\nratios of the medians, baseline / this build (transfer: > 1 is faster; peaks: > 1 is less memory):\n')
        print('| guest MiB | pause | transfer | primary peak | standby peak | primary CPU | standby CPU |')
        print('|---:|---:|---:|---:|---:|---:|---:|')
        for (mib, ok0, m0, _), (_, ok1, m1, _) in zip(rows[builds[0][0]], rows[builds[1][0]]):
            if not ok0 or not ok1:
                continue
            r = {k: (m0[k] / m1[k] if m0[k] and m1[k] else None) for k in ('pauseMs', 'transferMs', 'primaryPeakMiB', 'standbyPeakMiB', 'primaryCpuMs', 'standbyCpuMs')}
            print(f'| {mib} | {f(r["pauseMs"], ".2f")} | {f(r["transferMs"], ".2f")} | {f(r["primaryPeakMiB"], ".2f")} | {f(r["standbyPeakMiB"], ".2f")} '
                  f'| {f(r["primaryCpuMs"], ".2f")} | {f(r["standbyCpuMs"], ".2f")} |')
    return 0 if all(ok == a.runs for name in rows for _, ok, _, _ in rows[name]) else 1


if __name__ == '__main__':
    sys.exit(main())
