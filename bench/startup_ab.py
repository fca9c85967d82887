#!/usr/bin/env python3
"""Start-up A/B: alternating runs of several command lines, CPU (user + system of the child, from wait4's rusage) and
wall medians, each configuration's ratio to the first one's CPU. For short commands (`busybox true` under ReVirt,
qemu-user, an empty .NET program), where 3-7 runs of bench/run.py are within noise.

    python3 bench/startup_ab.py RUNS LABEL 'COMMAND' [LABEL 'COMMAND' ...]

e.g. python3 bench/startup_ab.py 21 base "dotnet /check/base/primary/bin/Release/net10.0/primary.dll run -- /bin/busybox true" \\
                                     this "dotnet primary/bin/Release/net10.0/primary.dll run -- /bin/busybox true" \\
                                     qemu "qemu-x86_64 /bin/busybox true"
Each round runs every configuration once, in reverse order every other round; the load average is printed before and
after the series.
"""
import os, shlex, statistics, subprocess, sys, time


def main():
    if len(sys.argv) < 4 or len(sys.argv) % 2 != 0:
        sys.exit(__doc__)
    runs = int(sys.argv[1])
    configs = [(sys.argv[i], shlex.split(sys.argv[i + 1])) for i in range(2, len(sys.argv), 2)]
    cpu = {label: [] for label, _ in configs}
    wall = {label: [] for label, _ in configs}
    load_before = open('/proc/loadavg').read().split()[:3]
    for r in range(runs):
        for label, cmd in (configs if r % 2 == 0 else configs[::-1]):
            t0 = time.perf_counter()
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, ru = os.wait4(p.pid, 0)
            wall[label].append(time.perf_counter() - t0)
            if status != 0:
                sys.exit(f'{label}: {" ".join(cmd)} ended with wait status {status}')
            cpu[label].append(ru.ru_utime + ru.ru_stime)
    print(f'load {" ".join(load_before)} -> {" ".join(open("/proc/loadavg").read().split()[:3])}, {runs} runs each')
    first = statistics.median(cpu[configs[0][0]])
    for label, _ in configs:
        c = statistics.median(cpu[label])
        print(f'{label:24s} CPU {c:.4f} s  wall {statistics.median(wall[label]):.4f} s  CPU ratio {c / first:.3f}')


if __name__ == '__main__':
    main()
