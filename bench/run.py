#!/usr/bin/env python3
"""ReVirt benchmark: runs the same CPU-bound guests natively, under qemu-user (qemu-x86_64) and under ReVirt
(`primary run`, `primary record`, `backup replay`), side by side in one run, and writes medians and ratios to
docs/PERFORMANCE.md.

    python3 bench/run.py [--runs N] [--quick] [--baseline OLD/primary.dll] [--only NAME] [--aot] [--no-record]

Workloads (issue 11): busybox sha256sum 8 MB, gzip 4 MB, bzip2 2 MB, md5sum 16 MB, the bench guest,
`busybox true` for start-up, and (issue 9) busybox sh loops of 200 and 1,000 fork+exec+wait of `busybox true`
and forks of a guest with 64 MiB touched (guests/src/forkbig.c). ReVirt runs
in its default tier (interpret, compile hot blocks) and forced to the interpreter (`--tier Interpreter`). Reports
CPU seconds (robust on a loaded machine) and wall seconds, M guest instructions per CPU second, blocks compiled,
compile time, the share of instructions run compiled, peak host memory, the ratio to qemu-user per row, and
record/run and replay/record ratios. --aot also publishes revirt-run (run/, `primary run` compiled ahead of time with
NativeAOT: no JIT at start, interpreter only; about a minute and a half of compilation) and adds its column.
Whenever the `busybox true` start-up row is measured, revirt-run is published too (incremental when it is current)
and a start-up table sets `dotnet primary.dll run` and `revirt-run` (the fast start for short guests) beside
qemu-user over at least 21 alternating runs; --no-aot-startup leaves it out.

Needs: gcc, musl-gcc, busybox-static, qemu-user (apt-get install -y musl-tools busybox-static qemu-user).
"""
import argparse, os, re, shutil, statistics, subprocess, sys, tempfile, time, datetime

LOAD_AT_START = []
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


NAN = float('nan')  # a configuration left out (--no-interpreter)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, stdin_path=None):
    """Runs cmd; returns (wall seconds, CPU seconds (user + system of the child), stderr, peak RSS in MB)."""
    with open(stdin_path or os.devnull, 'rb') as fin, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=fin, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors='replace')
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {text[-500:]}")
    return dt, ru.ru_utime + ru.ru_stime, text, ru.ru_maxrss / 1024


STARTUP_ROW = 'busybox true (start-up)'
STARTUP_RUNS = 21  # a 0.02-0.1 s process: fewer runs leave a ratio within noise on this machine


def startup_rows(qemu, primary, aot, bb, runs):
    """The start-up table: qemu-user, `dotnet primary.dll run` and revirt-run on `busybox true`, alternating in each
    round (the order reversed every other round), CPU and wall medians and each one's ratio to qemu-user."""
    configs = [('qemu-user', [qemu, bb, 'true']),
               ('`dotnet primary.dll run` (JIT host)', ['dotnet', primary, 'run', '--', bb, 'true']),
               ('`revirt-run` (NativeAOT: run/bin/aot/revirt-run)', [aot, '--', bb, 'true'])]
    print(f'== start-up table ({runs} alternating runs)', flush=True)
    cpu, wall = {k: [] for k, _ in configs}, {k: [] for k, _ in configs}
    for r in range(runs):
        for key, cmd in (configs if r % 2 == 0 else configs[::-1]):
            dt, ct, _, _ = timed(cmd)
            cpu[key].append(ct)
            wall[key].append(dt)
    q = statistics.median(cpu['qemu-user'])
    out = ['\n## Start-up: `busybox true` under qemu-user, `primary run` and `revirt-run` (medians)\n',
           f'{runs} rounds, each running the three once, in reverse order every other round. For short guests and scripts '
           'revirt-run is the fast start (README); `primary run` pays the .NET runtime\'s JIT-host start-up.\n',
           '| command | CPU s | wall s | CPU / qemu-user |', '|---|---:|---:|---:|']
    for key, _ in configs:
        c = statistics.median(cpu[key])
        out.append(f'| {key} | {c:.4f} | {statistics.median(wall[key]):.4f} | {c / q:.1f}x |')
    return out


