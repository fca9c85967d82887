#!/usr/bin/env python3
"""ReVirt benchmark: runs the same CPU-bound guests natively, under qemu-user (qemu-x86_64) and under ReVirt
(`primary run`, `primary record`, `backup replay`), side by side in one run, and writes medians and ratios to
docs/PERFORMANCE.md.

    python3 bench/run.py [--runs N] [--quick]

Needs: gcc, musl-gcc, busybox-static, qemu-user (apt-get install -y musl-tools busybox-static qemu-user).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, stdin_path=None):
    with open(stdin_path or os.devnull, 'rb') as fin:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.decode()[-500:]}")
    return dt, p.stderr.decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=5, help='runs per configuration (median is reported)')
    ap.add_argument('--quick', action='store_true', help='smaller inputs, 3 runs')
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'PERFORMANCE.md'))
    a = ap.parse_args()
    runs = 3 if a.quick else a.runs

    work = tempfile.mkdtemp(prefix='revirt-bench-')
    guests = os.path.join(ROOT, 'guests', 'out')
    sh(['bash', os.path.join(ROOT, 'guests', 'build.sh'), guests])
    print('building ReVirt (Release)...', flush=True)
    sh(['dotnet', 'build', os.path.join(ROOT, 'primary'), '-c', 'Release', '-v', 'q', '-nologo'], stdout=subprocess.DEVNULL)
    sh(['dotnet', 'build', os.path.join(ROOT, 'backup'), '-c', 'Release', '-v', 'q', '-nologo'], stdout=subprocess.DEVNULL)
    primary = os.path.join(ROOT, 'primary', 'bin', 'Release', 'net10.0', 'primary.dll')
    backup = os.path.join(ROOT, 'backup', 'bin', 'Release', 'net10.0', 'backup.dll')
    qemu = shutil.which('qemu-x86_64')

    # inputs: a few MB of mixed data (compressible text plus binary)
    size = 1 << 20 if a.quick else 4 << 20
    data = os.path.join(work, 'data.bin')
    with open('/bin/busybox', 'rb') as f:
        bb = f.read()
    with open(data, 'wb') as f:
        n = 0
        i = 0
        while n < size:
            chunk = bb[:size - n] if i % 2 == 0 else (b'the quick brown fox %d jumps over the lazy dog\n' % i) * 200
            f.write(chunk[:size - n]); n += len(chunk[:size - n]); i += 1

    gzsize = size // 4
    gzdata = os.path.join(work, 'gz.bin')
    with open(data, 'rb') as f, open(gzdata, 'wb') as g:
        g.write(f.read(gzsize))
    workloads = [
        ('bench.musl 10 (own C: hash loop, matmul, sieve)', [os.path.join(guests, 'bench.musl'), '10'], None),
        ('bench.glibc 10 (same program, glibc)', [os.path.join(guests, 'bench.glibc'), '10'], None),
        (f'busybox gzip -c ({gzsize >> 10} KB)', ['/bin/busybox', 'gzip', '-c', gzdata], None),
        (f'busybox md5sum ({size >> 20} MB)', ['/bin/busybox', 'md5sum', data], None),
    ]
    rows = []
    for name, cmd, stdin in workloads:
        print(f'== {name}', flush=True)
        res = {}
        icount = None
        logbytes = None
        for r in range(runs):
            res.setdefault('native', []).append(timed(cmd, stdin)[0])
            if qemu:
                res.setdefault('qemu', []).append(timed([qemu] + cmd, stdin)[0])
            dt, err = timed(['dotnet', primary, 'run', '--stats', '--'] + cmd, stdin)
            res.setdefault('run', []).append(dt)
            m = re.search(r'primary: (\d+) guest instructions', err)
            if m: icount = int(m.group(1))
            log = os.path.join(work, 'bench.rvlog')
            dt, err = timed(['dotnet', primary, 'record', '--log', log, '--'] + cmd, stdin)
            res.setdefault('record', []).append(dt)
            logbytes = os.path.getsize(log)
            dt, err = timed(['dotnet', backup, 'replay', '--log', log])
            res.setdefault('replay', []).append(dt)
            print(f'   run {r + 1}/{runs}: ' + ', '.join(f'{k} {v[-1]:.3f}s' for k, v in res.items()), flush=True)
        med = {k: statistics.median(v) for k, v in res.items()}
        rows.append((name, med, icount, logbytes))

    # startup cost: an empty program
    empty = [os.path.join(guests, 'exitcode.musl'), '0']
    st = statistics.median(timed(['dotnet', primary, 'run', '--'] + empty)[0] for _ in range(runs))

    now = datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC')
    cpu = ''
    try:
        cpu = [l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')][0]
    except Exception:
        pass
    out = []
    out.append('# ReVirt performance\n')
    out.append(f'Measured {now} on {cpu} ({os.cpu_count()} cores), a shared and noisy machine: medians of {runs} runs, side by side in one run.\n')
    out.append('Command: `python3 bench/run.py' + (' --quick' if a.quick else f' --runs {runs}') + '`\n')
    out.append('## Interpreter speed: native vs qemu-user vs ReVirt\n')
    out.append('| workload | native s | qemu-user s | ReVirt run s | ReVirt/native | ReVirt/qemu | guest instructions | M instr/s |')
    out.append('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, med, ic, lb in rows:
        q = med.get('qemu')
        ips = f'{ic / med["run"] / 1e6:.1f}' if ic else '?'
        out.append(f'| {name} | {med["native"]:.3f} | {q:.3f} | {med["run"]:.3f} | {med["run"] / med["native"]:.0f}x | {med["run"] / q:.1f}x | {ic or "?"} | {ips} |'
                   if q else f'| {name} | {med["native"]:.3f} | n/a | {med["run"]:.3f} | {med["run"] / med["native"]:.0f}x | n/a | {ic or "?"} | {ips} |')
    out.append(f'\nReVirt times include .NET start-up and JIT: an empty guest takes {st:.3f} s.\n')
    out.append('## Record / replay\n')
    out.append('| workload | run s | record s | record/run | replay s | replay/record | log bytes | log bytes per guest second |')
    out.append('|---|---:|---:|---:|---:|---:|---:|---:|')
    for name, med, ic, lb in rows:
        out.append(f'| {name} | {med["run"]:.3f} | {med["record"]:.3f} | {med["record"] / med["run"]:.3f} | {med["replay"]:.3f} | {med["replay"] / med["record"]:.3f} | {lb} | {lb / med["record"]:.0f} |')
    out.append('')
    body = '\n'.join(out) + '\n'
    notes_path = os.path.join(ROOT, 'docs', 'PERFORMANCE-notes.md')
    if os.path.exists(notes_path):
        body += '\n' + open(notes_path).read()
    with open(a.out, 'w') as f:
        f.write(body)
    print(body)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
