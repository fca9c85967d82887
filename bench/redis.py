#!/usr/bin/env python3
"""Debian's redis-server under Debian's redis-benchmark: native, `primary run` and `primary protect` (with a
`backup listen` on loopback) side by side, alternating, medians of requests/s and of p50/p99 latency. Prints a
dated Markdown section; --doc puts it at the top of docs/PERFORMANCE-redis.md.

    python3 bench/redis.py [--runs N] [--requests N] [--clients N] [--warmup N] [--baseline-root DIR] [--doc]

Each server first serves an untimed warm-up pass (--warmup requests of every test, default --requests): the VM
compiles redis's hot code on first use (on both replicas under `protect`), and the first test measured on a cold
server pays for all of it (redis-benchmark runs SET first: that is why a cold SET looked 3x worse than GET under
`protect`, docs/PERFORMANCE-redis.md). The warm-up pass's own figures are reported too, as the cold start.
--warmup 0 measures cold servers only. --baseline-root DIR measures an earlier build (a checkout with its Release
build, e.g. /check/base) in the same rounds, `run` and `protect` of both builds alternating.

Needs redis-server and redis-tools (apt-get install redis-server redis-tools) and the tests built
(dotnet build tests -c Release: uses tests/bin/Release/net10.0/{primary,backup}.dll).
"""
import argparse, csv, datetime, io, os, re, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replication import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = ['set', 'get', 'incr', 'lpush']
DOC = os.path.join(ROOT, 'docs', 'PERFORMANCE-redis.md')
# the targets for a protected service (issue 12): throughput and added latency against `primary run`
TARGET_RATIO, TARGET_ADDED_P50_MS, TARGET_ADDED_P99_MS = 0.8, 0.3, 2.0


def binaries(root):
    b = os.path.join(root, 'tests', 'bin', 'Release', 'net10.0')
    return os.path.join(b, 'primary.dll'), os.path.join(b, 'backup.dll')


def redis_args(port):
    return ['/usr/bin/redis-server', '--port', str(port), '--save', '', '--appendonly', 'no', '--bind', '127.0.0.1']