def make_input(path, size):
    """Mixed data: busybox's own bytes (binary) alternating with repetitive text, so compressors have work of both kinds."""
    with open('/bin/busybox', 'rb') as f:
        bb = f.read()
    with open(path, 'wb') as f:
        n = i = 0
        while n < size:
            chunk = bb if i % 2 == 0 else (b'the quick brown fox %d jumps over the lazy dog\n' % i) * 200
            chunk = chunk[:size - n]
            f.write(chunk); n += len(chunk); i += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--runs', type=int, default=3, help='runs per configuration (median is reported)')
    ap.add_argument('--quick', action='store_true', help='inputs a quarter of the size')
    ap.add_argument('--baseline', help='primary.dll of an earlier build, run side by side as "ReVirt before"')
    ap.add_argument('--only', action='append', help='run only the workloads whose name contains this (repeatable)')
    ap.add_argument('--aot', action='store_true', help='also publish and run revirt-run (NativeAOT, interpreter only) side by side')
    ap.add_argument('--no-record', action='store_true', help='leave out the record and replay configurations')
    ap.add_argument('--no-aot-startup', action='store_true', help='leave out the start-up table of revirt-run beside `primary run` and qemu-user')
    ap.add_argument('--no-interpreter', action='store_true', help='leave out the interpreter-only configuration')
    ap.add_argument('--background-ab', action='store_true',
                    help='also run this build with --background-compile (the default tier compiling on a thread of its own) '
                         'and report it beside the default (compiling on the guest thread), CPU and wall seconds')
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'PERFORMANCE.md'))
    a = ap.parse_args()
    runs = a.runs
    scale = 4 if a.quick else 1

    global LOAD_AT_START
    LOAD_AT_START = open('/proc/loadavg').read().split()[:3]
    work = tempfile.mkdtemp(prefix='revirt-bench-')
    guests = os.path.join(ROOT, 'guests', 'out')
    sh(['bash', os.path.join(ROOT, 'guests', 'build.sh'), guests])
    print('building ReVirt (Release)...', flush=True)
    sh(['dotnet', 'build', os.path.join(ROOT, 'primary'), '-c', 'Release', '-v', 'q', '-nologo'], stdout=subprocess.DEVNULL)
    sh(['dotnet', 'build', os.path.join(ROOT, 'backup'), '-c', 'Release', '-v', 'q', '-nologo'], stdout=subprocess.DEVNULL)
    primary = os.path.join(ROOT, 'primary', 'bin', 'Release', 'net10.0', 'primary.dll')
    backup = os.path.join(ROOT, 'backup', 'bin', 'Release', 'net10.0', 'backup.dll')
    qemu = shutil.which('qemu-x86_64')
    aot = aot_binary = None
    startup_table = not a.no_aot_startup and qemu is not None and (not a.only or any(o in STARTUP_ROW for o in a.only))
    if a.aot or startup_table:
        print('publishing revirt-run (NativeAOT)...', flush=True)
        aot_dir = os.path.join(ROOT, 'run', 'bin', 'aot')
        sh(['dotnet', 'publish', os.path.join(ROOT, 'run'), '-r', 'linux-x64', '-c', 'Release', '-v', 'q', '-nologo', '-o', aot_dir], stdout=subprocess.DEVNULL)
        aot_binary = os.path.join(aot_dir, 'revirt-run')
        if a.aot: aot = aot_binary

    inputs = {}
    for name, mb in (('sha', 8), ('gzip', 4), ('bzip2', 2), ('md5', 16)):
        inputs[name] = os.path.join(work, f'{name}.bin')
        make_input(inputs[name], (mb << 20) // scale)
    bb = '/bin/busybox'
    workloads = [
        (f'busybox sha256sum ({8 // scale} MB)', [bb, 'sha256sum', inputs['sha']]),
        (f'busybox gzip -c ({4 // scale} MB)', [bb, 'gzip', '-c', inputs['gzip']]),
        (f'busybox bzip2 -c ({2 / scale:g} MB)', [bb, 'bzip2', '-c', inputs['bzip2']]),
        (f'busybox md5sum ({16 // scale} MB)', [bb, 'md5sum', inputs['md5']]),
        (f'bench.musl {10 // scale} (own C: hash loop, matmul, sieve)', [os.path.join(guests, 'bench.musl'), str(10 // scale)]),
        (STARTUP_ROW, [bb, 'true']),
        ('busybox echo (start-up)', [bb, 'echo', 'hello']),
        # a short script: the shell, a pipeline of three busybox applets (fork + exec each), a loop
        ('busybox sh script (start-up)', [bb, 'sh', '-c', 'for i in 1 2 3 4 5; do echo line $i; done | sort -r | head -n 2']),
        # process trees: a shell loop that forks, execs and waits for a static program 200 times
        ('busybox sh: 200 x fork+exec+wait of busybox true', [bb, 'sh', '-c', f'i=0; while [ $i -lt 200 ]; do {bb} true; i=$((i + 1)); done']),
        # the issue's own figure: 1,000 of them (--only 1000)
        ('busybox sh: 1000 x fork+exec+wait of busybox true', [bb, 'sh', '-c', f'i=0; while [ $i -lt 1000 ]; do {bb} true; i=$((i + 1)); done']),
        # fork of a guest with 64 MiB touched (--only forkbig): the difference of the two rows is 100 forks' cost
        ('forkbig: 64 MiB touched, no fork', [os.path.join(guests, 'forkbig.musl'), '64', '0']),
        ('forkbig: 64 MiB touched, 100 x fork+exit+wait', [os.path.join(guests, 'forkbig.musl'), '64', '100']),
    ]
    if a.only:
        workloads = [w for w in workloads if any(o in w[0] for o in a.only)]
    configs = [('native', lambda cmd: cmd)]
    if qemu:
        configs.append(('qemu', lambda cmd: [qemu] + cmd))
    if a.baseline:
        # with --stats as this build's run (the same reporting cost), for its blocks compiled and compile time
        configs.append(('before', lambda cmd: ['dotnet', a.baseline, 'run', '--stats', '--'] + cmd))
    if not a.no_interpreter:
        configs.append(('interp', lambda cmd: ['dotnet', primary, 'run', '--tier', 'Interpreter', '--'] + cmd))
    if a.background_ab:
        configs.append(('bg', lambda cmd: ['dotnet', primary, 'run', '--stats', '--background-compile', '--'] + cmd))
    configs.append(('run', lambda cmd: ['dotnet', primary, 'run', '--stats', '--'] + cmd))
    if aot:
        # interpreter only (no hand-off), then as users run it: handing long guests to primary's JIT host
        configs.append(('aot', lambda cmd: [aot, '--hand-off-after', '0', '--'] + cmd))
        configs.append(('handoff', lambda cmd: [aot, '--'] + cmd))
    log = os.path.join(work, 'bench.rvlog')
    if not a.no_record:
        configs.append(('record', lambda cmd: ['dotnet', primary, 'record', '--log', log, '--'] + cmd))
        configs.append(('replay', lambda cmd: ['dotnet', backup, 'replay', '--log', log]))

    rows = []
    for name, cmd in workloads:
        print(f'== {name}', flush=True)
        wall, cpu = {}, {}
        icount = logbytes = None
        tier = {}
        for r in range(runs):
            for key, wrap in configs:
                dt, ct, err, rss = timed(wrap(cmd))
                wall.setdefault(key, []).append(dt)
                cpu.setdefault(key, []).append(ct)
                m = re.search(r'primary: (\d+) guest instructions', err)
                if key == 'run' and m: icount = int(m.group(1))
                t = re.search(r'tier \w+: (\d+) blocks compiled in (\d+) ms, (\d+) of (\d+) instructions run compiled \(([\d.]+) %\)', err)
                if key == 'run' and t:
                    tier.update({'blocks': int(t.group(1)), 'ms': int(t.group(2)), 'share': float(t.group(5))})
                if key in ('run', 'before') and t:
                    # blocks compiled, and the compiling threads' CPU ms (builds from 2026-12-02 on; wall ms before)
                    cc = re.search(r'compile CPU ([\d.]+) ms', err)
                    tier.setdefault('compile', {}).setdefault(key, []).append((int(t.group(1)), float(cc.group(1)) if cc else NAN))
                if key in ('run', 'bg') and t:
                    tier.setdefault('ab', {}).setdefault(key, []).append((int(t.group(2)), float(t.group(5))))
                    r2 = re.search(r'(\d+) regions, ([\d.]+) ms per region', err)
                    if r2: tier.setdefault('regions', {}).setdefault(key, []).append((int(r2.group(1)), float(r2.group(2))))
                if key == 'run': tier.setdefault('rss', []).append(rss)
                if key == 'record': logbytes = os.path.getsize(log)
            print(f'   run {r + 1}/{runs}: ' + ', '.join(f'{k} {wall[k][-1]:.2f}s/{cpu[k][-1]:.2f}cpu' for k, _ in configs), flush=True)
        if 'rss' in tier: tier['rss'] = max(tier['rss'])
        for key, v in tier.get('compile', {}).items():
            tier['compile'][key] = (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
        rows.append((name, {k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()}, icount, logbytes, tier))

    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    cpuname = ''
    try:
        cpuname = [l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')][0]
    except Exception:
        pass
    load = open('/proc/loadavg').read().split()[:3]
    load_start = ' '.join(LOAD_AT_START)
    has_before = any('before' in w for _, w, _, _, _, _ in rows)
    has_aot = any('aot' in w for _, w, _, _, _, _ in rows)
    out = ['# ReVirt performance\n']
    out.append(f'Measured {now} on {cpuname} ({os.cpu_count()} cores), a shared machine (load average {load_start} at the start, {" ".join(load)} at the end: other builds and tests were running): '
               f'medians of {runs} runs, every configuration side by side in each run, so the ratios hold although '
               'absolute times are inflated by the load. CPU seconds (user + system of the process) are less '
               'disturbed by the load than wall seconds and are the primary figure.\n')
    out.append('Command: `python3 bench/run.py' + (' --quick' if a.quick else '') + f' --runs {runs}' +
               (' --baseline <earlier primary.dll>' if a.baseline else '') + (' --aot' if a.aot else '') +
               (' --no-record' if a.no_record else '') + ''.join(f' --only "{o}"' for o in a.only or []) + '`\n')
    out.append('## Native vs qemu-user vs ReVirt (CPU seconds, medians)\n')
    out.append('"interpreter" is `primary run --tier Interpreter`, "default" is `primary run` (interpret, compile blocks that ran '
               '4096 times, SSE-heavy blocks later); blocks compiled, compile time (wall ms), share of instructions run compiled and '
               'peak RSS are of the default tier; compile CPU ms is the compiling threads\' CPU time in region compilations (IL '
               'emission and the runtime\'s JIT; "nan" for a build that does not report it).'
               + (' "revirt-run interpreter" is the NativeAOT-compiled `run` with `--hand-off-after 0` (interpreter only); '
                  '"revirt-run" is it as users run it: interpreted, and handed to `primary`\'s JIT host in the same process after '
                  '20 M guest instructions.' if has_aot else '') + '\n')
    hdr = ('| workload | native | qemu-user |' + (' ReVirt before |' if has_before else '') +
           ' ReVirt interpreter | ReVirt default |' + (' revirt-run interpreter | revirt-run |' if has_aot else '') + ' default/qemu | interpreter/qemu |' +
           (' before/qemu |' if has_before else '') + (' revirt-run interpreter/qemu | revirt-run/qemu |' if has_aot else '') +
           ' default/native | guest instructions | M instr/s interpreter | M instr/s default | blocks compiled | compile ms | run compiled | peak RSS MB |'
           + (' default/before CPU | blocks compiled before | compile CPU ms default / before |' if has_before else ' compile CPU ms |'))
    out.append(hdr)
    out.append('|---' * (hdr.count('|') - 1) + '|')
    for name, w, c, ic, lb, t in rows:
        q = c.get('qemu')
        cells = [name, f'{c["native"]:.3f}', f'{q:.3f}' if q else 'n/a']
        if has_before: cells.append(f'{c["before"]:.3f}')
        cells += [f'{c.get("interp", NAN):.3f}', f'{c["run"]:.3f}']
        if has_aot: cells += [f'{c["aot"]:.3f}', f'{c["handoff"]:.3f}']
        cells.append(f'{c["run"] / q:.1f}x' if q else 'n/a')
        cells.append(f'{c.get("interp", NAN) / q:.1f}x' if q else 'n/a')
        if has_before: cells.append(f'{c["before"] / q:.1f}x' if q else 'n/a')
        if has_aot: cells += [f'{c["aot"] / q:.1f}x' if q else 'n/a', f'**{c["handoff"] / q:.1f}x**' if q else 'n/a']
        cells.append(f'{c["run"] / max(c["native"], 1e-3):.0f}x')
        cells.append(str(ic or '?'))
        cells.append(f'{ic / c.get("interp", NAN) / 1e6:.1f}' if ic else '?')
        cells.append(f'{ic / c["run"] / 1e6:.1f}' if ic else '?')
        cells += [str(t.get('blocks', '?')), str(t.get('ms', '?')), f'{t["share"]:.1f} %' if 'share' in t else '?', f'{t.get("rss", 0):.0f}']
        comp = t.get('compile', {})
        run_cpu = f'{comp["run"][1]:.1f}' if 'run' in comp else '?'
        if has_before:
            before = comp.get('before')
            cells += [f'**{c["run"] / c["before"]:.3f}**', f'{before[0]:.0f}' if before else '?',
                      f'{run_cpu} / ' + (f'{before[1]:.1f}' if before else '?')]
        else:
            cells.append(run_cpu)
        out.append('| ' + ' | '.join(cells) + ' |')
    out.append('\n## The same runs in wall seconds (medians)\n')
    hdr = '| workload | native | qemu-user |' + (' ReVirt before |' if has_before else '') + ' ReVirt interpreter | ReVirt default |' + (' revirt-run interpreter | revirt-run |' if has_aot else '') + ' default/qemu |'
    out.append(hdr)
    out.append('|---' * (hdr.count('|') - 1) + '|')
    for name, w, c, ic, lb, t in rows:
        q = w.get('qemu')
        cells = [name, f'{w["native"]:.3f}', f'{q:.3f}' if q else 'n/a']
        if has_before: cells.append(f'{w["before"]:.3f}')
        cells += [f'{w.get("interp", NAN):.3f}', f'{w["run"]:.3f}'] + ([f'{w["aot"]:.3f}', f'{w["handoff"]:.3f}'] if has_aot else []) + [f'{w["run"] / q:.1f}x' if q else 'n/a']
        out.append('| ' + ' | '.join(cells) + ' |')
    if not a.no_record:
        out.append('\n## Record / replay (CPU seconds, medians)\n')
        out.append('| workload | run | record | record/run | replay | replay/record | log bytes |')
        out.append('|---|---:|---:|---:|---:|---:|---:|')
        for name, w, c, ic, lb, t in rows:
            out.append(f'| {name} | {c["run"]:.3f} | {c["record"]:.3f} | {c["record"] / c["run"]:.3f} | {c["replay"]:.3f} | {c["replay"] / c["record"]:.3f} | {lb} |')
    if a.background_ab:
        out.append('\n## Compiling in the background vs on the guest thread (medians)\n')
        out.append('"background" is `primary run --background-compile` (hot regions compiled on a thread of its own while the guest '
                   'interprets them), "sync" is `primary run` (the guest waits for each compilation)' +
                   (', "before" the baseline build.' if has_before else '.') +
                   ' Compile ms: the regions published; share: instructions run compiled.\n')
        hdr = ('| workload |' + (' CPU before |' if has_before else '') + ' CPU sync | CPU background | background/sync CPU |' +
               (' wall before |' if has_before else '') + ' wall sync | wall background | background/sync wall | regions sync/background | ms per region sync/background | share sync/background |')
        out.append(hdr)
        out.append('|---' * (hdr.count('|') - 1) + '|')
        for name, w, c, ic, lb, t in rows:
            ab = t.get('ab', {})
            reg = t.get('regions', {})
            med = lambda k, i, src: statistics.median(x[i] for x in src[k]) if k in src and src[k] else NAN
            cells = [name] + ([f'{c["before"]:.3f}'] if has_before else []) + [f'{c["run"]:.3f}', f'{c["bg"]:.3f}', f'{c["bg"] / c["run"]:.3f}']
            cells += ([f'{w["before"]:.3f}'] if has_before else []) + [f'{w["run"]:.3f}', f'{w["bg"]:.3f}', f'**{w["bg"] / w["run"]:.3f}**']
            cells += [f'{med("run", 0, reg):.0f} / {med("bg", 0, reg):.0f}', f'{med("run", 1, reg):.2f} / {med("bg", 1, reg):.2f}',
                      f'{med("run", 1, ab):.1f} / {med("bg", 1, ab):.1f} %']
            out.append('| ' + ' | '.join(cells) + ' |')
    if startup_table:
        out += startup_rows(qemu, primary, aot_binary, bb, max(runs, STARTUP_RUNS))
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
