#!/usr/bin/env python3
"""Snapshot re-protection benchmark (loopback): the guest's pause for a snapshot and the snapshot's transfer, for a
memtouch guest that touched MIB MiB (issue 12's target: a pause of at most 50 ms with 64 MiB touched).

    python3 bench/snapshot.py [--sizes 64,512] [--runs 3] [--timeout S]

Each run starts a backup and a standby (`backup listen --shared-storage`, so the standby takes a snapshot) and a
`primary protect --standby` running `memtouch STOP MIB 10`; once the guest prints, the backup is SIGKILLed, the
primary re-protects itself with the standby by snapshot, and the figures come from the replicas' named events
(`--events`): primary `snapshot-taken` (pauseMs, pauseCpuMs, pages), `snapshot-sent` (bytes, encodeMs, sendMs), `standby-holds`
(transferMs), `reprotected` (mode); standby `snapshot-restored` (bytes, receiveMs, restoreMs). Prints medians.

Needs the Release build (dotnet build ReVirt.sln -c Release: tests/bin/Release/net10.0/{primary,backup}.dll);
builds guests/out/memtouch.musl with guests/build.sh. Every process it starts is killed before it returns; every
wait is bounded.
"""
import argparse, json, os, signal, statistics, subprocess, sys, tempfile, time, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'tests', 'bin', 'Release', 'net10.0')
PRIMARY, BACKUP = os.path.join(BIN, 'primary.dll'), os.path.join(BIN, 'backup.dll')
GUEST_DIR = os.path.join(ROOT, 'guests', 'out')
MEMTOUCH = os.path.join(GUEST_DIR, 'memtouch.musl')


class Replica:
    """A replica process writing its named events (one JSON object per line) to a file of its own."""
    def __init__(self, args, tmp, name):
        self.events_path = os.path.join(tmp, name + '.events')
        self.out = open(os.path.join(tmp, name + '.stdout'), 'wb')
        self.err = open(os.path.join(tmp, name + '.stderr'), 'wb')
        at = args.index('--') if '--' in args else len(args)  # options go before the guest's command line
        self.p = subprocess.Popen(['dotnet'] + args[:at] + ['--events', self.events_path] + args[at:], stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, start_new_session=True)
        self.name = name

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
        self.out.close()
        self.err.close()


def listen(tmp, name, arbiter):
    r = Replica([BACKUP, 'listen', '--listen', 'http://127.0.0.1:0', '--insecure-no-auth', '--shared-storage',
                 '--arbiter', arbiter, '--timeout-ms', str(REPLICA_TIMEOUT_MS)], tmp, name)
    return r, r.wait_event('listening', time.monotonic() + 60)['url']


REPLICA_TIMEOUT_MS = 2000


def one_run(mib, timeout):
    """One protected memtouch guest of MIB MiB whose backup dies; returns the figures of its snapshot join."""
    tmp = tempfile.mkdtemp(prefix='revirt-snapbench-')
    arbiter, stop = os.path.join(tmp, 'arbiter.lock'), os.path.join(tmp, 'stop')
    procs = []
    try:
        deadline = time.monotonic() + timeout
        b, url = listen(tmp, 'backup', arbiter); procs.append(b)
        s, surl = listen(tmp, 'standby', arbiter); procs.append(s)
        p = Replica([PRIMARY, 'protect', '--backup', url, '--standby', surl, '--standby-retry-ms', '200', '--arbiter', arbiter,
                     '--timeout-ms', str(REPLICA_TIMEOUT_MS), '--checkpoint-interval', '2000000', '--', MEMTOUCH, stop, str(mib), '10'], tmp, 'primary')
        procs.append(p)
        p.wait_event('protected', deadline)
        while p.stdout_lines() < 20:  # the guest has touched its memory and runs
            if p.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'the guest did not print 20 lines: {p.stderr_tail()}')
            time.sleep(0.05)
        b.kill()
        again = p.wait_event('reprotected', deadline)
        if again.get('mode') != 'snapshot':
            raise RuntimeError(f're-protected by {again.get("mode")}, not by snapshot')
        taken = p.wait_event('snapshot-taken', deadline)
        restored = s.wait_event('snapshot-restored', deadline)
        sent = p.wait_event('snapshot-sent', deadline)
        holds = p.wait_event('standby-holds', deadline)
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
    a = ap.parse_args()
    global REPLICA_TIMEOUT_MS
    REPLICA_TIMEOUT_MS = a.replica_timeout_ms
    for f in (PRIMARY, BACKUP):
        if not os.path.exists(f):
            sys.exit(f'{f} missing: dotnet build ReVirt.sln -c Release')
    subprocess.run(['bash', os.path.join(ROOT, 'guests', 'build.sh'), GUEST_DIR, 'memtouch.musl'], check=True, timeout=300)
    print(f'# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load average {" ".join(f"{x:.2f}" for x in os.getloadavg())}, '
          f'{os.cpu_count()} CPUs', flush=True)
    cols = ['pauseMs', 'pauseCpuMs', 'pages', 'bytes', 'encodeMs', 'sendMs', 'receiveMs', 'restoreMs', 'transferMs']
    rows = []
    for mib in [int(x) for x in a.sizes.split(',')]:
        got, errors = [], []
        for i in range(a.runs):
            try:
                r = one_run(mib, a.timeout)
                got.append(r)
                print(f'{mib} MiB run {i + 1}: ' + ', '.join(f'{k} {r[k]}' for k in cols), flush=True)
            except Exception as e:
                errors.append(str(e))
                print(f'{mib} MiB run {i + 1} failed: {e}', flush=True)
        vals = {k: [float(r[k]) for r in got if r[k] is not None] for k in cols}
        med = {k: statistics.median(v) if v else None for k, v in vals.items()}
        rows.append((mib, len(got), med, errors))
    print(f'# load average after: {" ".join(f"{x:.2f}" for x in os.getloadavg())}')
    print('\n| guest MiB | runs ok | pause ms | pause CPU ms | pages | snapshot MiB | encode ms | send ms | standby receive ms | standby restore ms | transfer ms (join to standby-holds) |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for mib, ok, m, errors in rows:
        if not ok:
            print(f'| {mib} | 0/{a.runs} | failed: {errors[0][:200]} ||||||||')
            continue
        cpu = f'{m["pauseCpuMs"]:.1f}' if m["pauseCpuMs"] is not None else '-'
        print(f'| {mib} | {ok}/{a.runs} | {m["pauseMs"]:.1f} | {cpu} | {m["pages"]:.0f} | {m["bytes"] / 2**20:.1f} | {m["encodeMs"]:.0f} | {m["sendMs"]:.0f} '
              f'| {m["receiveMs"]:.0f} | {m["restoreMs"]:.0f} | {m["transferMs"]:.0f} |')
    return 0 if all(ok == a.runs for _, ok, _, _ in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