def wait_pong(port, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError('redis-server ended before it answered PING')
        r = subprocess.run(['redis-cli', '-p', str(port), 'ping'], capture_output=True, text=True)
        if r.stdout.strip() == 'PONG':
            return
        time.sleep(0.3)
    raise TimeoutError('no PONG')


def start(mode, root, port):
    """Returns (server, backup or None). mode: native, run or protect; root: the build's checkout (run, protect)."""
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    b = None
    if mode == 'native':
        p = subprocess.Popen(redis_args(port), **quiet)
    else:
        primary, backup = binaries(root)
        if mode == 'run':
            p = subprocess.Popen(['dotnet', primary, 'run', '--'] + redis_args(port), **quiet)
        else:
            b = subprocess.Popen(['dotnet', backup, 'listen', '--listen', 'http://127.0.0.1:0', '--insecure-no-auth', '--shared-storage'],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            url = None
            for line in b.stderr:
                m = re.search(r'listening on (http://127\.0\.0\.1:\d+)', line)
                if m:
                    url = m.group(1)
                    break
            p = subprocess.Popen(['dotnet', primary, 'protect', '--backup', url, '--'] + redis_args(port), **quiet)
    try:
        wait_pong(port, p)
    except (RuntimeError, TimeoutError):
        for q in (p, b):
            if q and q.poll() is None:
                q.kill()
        why = p.stderr.read() if p.poll() is not None else b''
        raise ServerFailed(f'{mode} of {root or "native"} did not answer PING (exit {p.poll()}): ' + (why.decode(errors="replace") if isinstance(why, bytes) else why)[-2000:])
    return p, b


class ServerFailed(Exception):
    """A server that ended or never answered before its benchmark (its stderr's end in the message)."""


def parse_csv(text):
    """redis-benchmark --csv: {test: (requests/s, p50 ms, p99 ms)} for the tests of TESTS it reports."""
    rows = {}
    for r in csv.DictReader(io.StringIO(text)):
        t = r.get('test', '').lower()
        if t in TESTS:
            rows[t] = (float(r['rps']), float(r['p50_latency_ms']), float(r['p99_latency_ms']))
    return rows


def bench(port, requests, clients):
    r = subprocess.run(['redis-benchmark', '-p', str(port), '--csv', '-n', str(requests), '-c', str(clients), '-t', ','.join(TESTS)],
                       capture_output=True, text=True, timeout=1800)
    rows = parse_csv(r.stdout)
    missing = [t for t in TESTS if t not in rows]
    if missing:
        raise RuntimeError(f'redis-benchmark reported no {", ".join(missing)}: {r.stdout[-500:]} {r.stderr[-500:]}')
    return rows


def cpu_s(proc):
    """User + system CPU seconds a running process has used so far (/proc/PID/stat), 0 when it has none."""
    if proc is None:
        return 0.0
    try:
        fields = open(f'/proc/{proc.pid}/stat').read().rpartition(')')[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return 0.0


def measure(mode, root, a, attempts=3):
    """One server: the warm-up pass (the cold figures, or None), the measured pass and the measured pass's CPU per
    request in us (the server's process, and the backup's under `protect`): on a loaded machine CPU per request says
    more than requests/s. A server that fails to start is reported and started again on another port (at most
    `attempts` times)."""
    for attempt in range(attempts):
        port = free_port()
        try:
            p, b = start(mode, root, port)
            break
        except ServerFailed as e:
            print(f'attempt {attempt + 1}: {e}', file=sys.stderr, flush=True)
            if attempt == attempts - 1:
                raise
    try:
        cold = bench(port, a.warmup, a.clients) if a.warmup > 0 else None
        c0 = (cpu_s(p), cpu_s(b))
        warm = bench(port, a.requests, a.clients)
        c1 = (cpu_s(p), cpu_s(b))
        per = 1e6 / (a.requests * len(TESTS))
        cpu = ((c1[0] - c0[0]) * per, (c1[1] - c0[1]) * per)
    finally:
        subprocess.run(['redis-cli', '-p', str(port), 'shutdown', 'nosave'], capture_output=True)
        p.wait(timeout=300)
        if b:
            b.wait(timeout=300)
    return cold, warm, cpu


def medians(results):
    """results: list of {test: (rps, p50, p99)} -> {test: (median rps, median p50, median p99)}."""
    return {t: tuple(statistics.median(r[t][i] for r in results) for i in range(3)) for t in TESTS}


def table(med, configs, title):
    """Markdown rows for one pass: per build, protect/run per test, p50 and p99 of every mode, the added latency."""
    lines = [f'{title}', '',
             '| build | test | native req/s | `run` req/s | `protect` req/s | run / native | **protect / run** | p50 ms native / run / protect | p99 ms native / run / protect | added p50 / p99 ms | targets met |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for build in configs:
        for t in TESTS:
            n, r, p = med['native'][t], med[(build, 'run')][t], med[(build, 'protect')][t]
            ratio, add50, add99 = p[0] / r[0], p[1] - r[1], p[2] - r[2]
            met = ratio >= TARGET_RATIO and add50 <= TARGET_ADDED_P50_MS and add99 <= TARGET_ADDED_P99_MS
            lines.append(f'| {build} | {t.upper()} | {n[0]:.0f} | {r[0]:.0f} | {p[0]:.0f} | {r[0] / n[0]:.3f}x | **{ratio:.2f}x** | '
                         f'{n[1]:.3f} / {r[1]:.3f} / {p[1]:.3f} | {n[2]:.3f} / {r[2]:.3f} / {p[2]:.3f} | {add50:+.3f} / {add99:+.3f} | {"yes" if met else "no"} |')
    return lines + ['']


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--requests', type=int, default=20000)
    ap.add_argument('--clients', type=int, default=50)
    ap.add_argument('--warmup', type=int, default=None, help='requests per test of the untimed first pass (default --requests; 0: none)')
    ap.add_argument('--baseline-root', default='', help='an earlier build measured in the same rounds (e.g. /check/base)')
    ap.add_argument('--doc', action='store_true', help='put the section at the top of docs/PERFORMANCE-redis.md')
    a = ap.parse_args()
    if a.warmup is None:
        a.warmup = a.requests
    builds = {'this': ROOT}
    if a.baseline_root:
        builds['before'] = os.path.abspath(a.baseline_root)
    for name, root in builds.items():
        for f in binaries(root):
            if not os.path.exists(f):
                sys.exit(f'{f} is missing: build {name} first (dotnet build tests/ReVirt.Tests.csproj -c Release)')
    configs = list(builds)
    began, loads = datetime.datetime.now(datetime.timezone.utc), [os.getloadavg()[0]]
    cold, warm, cpus = {}, {}, {}
    for i in range(a.runs):
        # the builds' order turns every round, so neither always runs right after the other
        order = configs if i % 2 == 0 else configs[::-1]
        rounds = [('native', None)] + [(b, m) for b in order for m in ('run', 'protect')]
        for build, mode in rounds:
            key = 'native' if build == 'native' else (build, mode)
            c, w, cpu = measure(mode or 'native', builds.get(build), a)
            warm.setdefault(key, []).append(w)
            cpus.setdefault(key, []).append(cpu)
            if c:
                cold.setdefault(key, []).append(c)
            loads.append(os.getloadavg()[0])
            print(i, key, 'warm', w, 'cold', c, 'cpu us/request', cpu, f'load {loads[-1]:.1f}', flush=True)
    ended = datetime.datetime.now(datetime.timezone.utc)
    cmd = f'python3 bench/redis.py --runs {a.runs} --requests {a.requests} --clients {a.clients} --warmup {a.warmup}' + \
          (f' --baseline-root {a.baseline_root}' if a.baseline_root else '')
    lines = [f'## redis-benchmark, native / `run` / `protect` ({began:%Y-%m-%d %H:%M}-{ended:%H:%M} UTC, LOADED: load average {min(loads):.0f}-{max(loads):.0f})', '',
             f'`{cmd}`, {os.cpu_count()} cores. `redis-benchmark --csv -n {a.requests} -c {a.clients} -t {",".join(TESTS)}` against '
             'Debian\'s redis-server 7 (persistence off): natively, under `primary run`, and under `primary protect` with a '
             '`backup listen` on the same machine (loopback, shared storage). Medians of the runs, modes alternating; '
             '"this" is this checkout' + (f', "before" {a.baseline_root}' if a.baseline_root else '') + f'. Targets (issue 12): protect / run '
             f'>= {TARGET_RATIO}x, added p50 <= {TARGET_ADDED_P50_MS} ms, added p99 <= {TARGET_ADDED_P99_MS} ms.', '']
    lines += table(medians_of(warm), configs, f'Warm servers (measured after an untimed pass of {a.warmup} requests per test):' if a.warmup else 'Cold servers (no warm-up pass):')
    lines += ['CPU per request of the measured pass (us; median of the runs; the server process, and the backup under `protect`):', '',
              '| mode | server us/request | backup us/request | total |', '|---|---|---|---|']
    for key, v in cpus.items():
        srv, bak = statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)
        lines.append(f'| {key if key == "native" else " ".join(key)} | {srv:.1f} | {bak:.1f} | {srv + bak:.1f} |')
    lines.append('')
    if cold:
        lines += table(medians_of(cold), configs, 'Cold start (the warm-up pass itself: the first test, SET, pays for compiling redis\'s hot code, on both replicas under `protect`):')
    text = '\n'.join(lines)
    print(text)
    if a.doc:
        insert_section(DOC, text)


def medians_of(results):
    return {k: medians(v) for k, v in results.items()}


def insert_section(path, section):
    """Puts a dated section right below the file's title (earlier sections stay, newest first)."""
    old = open(path).read() if os.path.exists(path) else '# Debian redis-server in the VM\n'
    title, _, rest = old.partition('\n')
    with open(path, 'w') as f:
        f.write(title + '\n\n' + section.rstrip('\n') + '\n\n' + rest.lstrip('\n'))


if __name__ == '__main__':
    sys.exit(main())
