#!/usr/bin/env python3
"""kvserver (or, with --redis, Debian's redis-server) through the in-VM TCP/IP stack (`--net virtual`) vs through
host sockets (`--net host`), unprotected (`primary run`) and protected (`primary protect` + `backup listen`), and the
failover stall of the virtual network: SIGKILL of the protected primary while 64 connections keep one request each
outstanding. Prints a Markdown section for docs/PERFORMANCE-replication.md.

    python3 bench/vnet.py [--runs N] [--seconds S] [--connections 16,64] [--kills K]
    python3 bench/vnet.py --kills-only --kills K [--compare BIN_DIR]   # stall alone; with another build alternating
    python3 bench/vnet.py --kills-only --kills K --lossy-link [--loss P --duplicate P --reorder P]   # kills through a faulty link
    python3 bench/vnet.py --kills-only --kills K --lossy-link --keep-traces DIR   # and keep each kill's files
    python3 bench/vnettrace.py DIR   # then: what each stall was made of, frame by frame
    python3 bench/vnet.py --redis [--requests N] [--connections 64] [--kills K]   # redis-server; throughput by redis-benchmark
    python3 bench/vnet.py --bulk [--bulk-mb MB] [--loss P] [--runs N] [--kills K]   # a bulk download: SACK on/off, failover
    python3 bench/vnet.py --bulk --upload --bulk-variants rack,norack,before --compare BIN_DIR   # an upload; RACK on/off, another build

With --bulk the guest is guests/src/bulkserver.c and the client bench/bulkclient.py (in the clients' namespace), which
checks every byte against the body it computes itself. Throughput: `primary run --net virtual`, a download of MB
megabytes with a loss of P (each direction, every frame) on the link, put there by bench/lossyrelay.py between the
guest's TAP device and the clients' bridge (the kernel here has no netem); SACK on and off alternate (off:
net.ipv4.tcp_sack 0 in the clients' namespace, so the client's SYN offers none and none is negotiated). Failover: the
same download from a protected guest (no loss), the primary SIGKILLed once a third has arrived; the stall is the
client's longest wait for data. With --upload the client sends (PUT) and the guest reads and checks every byte (it
answers OK or the first bad offset); the stall is then the client's longest wait for its kernel to take more data.
--bulk-variants chooses what the throughput runs alternate: sack (this build, the client's SACK on), nosack (the
client's SACK off), norack (this build with --no-rack: the in-VM sender without RACK-TLP), before (the --compare
build); the kills alternate this build and the --compare build.

With --redis the throughput is Debian's redis-benchmark's (SET and GET, -c CONNECTIONS -n REQUESTS, run inside the
clients' namespace for the virtual network) and the kills load the server with bench/kvload.c speaking RESP (each
connection SETs a key and GETs it back, alternately, so a write acknowledged before the kill is read after it).

Needs root (a network namespace with a bridge and two TAP devices, one per replica, holding the clients), gcc,
and the tests built: dotnet build tests -c Release (tests/bin/Release/net10.0/{primary,backup}.dll) and
guests/out/kvserver.musl (guests/build.sh guests/out). The load is bench/kvload.c (closed loop, one request
outstanding per connection; it exits non-zero when a connection is closed or reset, so a kill run that completes
had no reset). In a kill run the stall is the longest wait of a request in flight at some moment between the kill
and the takeover (they wait for the backup; kvload's trace of every request's send and reply times places them).
The longest request of the whole run is printed too: under load a protected server's tail without any kill reaches
hundreds of ms, which the stall must not be confused with (the figures before 2026-11-30 14:00 were that longest
request).
"""
import argparse, glob, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time, datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, 'tests', 'bin', 'Release', 'net10.0')
PRIMARY, BACKUP = os.path.join(BIN, 'primary.dll'), os.path.join(BIN, 'backup.dll')
KV = os.path.join(ROOT, 'guests', 'out', 'kvserver.musl')
BULK = os.path.join(ROOT, 'guests', 'out', 'bulkserver.musl')
BULKCLIENT = os.path.join(ROOT, 'bench', 'bulkclient.py')
RELAY = os.path.join(ROOT, 'bench', 'lossyrelay.py')
CUTRELAY = os.path.join(ROOT, 'bench', 'cutrelay.py')
KVLOAD = os.path.join(tempfile.gettempdir(), f'revirt-vnet-kvload-{os.getpid()}')
# the clients' network namespace (its name: --netns-prefix and this process's id; TAP devices are made inside it)
NS = f'rvbenchvnet{os.getpid()}'
GUEST_IP, PORT = '10.213.8.2', 7000
NET = ['--net', 'virtual', '--ip', GUEST_IP + '/24', '--netns', NS]


class Server:
    """The guest under test: its command line per network, the line it prints once it listens, the protocol of
    kvload and how to end it."""
    def __init__(self, name, command, ready, ready_on_stdout, protocol, shutdown):
        self.name, self.command, self.ready, self.protocol, self.shutdown = name, command, ready, protocol, shutdown
        self.ready_on_stdout = ready_on_stdout


def _resp(*args):
    return b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a), a) for a in args)


KVSERVER = Server('kvserver', lambda net: [KV, str(PORT)] + ([GUEST_IP] if net == 'virtual' else []),
                  r'kvserver: listening on', False, 'kv', b'SHUTDOWN\n')
REDIS = Server('redis-server', lambda net: ['/usr/bin/redis-server', '--port', str(PORT), '--save', '', '--appendonly', 'no']
               + (['--bind', GUEST_IP, '--protected-mode', 'no'] if net == 'virtual' else ['--bind', '127.0.0.1']),
               r'Ready to accept connections', True, 'resp', _resp(b'SHUTDOWN', b'NOSAVE'))
BULKSERVER = Server('bulkserver', lambda net: [BULK, str(PORT)] + ([GUEST_IP] if net == 'virtual' else []),
                    r'bulkserver: listening on', False, 'bulk', b'SHUTDOWN\n')
SERVER = KVSERVER
THIS = BIN   # the build measured (--this)


def sh(*args):
    subprocess.run(list(args), check=True, capture_output=True)


def make_namespace(rto_min_ms=None, relay=False, relay_clients=False):
    """The clients' namespace; `rto_min_ms`: the minimum retransmission time-out of the clients' route to the guest
    (Linux's default is 200 ms), as a deployment sets it with `ip route ... rto_min`. `relay`: the primary's TAP
    device is not a port of the bridge; a veth pair (vnetr0, vnetr1 on the bridge) is there for bench/lossyrelay.py.
    `relay_clients`: both replicas' TAP devices are ports of the bridge, and the clients' address is on a veth (vnetc0)
    whose peer vnetc1 reaches the bridge only through the relay (vnetc1 <-> vnetg0, vnetg0's peer on the bridge): every frame
    between the clients and either replica crosses it, before and after a takeover (`relay_args`)."""
    sh('ip', 'netns', 'add', NS)
    def i(*a): sh('ip', 'netns', 'exec', NS, 'ip', *a)
    i('link', 'set', 'lo', 'up')
    i('link', 'add', 'vnetbr0', 'type', 'bridge')
    for tap in ('vnetp0', 'vnetb0'):
        i('tuntap', 'add', 'dev', tap, 'mode', 'tap')
        if not (relay and tap == 'vnetp0'):
            i('link', 'set', tap, 'master', 'vnetbr0')
        i('link', 'set', tap, 'up')
    if relay_clients:
        i('link', 'add', 'vnetg0', 'type', 'veth', 'peer', 'name', 'vnetg1')
        i('link', 'set', 'vnetg1', 'master', 'vnetbr0')
        i('link', 'add', 'vnetc1', 'type', 'veth', 'peer', 'name', 'vnetc0')
        for d in ('vnetg0', 'vnetg1', 'vnetc1', 'vnetc0'):
            i('link', 'set', d, 'up')
        i('link', 'set', 'vnetbr0', 'up')
        # one segment per frame: the relay cannot split a segmentation-offload super-frame
        i('link', 'set', 'vnetc0', 'gso_max_segs', '1', 'gso_max_size', '1500')
        i('addr', 'add', '10.213.8.1/24', 'dev', 'vnetc0')
        if rto_min_ms is not None:
            i('route', 'replace', '10.213.8.0/24', 'dev', 'vnetc0', 'proto', 'kernel', 'scope', 'link', 'src', '10.213.8.1', 'rto_min', f'{rto_min_ms}ms')
        return
    if relay:
        i('link', 'add', 'vnetr0', 'type', 'veth', 'peer', 'name', 'vnetr1')
        i('link', 'set', 'vnetr1', 'master', 'vnetbr0')
        for d in ('vnetr0', 'vnetr1'):
            i('link', 'set', d, 'up')
    i('addr', 'add', '10.213.8.1/24', 'dev', 'vnetbr0')
    if relay:
        # the relay copies frames as AF_PACKET sees them and cannot split a segmentation-offload super-frame: the
        # clients' TCP builds one segment per frame on this bridge (an upload's data; a download's ACKs fit anyway)
        i('link', 'set', 'vnetbr0', 'gso_max_segs', '1', 'gso_max_size', '1500')
    i('link', 'set', 'vnetbr0', 'up')
    if rto_min_ms is not None:
        i('route', 'replace', '10.213.8.0/24', 'dev', 'vnetbr0', 'proto', 'kernel', 'scope', 'link', 'src', '10.213.8.1', 'rto_min', f'{rto_min_ms}ms')


# --jit-log DIR: each backup lists the methods it JIT-compiles in DIR/backup-N.txt (the runtime's DOTNET_JitStdOutFile
# and DOTNET_JitDisasmSummary), in the order they were compiled (None: not listed)
JITLOG = None
_jitlogs = 0


class Proc:
    """A replica process whose stderr lines are kept, and its stdout's with `stdout` (a guest that says it is ready
    there; kvserver's stdout, a line per SET, is not read). `jit`: the runtime lists the methods it JIT-compiles there."""
    def __init__(self, args, stdout=False, jit=None):
        env = dict(os.environ, DOTNET_JitStdOutFile=jit, DOTNET_JitDisasmSummary='1') if jit else None
        self.p = subprocess.Popen(['dotnet'] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        for stream in ((self.p.stdout, self.p.stderr) if stdout else (self.p.stderr,)):
            threading.Thread(target=lambda f=stream: [self.lines.append(l.rstrip('\n')) for l in f], daemon=True).start()

    def wait_for(self, pattern, timeout=180):
        t0 = time.time()
        while time.time() - t0 < timeout:
            for l in list(self.lines):
                m = re.search(pattern, l)
                if m:
                    return m
            if self.p.poll() is not None and not any(re.search(pattern, l) for l in self.lines):
                raise RuntimeError(f'exited without /{pattern}/:\n' + '\n'.join(self.lines))
            time.sleep(0.01)
        raise TimeoutError(pattern)


def start(mode, net, lock=None, events=None, bin_dir=BIN, extra_args=(), backup_args=(), relay=None):
    """kvserver under run or protect, on host sockets (loopback) or the virtual interface; returns (primary, backup, address).
    `events`: a file for the backup's JSON-lines events (`--events`); `bin_dir`: the build whose primary.dll and
    backup.dll run; `extra_args`: more options for the primary's guest (e.g. --no-rack, --no-takeover-probe);
    `backup_args`: more options for `backup listen` (e.g. --live-rush-ms 0). `relay`: a list that receives a
    bench/cutrelay.py process put between the replicas (both of the backup's ports; the data link is then TCP), which a
    partition cuts; the primary then waits 20 s for acknowledgements before it asks the arbiter, so that the backup,
    which notices the silence after --primary-silence-ms, asks first (as the partition test does)."""
    b = None
    PRIMARY, BACKUP = os.path.join(bin_dir, 'primary.dll'), os.path.join(bin_dir, 'backup.dll')
    guest = SERVER.command(net)
    netargs = NET + ['--tap', 'vnetp0'] + list(extra_args) if net == 'virtual' else []
    if mode == 'run':
        p = Proc([PRIMARY, 'run'] + netargs + ['--'] + guest, SERVER.ready_on_stdout)
    else:
        extra = ['--arbiter', lock, '--timeout-ms', '2000'] if lock else []
        ev = ['--events', events] if events else []
        hears = ['--hears-primary'] if HEARS and (HEARS == 'both' or os.path.abspath(bin_dir) == os.path.abspath(THIS)) else []
        global _jitlogs
        _jitlogs += 1
        b = Proc(jit=os.path.join(JITLOG, f'backup-{_jitlogs}.txt') if JITLOG else None, args=[BACKUP, 'listen', '--listen', 'http://127.0.0.1:0', '--insecure-no-auth', '--shared-storage', '--tap', 'vnetb0', '--netns', NS] + extra + ev + hears + list(backup_args))
        url = b.wait_for(r'listening on (http://127\.0\.0\.1:\d+)').group(1)
        to = ['--backup', url]
        if relay is not None:
            data_port = listening_event(events)['dataPort']
            r = subprocess.Popen(['chrt', '-r', '1', sys.executable, CUTRELAY, url.rsplit(':', 1)[1], str(data_port)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            relay.append(r)
            grpc_port, relay_data = r.stdout.readline().split()
            to = ['--backup', f'http://127.0.0.1:{grpc_port}', '--backup-data', f'127.0.0.1:{relay_data}']
            extra = extra[:-1] + ['20000']
        p = Proc([PRIMARY, 'protect'] + to + extra + netargs + ['--'] + guest, SERVER.ready_on_stdout)
    try:
        p.wait_for(SERVER.ready)
    except Exception:
        for r in (p, b):
            if r and r.p.poll() is None:
                r.p.kill()
                r.p.wait(timeout=60)
        raise
    return p, b, (GUEST_IP if net == 'virtual' else '127.0.0.1')


def events_of(path):
    """The JSON-lines events a replica wrote to `path` so far (a line being written is left for the next read)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    out = []
    for l in text.split('\n')[:-1]:
        try:
            out.append(json.loads(l))
        except ValueError:
            pass
    return out


def wait_event(path, name, timeout=120):
    """The first event `name` in the events file `path`, waited for up to `timeout` s."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        e = next((e for e in events_of(path) if e['event'] == name), None)
        if e:
            return e
        time.sleep(0.005)
    raise TimeoutError(f'no {name} event within {timeout} s')


def listening_event(path):
    return wait_event(path, 'listening')


def client(net, *args):
    """Runs a client command where the guest's clients are: inside the namespace for the virtual network."""
    return (['ip', 'netns', 'exec', NS] if net == 'virtual' else []) + list(args)


def load(net, addr, conns, seconds, trace=None):
    """kvload's figures; `trace`: a file for its per-request (sent, done) times."""
    out = subprocess.run(client(net, KVLOAD, str(PORT), str(conns), str(seconds), '1', addr, SERVER.protocol, *([trace] if trace else [])),
                         capture_output=True, text=True, timeout=seconds + 300)
    if out.returncode != 0:
        raise RuntimeError('kvload: ' + out.stdout + out.stderr)
    f = out.stdout.split()
    return {f[i]: float(f[i + 1]) for i in range(0, len(f) - 1, 2)}


SHUTDOWN_CLIENT = """
import socket, sys, time
addr, port, request = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode().decode('unicode_escape').encode('latin-1')
t0, stage = time.monotonic(), 'connect'
try:
    s = socket.create_connection((addr, port), timeout=60)
    stage = 'reply'
    s.sendall(request)
    s.recv(16)
except Exception as e:
    sys.exit(f'{stage} failed after {time.monotonic() - t0:.1f} s: {e!r}')
"""


def shutdown(net, addr):
    """Ends the server with its SHUTDOWN request; a failure says whether the connection or the reply did not come."""
    out = subprocess.run(client(net, sys.executable, '-c', SHUTDOWN_CLIENT, addr, str(PORT), SERVER.shutdown.decode('latin-1').encode('unicode_escape').decode()),
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f'SHUTDOWN: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}')


# the load average after each throughput run (a shared machine: the figures are only as quiet as this)
LOADS = []


def alternating(runs, connections, measure, describe, bin_dir=BIN):
    """Every (connections, mode, network) measured `runs` times, modes and networks alternating within each run:
    {key: [measure(net, addr, conns) per run]}; each server is shut down and waited for before the next starts.
    `bin_dir`: the build measured (--this)."""
    res = {}
    for conns in connections:
        for _ in range(runs):
            for mode in ('run', 'protect'):
                for net in ('host', 'virtual'):
                    p, b, addr = start(mode, net, bin_dir=bin_dir)
                    v = measure(net, addr, conns)
                    shutdown(net, addr)
                    p.p.wait(timeout=120)
                    if b:
                        b.p.wait(timeout=120)
                    res.setdefault((conns, mode, net), []).append(v)
                    LOADS.append(os.getloadavg()[0])
                    print(conns, mode, net, describe(v), f'load {LOADS[-1]:.0f}', flush=True)
    return res


def throughput(runs, seconds, connections, bin_dir=BIN):
    """The median run (by rate) per (connections, mode, network), with every run's rate in `rates`."""
    res = alternating(runs, connections, lambda net, addr, conns: load(net, addr, conns, seconds),
                      lambda v: f"{v['rate']:.0f} req/s p50 {v['p50_ms']:.3f} p99 {v['p99_ms']:.3f}", bin_dir)
    return {k: dict(sorted(v, key=lambda x: x['rate'])[len(v) // 2], rates=[x['rate'] for x in v]) for k, v in res.items()}


REDIS_TESTS = ('set', 'get')


def redis_benchmark(net, addr, conns, requests):
    """Debian's redis-benchmark where the clients are; {TEST: {'rate', 'p50_ms'}} for SET and GET."""
    out = subprocess.run(client(net, 'redis-benchmark', '-h', addr, '-p', str(PORT), '-q', '-n', str(requests), '-c', str(conns),
                                '-t', ','.join(REDIS_TESTS)), capture_output=True, text=True, timeout=1800)
    text = out.stdout.replace('\r', '\n')
    res = {}
    for t in REDIS_TESTS:
        m = re.search(rf'^{t.upper()}: ([\d.]+) requests per second, p50=([\d.]+) msec', text, re.M)
        if not m:
            raise RuntimeError('redis-benchmark: ' + text[-2000:] + out.stderr)
        res[t] = {'rate': float(m.group(1)), 'p50_ms': float(m.group(2))}
    return res


def redis_throughput(runs, requests, connections):
    """Medians of redis-benchmark's SET and GET rates per (connections, mode, network); modes and networks alternate."""
    res = alternating(runs, connections, lambda net, addr, conns: redis_benchmark(net, addr, conns, requests),
                      lambda v: ', '.join(f"{t.upper()} {v[t]['rate']:.0f} req/s p50 {v[t]['p50_ms']:.3f}" for t in REDIS_TESTS))
    return {k: {t: sorted((x[t] for x in v), key=lambda y: y['rate'])[len(v) // 2] for t in REDIS_TESTS} for k, v in res.items()}


_runs = 0
# --lossy-link: the relay's arguments for a kill run whose clients reach the guest through it (None: the plain bridge)
LINK = None


# --hears-primary: the primary's TAP port is mirrored to the backup's (make_namespace) and the measured build's backup
# runs with `--hears-primary` (the --compare build's backup only drops what its device heard); 'both' (--compare-hears):
# the --compare build's backup hears too (a build that has the option)
HEARS = False


def mirror_primary_port():
    """Every frame the bridge delivers to the primary's TAP device (vnetp0) is copied to the backup's (vnetb0): a clsact
    egress filter with mirred (this kernel has no prio qdisc or matchall classifier; u32 matching everything)."""
    sh('ip', 'netns', 'exec', NS, 'tc', 'qdisc', 'add', 'dev', 'vnetp0', 'clsact')
    sh('ip', 'netns', 'exec', NS, 'tc', 'filter', 'add', 'dev', 'vnetp0', 'egress', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0',
       'action', 'mirred', 'egress', 'mirror', 'dev', 'vnetb0')


# --keep-traces: a directory where each kill run leaves its files (kvload's trace, the backup's events, the relay's
# trace of every frame, the kill's times) for bench/vnettrace.py (None: removed)
KEEP = None


def start_relay(seed, stats, trace=None):
    """bench/lossyrelay.py between the clients' veth and the replicas' bridge (make_namespace(relay_clients=True));
    `trace`: a file for its line per frame."""
    relay = subprocess.Popen(['ip', 'netns', 'exec', NS, sys.executable, RELAY, 'vnetg0', 'vnetc1', str(LINK['loss']), str(seed),
                              '--duplicate', str(LINK['duplicate']), '--reorder', str(LINK['reorder']), '--stats', stats,
                              # a real-time relay: an ordinary one waited for time slices at load ~100 and held the
                              # takeover's frames ~0.5 s (docs/PERFORMANCE-replication.md, 2026-12-01 23:30-00:00)
                              '--realtime']
                             + (['--trace', trace] if trace else []),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    relay.stdout.readline()
    return relay


def end_pair(p, b, lock):
    """After a kill run: no replica left behind (a leftover backup would hold the TAP device the next run needs) and
    no arbiter file (a takeover leaves the next term's PATH.N beside PATH)."""
    for r in (p, b):
        if r.p.poll() is None:
            r.p.kill()
            r.p.wait(timeout=60)
    for f in glob.glob(glob.escape(lock) + '*'):
        os.remove(f)


def tap_dropped(dev='vnetb0'):
    """The frames the kernel dropped on their way to a TAP device's reader (its queue full: a starved reader), as
    `ip -s link` counts them (tx_dropped: the device transmits towards its reader)."""
    out = subprocess.run(['ip', '-n', NS, '-s', '-j', 'link', 'show', dev], capture_output=True, text=True).stdout
    try:
        return json.loads(out)[0]['stats64']['tx']['dropped']
    except (ValueError, LookupError):
        return float('nan')


def frames_from(dev):
    """Frames the kernel received from a replica's TAP device in the clients' namespace (what the replica sent)."""
    out = subprocess.run(['ip', 'netns', 'exec', NS, 'cat', f'/sys/class/net/{dev}/statistics/rx_packets'], capture_output=True, text=True).stdout
    return int(out) if out.strip() else -1


# --faults: how the primary fails in a kill run (the name `kill` stays for all three: they are measured alike)
FAULTS = {
    'kill': 'SIGKILL of the primary (its data link closes: noticed at once)',
    'freeze': 'SIGSTOP of the primary until the backup took over, then SIGCONT (noticed by its silence on the data link, '
              'after --primary-silence-ms; the old primary is fenced when it wakes)',
    'partition': 'the link between the replicas cut silently by bench/cutrelay.py, both replicas running and on the clients\' '
                 'bridge (noticed by the silence, after --primary-silence-ms; the old primary holds its output unacknowledged '
                 'and is fenced when it asks the arbiter)',
}


def kill_once(i, seconds, bin_dir=BIN, primary_args=(), backup_args=(), label=None, fault='kill'):
    """One protected run whose primary fails mid-load (`fault`: kill, freeze or partition, FAULTS); returns kvload's
    figures and, from the backup's events, when (ms after the fault) it noticed the loss (`lost`), won the arbiter
    (`won`) and had its interface up and announced (`up`); for freeze and partition also the frames the old primary's
    TAP device sent after the takeover (`oldFrames`: the gate must hold every one)."""
    # a lock path of its own per run: the builds alternate with the same kill number, and a takeover leaves the file
    # of its term (PATH.2, ...) beside PATH; a pair started on a path with another pair's terms is not a fresh pair
    # (the arbiter's contract: remove PATH and PATH.* before reusing it), which may be what made one run's clients
    # unable to reach the guest from the start (docs/PERFORMANCE-replication.md, 2026-11-30 16:45)
    global _runs
    _runs += 1
    lock = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-{i}-{_runs}.lock')
    # files of this run alone: a failed run leaves its files behind, and the other build's run of the same kill
    # number must not append to (and read) them
    events = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-{i}-{_runs}.events')
    trace = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-{i}-{_runs}.trace')
    stats = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-{i}-{_runs}.relay')
    frames = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-{i}-{_runs}.frames') if KEEP else None
    relay = start_relay(i, stats, frames) if LINK else None
    dropped_before = tap_dropped()
    cut = [] if fault == 'partition' else None
    try:
        p, b, addr = start('protect', 'virtual', lock, events, bin_dir, primary_args, backup_args, relay=cut)
    except Exception:
        for r in ([relay] if relay else []) + (cut or []):
            r.kill()
            r.wait()
        raise
    result = {}
    try:
        t = threading.Thread(target=lambda: result.update(load('virtual', addr, 64, seconds, trace)))
        t.start()
        # the kill lands once every connection is established and requests flow (kvload's trace has its first lines:
        # it connects all of them before its first request), then a third of the load later: on an overloaded machine
        # a fixed delay could kill while clients were still connecting (their SYN then waits for its 1 s timer, which
        # is no stall of the takeover's) or before any request was in flight
        t0 = time.time()
        while time.time() - t0 < 120 and t.is_alive() and not (os.path.exists(trace) and os.path.getsize(trace) > 0):
            time.sleep(0.01)
        time.sleep(seconds / 3)
        killed_ms = time.time() * 1000
        killed_mono = time.monotonic()  # kvload's trace clock (CLOCK_MONOTONIC, the same in every namespace)
        if fault == 'kill':
            p.p.send_signal(signal.SIGKILL)
        else:
            if fault == 'freeze':
                p.p.send_signal(signal.SIGSTOP)
            else:
                cut[0].send_signal(signal.SIGUSR1)
            wait_event(events, 'took-over')
            at_takeover = frames_from('vnetp0')
            if fault == 'freeze':
                p.p.send_signal(signal.SIGCONT)
        t.join()
        shutdown('virtual', addr)
        b.p.wait(timeout=120)
        if fault != 'kill':
            # the old primary is fenced (it finds the arbiter taken); nothing it sent after the takeover reached the wire
            p.p.wait(timeout=120)
            result['oldFrames'] = frames_from('vnetp0') - at_takeover
            result['oldExit'] = p.p.returncode
    finally:
        if fault == 'freeze' and p.p.poll() is None:
            p.p.send_signal(signal.SIGCONT)
        end_pair(p, b, lock)
        for r in ([relay] if relay else []) + (cut or []):
            r.terminate()
            r.wait(timeout=60)
    if relay:
        with open(stats) as f:
            result['relay'] = json.load(f)
        os.remove(stats)
    if KEEP:
        # the kept files say what the stall was made of (bench/vnettrace.py); the failover's own part is the longest
        # wait of a request the relay dropped none of whose frames, and the guest answers only once the survivor's
        # descriptors are attached
        import vnettrace
        stem = keep_run(i, label or bin_dir, {'killedMono': killed_mono, 'killedUnixMs': killed_ms}, trace, events, frames)
        result['own'], result['attached'] = vnettrace.own_stall(stem)
        if frames and os.path.exists(frames):
            os.remove(frames)
    if result.get('errors'):
        # a wrong reply (a GET that does not return the acknowledged SET, a byte stream out of step) fails the run
        raise RuntimeError(f"kvload: {result['errors']:.0f} wrong replies")
    with open(trace) as f:
        # (sent, answered); a third column, the connection's local port, is for bench/vnettrace.py
        reqs = [tuple(map(float, l.split()[:2])) for l in f if l.strip()]
    os.remove(trace)
    with open(events) as f:
        evs = [json.loads(l) for l in f if l.strip()]
    os.remove(events)
    def at(name, cond=lambda e: True):
        e = next((e for e in evs if e['event'] == name and cond(e)), None)
        return e['unixMs'] - killed_ms if e else float('nan')
    result['tapDropped'] = tap_dropped() - dropped_before
    # with --hears-primary, what the survivor's heard frames came to (this build's `heard-frames` event; absent in a
    # build without it)
    result['heard'] = next((e for e in evs if e['event'] == 'heard-frames'), None)
    result['lost'] = at('primary-lost')
    result['won'] = at('took-over')
    result['up'] = at('takeover-descriptor', lambda e: str(e.get('detail', '')).startswith('virtual interface'))
    # the guest serves again only once the survivor's host descriptors are attached too
    result['attachedAt'] = at('takeover-descriptor', lambda e: str(e.get('detail', '')).startswith('descriptors attached'))
    # the stall: the longest wait of a request in flight at some moment between the kill and the takeover (sent before
    # the interface was up, answered after the kill), not the longest request of the whole run (a protected server's
    # tail without any kill reaches hundreds of ms under load)
    up_mono = killed_mono + (result['up'] if result['up'] == result['up'] else 0) / 1000
    window = up_mono - killed_mono
    result['stall'] = longest_wait(reqs, killed_mono, window)
    # the link's own floor: the same statistic (the longest wait of a request in flight at some moment of a window as
    # long as the kill-to-interface-up one) at points before the kill, in the same run on the same link, with no
    # failover: on a lossy link some of the 64 connections are waiting on their own loss recovery at any moment, and
    # the stall's window catches the longest of those waits just as a floor window does (floor_points)
    load_start = min((s for s, _ in reqs), default=killed_mono)
    points = floor_points(killed_mono, window, load_start)
    result['floor'] = [longest_wait(reqs, t, window, censor=killed_mono) for t in points]
    # and how many requests of the window waited beyond the bound, across the kill and at the same moments before it
    result['over'] = waits_over(reqs, killed_mono, window)
    result['floorOver'] = [waits_over(reqs, t, window, censor=killed_mono) for t in points]
    result['goLive'] = next((e for e in evs if e['event'] == 'go-live'), None)
    # with a standby: the continuation's own steps (a build that emits recording-continued)
    result['continued'] = next((e for e in evs if e['event'] == 'recording-continued'), None)
    result['upIn'], result['attachIn'] = detail_ms(evs)
    # the first reply after the kill that the survivor sent (answered after its interface was up)
    result['first'] = min(((d - killed_mono) * 1000 for s, d in reqs if d > up_mono), default=float('nan'))
    lost = next((e for e in evs if e['event'] == 'primary-lost'), {})
    # the longest silence between the primary's messages before the kill (a build with heartbeats; else absent):
    # the margin against declaring a healthy primary lost
    result['quiet'] = lost.get('longestSilenceMs') or float('nan')
    result['why'] = lost.get('reason', '?')
    # a build that asks the arbiter as it loses the primary announces the address before the drain ends
    result['announced'] = at('announced')
    return result


def longest_wait(reqs, t, window, censor=float('inf')):
    """The stall statistic at moment `t`: the longest wait (ms) of a request in flight at some moment of [t, t+window]
    (answered after t, sent before t+window). `censor`: a wait still going at that moment counts only up to it (a
    floor taken before the kill must not include what the kill added to a wait; it then errs low, never high)."""
    return max(((min(d, censor) - s) * 1000 for s, d in reqs if d > t and s < t + window), default=float('nan'))


def waits_over(reqs, t, window, limit_ms=300, censor=float('inf')):
    """How many requests in flight at some moment of [t, t+window] waited more than `limit_ms` (the issue's bound): the
    longest wait is one connection's, often one whose request the link lost twice; this counts how many clients a
    window's stall reached."""
    return sum(1 for s, d in reqs if d > t and s < t + window and (min(d, censor) - s) * 1000 > limit_ms)


# where the link's floor is taken (kill_once): moments this long before the kill, FLOOR_STEP_S apart, each with its
# whole window before the kill and at least FLOOR_WARMUP_S after the load's first request (a fresh connection's first
# requests wait for the guest's first compilations and the kernel's first RTT estimates). Before 2026-12-02 the floor
# was four moments 0.7-1.6 s before the kill, pooled over the kills: one long wait spanned all four (they are 0.3 s
# apart and the longest waits 0.6-1.2 s), and a moment 1.6 s before the kill was 0.4 s into the load.
FLOOR_BEFORE_S = tuple(round(0.15 * k, 2) for k in range(1, 10))   # 0.15 .. 1.35 s
FLOOR_WARMUP_S = 0.5


def floor_points(killed, window, load_start):
    return [killed - x for x in FLOOR_BEFORE_S if killed - x + window <= killed and killed - x >= load_start + FLOOR_WARMUP_S]


def run_floor(points):
    """A kill's floor: the median of the statistic at its moments before the kill (nan when there are none)."""
    f = [x for x in points if x == x]
    return statistics.median(f) if f else float('nan')


def detail_ms(evs):
    """(interface up in, descriptors attached in) ms, as the survivor's takeover-descriptor details say them (a build
    without the go-live event says them too)."""
    up = att = float('nan')
    for e in evs:
        d = str(e.get('detail', '')) if e['event'] == 'takeover-descriptor' else ''
        m = re.search(r'interface up in (\d+) ms', d)
        if m:
            up = float(m.group(1))
        m = re.search(r'descriptors attached in (\d+) ms', d)
        if m:
            att = float(m.group(1))
    return up, att


def rank(xs, q):
    """The nearest-rank q-quantile of xs (sorted, non-empty): with fewer than 100 values p99 is the largest."""
    return xs[max(0, min(len(xs) - 1, -(-int(q * 1000) * len(xs) // 1000) - 1))]


def floor_words(floors):
    """The link's floor over a build's kills: the same stall statistic at moments before each kill (kill_once)."""
    f = sorted(x for fl in floors for x in fl if x == x)
    if not f:
        return ''
    return (f'the link\'s floor (the same statistic at up to {len(FLOOR_BEFORE_S)} moments 0.15-1.35 s before each kill, no failover): '
            f'p50 {statistics.median(f):.0f} ms, p90 {rank(f, 0.9):.0f}, max {f[-1]:.0f} over {len(f)} moments')


def bound_rows(runs):
    """Per kill (stall, floor, stall - floor, own stall or nan, requests over 300 ms across the kill, the same at the
    moments before it (median)): the floor is the median of the statistic at that kill's moments before it."""
    return [(v['stall'], run_floor(v['floor']), v['stall'] - run_floor(v['floor']), v.get('own', float('nan')), v['over'], run_floor(v['floorOver']))
            for v in runs]


def bound_table(rows_by_build):
    """The bound as a Markdown table: per build, p50/p99/max over its kills of the stall, the link's floor, the stall
    minus the floor and (with --keep-traces) the own stall; then every kill's figures."""
    q = lambda xs: (lambda v: f'{statistics.median(v):.0f} / {rank(v, 0.99):.0f} / {v[-1]:.0f}' if v else 'n/a')(sorted(x for x in xs if x == x))
    out = ['| build | kills | stall p50 / p99 / max ms | floor p50 / p99 / max ms | stall - floor p50 / p99 / max ms | own stall p50 / p99 / max ms | requests > 300 ms across the kill p50 / max | the same before it (floor) p50 / max |',
           '|---|---|---|---|---|---|---|---|']
    for name, rows in rows_by_build:
        if rows:
            o, fo = sorted(r[4] for r in rows), sorted(r[5] for r in rows if r[5] == r[5])
            out.append(f'| {name} | {len(rows)} | {q(r[0] for r in rows)} | {q(r[1] for r in rows)} | {q(r[2] for r in rows)} | {q(r[3] for r in rows)} | '
                       f'{statistics.median(o):.0f} / {o[-1]:.0f} | ' + (f'{statistics.median(fo):.0f} / {fo[-1]:.0f} |' if fo else 'n/a |'))
    for name, rows in rows_by_build:
        if rows:
            out.append(f'\n{name}, per kill (stall/floor/stall-floor[/own] ms): ' + ', '.join(
                f'{a:.0f}/{b:.0f}/{c:+.0f}' + (f'/{d:.0f}' if d == d else '') for a, b, c, d, _, _ in rows))
    return '\n'.join(out)


def golive_words(name, vs):
    """The survivor's go-live steps over a build's kills (medians, max): from the takeover-descriptor details (every
    build) and, where the build emits it, the go-live event's steps."""
    def med(xs):
        xs = sorted(x for x in xs if x is not None and x == x)
        return f'{statistics.median(xs):.1f} (max {xs[-1]:.1f})' if xs else 'n/a'
    words = f'{name}: interface up in {med(v["upIn"] for v in vs)} ms, descriptors attached {med(v["attachIn"] for v in vs)} ms after it'
    g = [v['goLive'] for v in vs if v.get('goLive')]
    if g:
        words += ('; go-live steps (ms after the arbiter\'s grant, medians): recording continued ' + med(e['continuedMs'] for e in g)
                  + ', interface up ' + med(e['interfaceUpMs'] for e in g) + ' (stale frames dropped ' + med(e['nicDropMs'] for e in g)
                  + ', repair built ' + med(e['nicRepairMs'] for e in g) + ', ' + med(e['nicFrames'] for e in g) + ' frames sent in '
                  + med(e['nicSendMs'] for e in g) + '), serving event written ' + med(e['servingMs'] for e in g) + ', descriptors attached '
                  + med(e['attachedMs'] for e in g) + ', timers ' + med(e['timersMs'] for e in g) + ', done ' + med(e['doneMs'] for e in g)
                  + (', of which the replay thread\'s CPU ' + med(e['cpuMs'] for e in g) if all('cpuMs' in e for e in g) else '')
                  + ((', of that compiling (JIT) ' + med(e['jitMs'] for e in g) + ' ms, ' + med(e['jitMethods'] for e in g) + ' methods; prepared before the go-live in '
                      + f"{sum(1 for e in g if e['prepared'])} of {len(g)}") if all('jitMs' in e for e in g) else ''))
    c = [v['continued'] for v in vs if v.get('continued')]
    if c:
        words += ('; the recording continued (ms, medians): log store opened and client built ' + med(e['storeMs'] for e in c) + ', log writer '
                  + med(e['writerMs'] for e in c) + ' (over a log of ' + med(e['prefixBytes'] / 1e6 for e in c) + ' MB; its digest carried from the copy in '
                  + f"{sum(1 for e in c if e['digestCarried'])} of {len(c)}), boundary " + med(e['boundaryMs'] for e in c) + ', StartLive ' + med(e['startLiveMs'] for e in c))
    return words


def keep_run(i, bin_dir, meta, *files):
    """Copies a kill run's files to --keep-traces DIR/kill{i}-{build}-{run}.* with the kill's times (the build: the
    tree of a tests/bin/Release/net10.0 directory, e.g. `base` for /check/base/tests/bin/Release/net10.0, else the
    directory's own name, or a --kill-variants name); returns their common stem."""
    import shutil
    d = os.path.abspath(bin_dir)
    tree = os.path.abspath(os.path.join(d, '..', '..', '..', '..'))
    build = (os.path.basename(tree) if d == os.path.join(tree, 'tests', 'bin', 'Release', 'net10.0') else os.path.basename(d)) if os.path.isdir(d) else bin_dir
    stem = os.path.join(KEEP, f'kill{i}-{build}-{_runs}')
    for f in files:
        if f and os.path.exists(f):
            shutil.copy(f, stem + os.path.splitext(f)[1])
    with open(stem + '.json', 'w') as f:
        json.dump(meta, f)
    return stem


def bulk_get(mb, seed, sack=True, progress=None, started=None, put=False):
    """bench/bulkclient.py's figures for a download (with `put`, an upload) of `mb` MB from (to) the guest (in the
    clients' namespace); `sack`: net.ipv4.tcp_sack of the namespace for this connection; `started(proc)` is called
    once it runs and `progress` bytes have moved."""
    sh('ip', 'netns', 'exec', NS, 'sysctl', '-q', '-w', f'net.ipv4.tcp_sack={1 if sack else 0}')
    args = client('virtual', sys.executable, BULKCLIENT, GUEST_IP, str(PORT), str(int(mb * 1e6)), str(seed)) + (['--put'] if put else [])
    if progress is not None:
        args += ['--progress', str(progress)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if progress is not None:
            line = p.stdout.readline()
            if line.startswith('progress') and started:
                started(p)
        out, err = p.communicate(timeout=900)
    except Exception:
        p.kill()
        p.wait()
        raise
    last = [l for l in out.splitlines() if l.startswith('{')]
    if not last:
        raise RuntimeError('bulkclient: ' + out + err)
    return json.loads(last[-1])


# --bulk-variants: what each throughput variant runs (label, client SACK, this build or the --compare one, extra options)
BULK_VARIANTS = {
    'sack': ('SACK on (negotiated; RACK-TLP on)', True, 'this', []),
    'nosack': ('SACK off (tcp_sack 0)', False, 'this', []),
    'norack': ('RACK-TLP off (--no-rack)', True, 'this', ['--no-rack']),
    'before': ('the --compare build', True, 'compare', []),
}


def bulk_throughput(a):
    """A transfer of --bulk-mb MB under `primary run` with --loss on the link, the --bulk-variants alternating."""
    res = {k: [] for k in a.variants}
    for r in range(a.runs):
        for k in a.variants:
            _, sack, build, extra = BULK_VARIANTS[k]
            relay = subprocess.Popen(['ip', 'netns', 'exec', NS, sys.executable, RELAY, 'vnetp0', 'vnetr0', str(a.loss), str(r)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                relay.stdout.readline()
                p, _, addr = start('run', 'virtual', bin_dir=a.compare if build == 'compare' else a.this, extra_args=extra)
                v = bulk_get(a.bulk_mb, r + 1, sack, put=a.upload)
                shutdown('virtual', addr)
                p.p.wait(timeout=120)
            finally:
                relay.kill()
                relay.wait()
            if not v['ok']:
                raise RuntimeError(f'bulk transfer not intact: {v}')
            res[k].append(v)
            print('bulk', k, f"{v['mbps']:.2f} MB/s in {v['seconds']:.1f} s, longest wait {v['maxGapMs']:.0f} ms, load {os.getloadavg()[0]:.0f}", flush=True)
    return res


def bulk_kill_once(i, mb, bin_dir=BIN, put=False):
    """One protected bulk download (upload with `put`) killed a third of the way; the client's figures plus the
    stall's place."""
    global _runs
    _runs += 1
    lock = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-bulk{i}-{_runs}.lock')
    events = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-bulk{i}.events')
    p, b, addr = start('protect', 'virtual', lock, events, bin_dir)
    killed = {}
    def kill(_):
        killed['mono'], killed['ms'] = time.monotonic(), time.time() * 1000
        p.p.send_signal(signal.SIGKILL)
    try:
        v = bulk_get(mb, 100 + i, True, progress=int(mb * 1e6 / 3), started=kill, put=put)
        shutdown('virtual', addr)
        b.p.wait(timeout=120)
    finally:
        end_pair(p, b, lock)
    with open(events) as f:
        evs = [json.loads(l) for l in f if l.strip()]
    os.remove(events)
    up = next((e['unixMs'] for e in evs if e['event'] == 'takeover-descriptor' and str(e.get('detail', '')).startswith('virtual interface')), None)
    v['killed'] = 'mono' in killed
    # the failover's stall: the client's wait for data that spans the moment the survivor's interface came up (the
    # client keeps reading what its kernel buffered for a while after the kill, so the wait starts after it); the
    # longest wait of the whole run (`maxGapMs`) can be another one on a loaded machine
    v['stall'] = float('nan')
    if v['killed'] and up is not None:
        up_mono = killed['mono'] + (up - killed['ms']) / 1000
        v['upMs'] = up - killed['ms']
        v['stall'] = max(((t - f) * 1000 for f, t in v['gaps'] if f <= up_mono <= t), default=0.0)
    return v


def bulk(a):
    global SERVER
    SERVER = BULKSERVER
    make_namespace(a.client_rto_min, relay=a.loss > 0)
    builds = [('before', a.compare), ('this build', a.this)] if a.compare else [('this build', a.this)]
    loads, kills, failed = [], {n: [] for n, _ in builds}, {n: [] for n, _ in builds}
    try:
        tp = bulk_throughput(a) if a.loss > 0 and a.runs > 0 else {}
        loads.append(os.getloadavg()[0])
        if a.kills:
            # the failover runs on the plain bridge: both replicas' TAP devices are its ports
            subprocess.run(['ip', 'netns', 'del', NS])
            make_namespace(a.client_rto_min)
        for i in range(a.kills):
            for name, d in builds:
                try:
                    v = bulk_kill_once(i, a.bulk_mb, d, put=a.upload)
                    if not v['ok']:
                        raise RuntimeError(f'not intact: {v}')
                    kills[name].append(v)
                    print('bulk kill', i, name, f"stall {v['stall']:.0f} ms (interface up {v.get('upMs', float('nan')):.0f} ms after the kill; "
                          f"longest wait of the run {v['maxGapMs']:.0f} ms), {v['mbps']:.2f} MB/s overall", flush=True)
                except Exception as e:
                    failed[name].append(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
                    print('bulk kill', i, name, 'FAILED', e, flush=True)
                loads.append(os.getloadavg()[0])
    finally:
        subprocess.run(['ip', 'netns', 'del', NS])
    what = 'upload' if a.upload else 'download'
    print(f'\n## A bulk {what} through the in-VM stack: loss recovery and the failover (`bench/vnet.py --bulk`)\n')
    print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {min(loads):.0f}-{max(loads):.0f} '
          f'during the run. Command: `python3 bench/vnet.py --bulk{" --upload" if a.upload else ""} --bulk-mb {a.bulk_mb:g} --loss {a.loss:g} --runs {a.runs} --kills {a.kills}'
          f' --bulk-variants {",".join(a.variants)}{" --compare BIN_DIR" if a.compare else ""}`. '
          + (f'bench/bulkclient.py sends {a.bulk_mb:g} MB; bulkserver.musl checks every byte.\n' if a.upload
             else f'bulkserver.musl sends {a.bulk_mb:g} MB; bench/bulkclient.py checks every byte.\n'))
    if tp:
        med = lambda xs, k: statistics.median(x[k] for x in xs)
        print(f'Throughput under `primary run --net virtual` with {a.loss:.0%} loss each way (bench/lossyrelay.py), median of {a.runs}, alternating:\n')
        print('| variant | MB/s | seconds | longest wait ms | per run MB/s |')
        print('|---|---|---|---|---|')
        for k in a.variants:
            xs = tp[k]
            print(f"| {BULK_VARIANTS[k][0]} | {med(xs, 'mbps'):.2f} | {med(xs, 'seconds'):.1f} | {med(xs, 'maxGapMs'):.0f} | "
                  + ', '.join(f"{x['mbps']:.2f}" for x in xs) + ' |')
        print()
    if a.kills:
        print(f'Failover: SIGKILL of the protected primary a third into the {what} (no loss injected); the stall is the client\'s '
              f'wait {"to send more" if a.upload else "for data"} that spans the moment the survivor\'s interface came up{", the builds alternating kill by kill" if a.compare else ""}:\n')
        print('| build | intact, no reset | stall p50 ms | max ms | interface up p50 ms after the kill | longest wait of the run p50 ms | overall MB/s p50 | per kill stall ms |')
        print('|---|---|---|---|---|---|---|---|')
        nan = float('nan')
        med = lambda xs: statistics.median(xs) if xs else nan
        for name, _ in builds:
            ks = kills[name]
            st = sorted(v['stall'] for v in ks)
            print(f'| {name} | {len(ks)} of {a.kills} | {med(st):.0f} | {st[-1] if st else nan:.0f} | {med([v.get("upMs", nan) for v in ks]):.0f} | '
                  f'{med([v["maxGapMs"] for v in ks]):.0f} | {med([v["mbps"] for v in ks]):.2f} | '
                  + ', '.join(f"{x:.0f}" for x in st) + (f' (failed: {"; ".join(failed[name])})' if failed[name] else '') + ' |')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--seconds', type=float, default=5)
    ap.add_argument('--connections', default='16,64')
    ap.add_argument('--kills', type=int, default=10)
    ap.add_argument('--kills-only', action='store_true', help='measure only the failover stall (no throughput runs)')
    ap.add_argument('--compare', metavar='BIN_DIR', help="with --kills-only or --bulk: alternate each kill with one of another build "
                    "(its primary.dll/backup.dll) and print both builds' stalls side by side")
    ap.add_argument('--this', metavar='BIN_DIR', default=BIN, help='the build measured (kvserver throughput runs, and with '
                    '--compare the build measured against it; default: tests/bin/Release/net10.0 of this tree; a copy keeps a '
                    'rebuild during the run out of the figures)')
    ap.add_argument('--redis', action='store_true', help="Debian's redis-server instead of kvserver; throughput from redis-benchmark")
    ap.add_argument('--requests', type=int, default=20000, help='with --redis: redis-benchmark -n per test and run')
    ap.add_argument('--client-rto-min', type=int, metavar='MS', help="the clients' route to the guest gets this minimum "
                    "retransmission time-out (`ip route ... rto_min MSms`; Linux's default is 200 ms): a request only the killed "
                    "primary received is resent after about this long instead of 200 ms")
    ap.add_argument('--bulk', action='store_true', help='a bulk download (guests/src/bulkserver.c) instead of kvserver: its '
                    'throughput with --loss on the link, SACK on vs off, and the stall of a failover mid-download (--kills)')
    ap.add_argument('--bulk-mb', type=float, default=20, help='with --bulk: megabytes per download')
    ap.add_argument('--loss', type=float, default=0.02, help='with --bulk: the probability that the link loses a frame, each '
                    'direction (0: no throughput runs)')
    ap.add_argument('--upload', action='store_true', help='with --bulk: the client uploads (PUT) and the guest checks every byte, '
                    'instead of a download')
    ap.add_argument('--lossy-link', action='store_true', help='kill runs (kvserver, --kills-only with or without --compare): the '
                    'clients reach the virtual IP through bench/lossyrelay.py, which loses --loss of the frames each way, sends '
                    '--duplicate of them twice and holds --reorder of them back 1-3 ms (seeded by the kill number, the same for '
                    'both builds), before and after the takeover; a run whose kvload sees a reset, an error or a wrong reply fails')
    ap.add_argument('--keep-traces', metavar='DIR', help="kill runs: keep each run's files in DIR (kvload's per-request trace, "
                    "the backup's events, with --lossy-link the relay's line per frame) for bench/vnettrace.py")
    ap.add_argument('--hears-primary', action='store_true', help='kill runs: the primary\'s TAP port is mirrored to the backup\'s '
                    '(tc clsact + mirred) and the measured build\'s backup runs with --hears-primary: a request only the dead '
                    'primary received is answered from the frames the backup heard instead of after the client\'s RTO')
    ap.add_argument('--compare-hears', action='store_true', help='with --hears-primary and --compare: the --compare build\'s backup '
                    'runs with --hears-primary too (a build that has it), so the two builds differ only in what they do with the frames')
    ap.add_argument('--duplicate', type=float, default=0.02, help='with --lossy-link: the probability that the relay sends a frame twice')
    ap.add_argument('--reorder', type=float, default=0.03, help='with --lossy-link: the probability that the relay holds a frame '
                    'back 1-3 ms (later frames overtake it)')
    ap.add_argument('--bulk-variants', default='sack,nosack', help='with --bulk: the throughput variants, alternating: sack, nosack '
                    '(the client\'s SACK off), norack (this build with --no-rack), before (the --compare build)')
    ap.add_argument('--kill-variants', metavar='LIST', help='kill runs (--kills-only): what alternates kill by kill, a comma-separated '
                    'list of ' + ', '.join(f'{k} ({v[0]})' for k, v in KILL_VARIANTS.items()) + '; default: before,this with --compare, else this')
    ap.add_argument('--netns-prefix', default='rvbenchvnet', help='the clients\' network namespace is named this and the process id '
                    '(a name of its own beside other benches on a shared machine)')
    ap.add_argument('--jit-log', metavar='DIR', help='each backup lists the methods it JIT-compiles, in order, in DIR/backup-N.txt '
                    '(DOTNET_JitStdOutFile with DOTNET_JitDisasmSummary): what a go-live compiled first')
    ap.add_argument('--faults', default='kill', help='kill runs (--kills-only): how the primary fails, a comma-separated list '
                    'alternating kill by kill: ' + '; '.join(f'{k}: {v}' for k, v in FAULTS.items()))
    ap.add_argument('--silence-ms', type=int, metavar='MS', help="kill runs: the backup's --primary-silence-ms (how long a silent "
                    "primary is waited for: a frozen or partitioned primary's detection time; default: the backup's own, 1000)")
    ap.add_argument('--heartbeat-ms', type=int, metavar='MS', help="the primary's --heartbeat-ms (it heartbeats an idle link at "
                    "most this far apart, and at least 8 times within the backup's bound)")
    ap.add_argument('--no-pulse', action='store_true', help="with --silence-runs: the primary runs with --no-pulse (only the managed heartbeats keep its link alive)")
    ap.add_argument('--primary-events', action='store_true', help="with --silence-runs: the primary writes events too (a build with LinkPulse reports its pulse's and heartbeat's delays and the GC pauses)")
    ap.add_argument('--silence-runs', type=int, metavar='N', help='no fault: N protected runs of --seconds under the 64-connection '
                    'load, counting the takeovers from a healthy primary (false detections) at the backup\'s --silence-ms and '
                    'printing its histogram of silences on the data link')
    a = ap.parse_args()
    global NS, SILENCE
    a.faults = [f for f in a.faults.split(',') if f]
    if not a.faults or any(f not in FAULTS for f in a.faults):
        ap.error(f'--faults: a comma-separated list of {", ".join(FAULTS)}')
    SILENCE = ('--primary-silence-ms', str(a.silence_ms)) if a.silence_ms else ()
    NS = NET[-1] = f'{a.netns_prefix}{os.getpid()}'
    a.kill_variants_arg = a.kill_variants
    a.kill_variants = [v for v in (a.kill_variants or '').split(',') if v]
    if any(v not in KILL_VARIANTS for v in a.kill_variants) or (any(v.startswith('before') for v in a.kill_variants) and not a.compare):
        ap.error(f'--kill-variants: a comma-separated list of {", ".join(KILL_VARIANTS)} (before needs --compare)')
    a.variants = [v for v in a.bulk_variants.split(',') if v]
    if any(v not in BULK_VARIANTS for v in a.variants) or ('before' in a.variants and not a.compare):
        ap.error(f'--bulk-variants: a comma-separated list of {", ".join(BULK_VARIANTS)} (before needs --compare)')
    global SERVER, LINK, KEEP, HEARS, THIS, JITLOG
    if a.jit_log:
        JITLOG = os.path.abspath(a.jit_log)
        os.makedirs(JITLOG, exist_ok=True)
    THIS, HEARS = a.this, ('both' if a.compare_hears else True) if a.hears_primary else False
    if a.bulk:
        bulk(a)
        return
    if a.keep_traces:
        KEEP = a.keep_traces
        os.makedirs(KEEP, exist_ok=True)
    if a.lossy_link:
        LINK = {'loss': a.loss, 'duplicate': a.duplicate, 'reorder': a.reorder}
    if a.redis:
        SERVER = REDIS
    if a.silence_runs:
        silence_runs(a)
        return
    if a.compare or a.kill_variants or a.faults != ['kill']:
        compare_kills(a)
        return
    subprocess.run(['gcc', '-O2', '-o', KVLOAD, os.path.join(ROOT, 'bench', 'kvload.c')], check=True)
    make_namespace(a.client_rto_min, relay_clients=LINK is not None)
    if HEARS:
        mirror_primary_port()
    try:
        conns = [int(c) for c in a.connections.split(',')]
        tp = {} if a.kills_only else redis_throughput(a.runs, a.requests, conns) if a.redis else throughput(a.runs, a.seconds, conns, a.this)
        stalls, failed, parts, kept, floors, runs = [], [], [], [], [], []
        for i in range(a.kills):
            try:
                # the build measured (--this): the one --hears-primary is given to (start)
                v = kill_once(i, 6, a.this)
                stalls.append(v['stall'])
                parts.append((v['lost'], v['announced'], v['won'], v['up'], v['first']))
                floors.append(v['floor'])
                runs.append(v)
                if 'own' in v:
                    kept.append((v['own'], v['attached']))
                print('kill', i, f"stall {v['stall']:.0f} ms (floor {run_floor(v['floor']):.0f} ms, the median of {'/'.join(f'{x:.0f}' for x in v['floor'])} ms) (longest request of the run {v['max_ms']:.0f} ms) (backup: lost +{v['lost']:.0f}, won +{v['won']:.0f}, up +{v['up']:.0f} ms, first reply +{v['first']:.0f} ms{relay_words(v)}{heard_words(v)}), {v['requests']:.0f} requests, errors {v['errors']:.0f}", flush=True)
            except Exception as e:  # a reset shows here: kvload exits non-zero when a connection closes
                failed.append(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
                print('kill', i, 'FAILED', e, flush=True)
    finally:
        subprocess.run(['ip', 'netns', 'del', NS])
        os.remove(KVLOAD)
    load_avg = os.getloadavg()[0]
    print()
    if a.redis:
        print_redis(a, tp, conns, load_avg)
    else:
        print_kv(a, tp, conns, load_avg)
    print_stalls(a, stalls, parts, failed)
    if stalls:
        print('\n' + bound_table([('this build', bound_rows(runs))]))
    if floors:
        print('\n' + floor_words(floors) + '.')
    if kept:
        print('\nWith the kept traces: ' + own_words(kept) + '.')


def print_redis(a, tp, conns, load_avg):
    print(f"## Debian's redis-server through the in-VM TCP/IP stack (`bench/vnet.py --redis`)\n")
    print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores (load average {load_avg:.1f} at the end), '
          f'median of {a.runs} run(s) of `redis-benchmark -q -n {a.requests} -c C -t set,get`. Host sockets: redis-benchmark on 127.0.0.1. '
          f'Virtual: redis-benchmark in the clients\' network namespace, the guest on a TAP device bridged to it. Command: '
          f'`python3 bench/vnet.py --redis --runs {a.runs} --requests {a.requests} --connections {a.connections} --kills {a.kills}`.\n')
    if not tp:
        return
    print('| connections | | test | host sockets req/s | p50 ms | in-VM stack req/s | p50 ms | stack / host |')
    print('|---|---|---|---|---|---|---|---|')
    for c in conns:
        for mode in ('run', 'protect'):
            for t in REDIS_TESTS:
                h, v = tp[(c, mode, 'host')][t], tp[(c, mode, 'virtual')][t]
                print(f"| {c} | `primary {mode}` | {t.upper()} | {h['rate']:.0f} | {h['p50_ms']:.3f} | {v['rate']:.0f} | {v['p50_ms']:.3f} | **{v['rate'] / h['rate']:.2f}x** |")
    print()


def print_kv(a, tp, conns, load_avg):
    print(f'## kvserver through the in-VM TCP/IP stack (`bench/vnet.py`)\n')
    loads = f'load average {min(LOADS):.0f}-{max(LOADS):.0f} over the runs' if LOADS else f'load average {load_avg:.1f} at the end'
    print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores ({loads}: '
          f'{"LOADED, shared machine" if LOADS and max(LOADS) > 2 else "quiet"}), '
          f'median of {a.runs} run(s) of {a.seconds:.0f} s (after 1 s of warm-up), modes and networks alternating within each run; '
          f'`bench/kvload.c` keeps one request outstanding per '
          f'connection. Host sockets: client on 127.0.0.1. Virtual: the client in a network namespace, the guest on a TAP device '
          f'bridged to it (`--net virtual`). Command: `python3 bench/vnet.py --runs {a.runs} --seconds {a.seconds:g} --connections {a.connections} --kills {a.kills}'
          f'{" --kills-only" if a.kills_only else ""}{" --this BIN_DIR" if os.path.abspath(a.this) != os.path.abspath(BIN) else ""}'
          f'{f" --lossy-link --loss {a.loss:g} --duplicate {a.duplicate:g} --reorder {a.reorder:g}" if LINK else ""}`.{link_words()}\n')
    if tp:
        print('| connections | | host sockets req/s (per run) | p50 ms | p99 ms | in-VM stack req/s (per run) | p50 ms | p99 ms | stack / host |')
        print('|---|---|---|---|---|---|---|---|---|')
    runs = lambda x: ', '.join(f'{r:.0f}' for r in x.get('rates', []))
    for c in (conns if tp else []):
        for mode in ('run', 'protect'):
            h, v = tp[(c, mode, 'host')], tp[(c, mode, 'virtual')]
            print(f"| {c} | `primary {mode}` | {h['rate']:.0f} ({runs(h)}) | {h['p50_ms']:.3f} | {h['p99_ms']:.3f} | {v['rate']:.0f} ({runs(v)}) | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | **{v['rate'] / h['rate']:.2f}x** |")
    if tp:
        print('\nprotect / run (the same network): ' + '; '.join(
            f"{c} connections: host sockets {tp[(c, 'protect', 'host')]['rate'] / tp[(c, 'run', 'host')]['rate']:.2f}x, "
            f"in-VM stack {tp[(c, 'protect', 'virtual')]['rate'] / tp[(c, 'run', 'virtual')]['rate']:.2f}x" for c in conns) + '.')
    print()


def print_stalls(a, stalls, parts, failed):
    if stalls:
        s = sorted(stalls)
        p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
        print(f'Failover stall of {SERVER.name} with `--net virtual` (SIGKILL of the protected primary a third into a 6 s load of 64 connections, '
              f'{len(stalls)} of {a.kills} kills completed without a reset): p50 {statistics.median(s):.0f} ms, p99 {p99:.0f} ms, '
              f'max {s[-1]:.0f} ms; per kill (ms): {", ".join(f"{x:.0f}" for x in stalls)}.' + (f' Failed: {"; ".join(failed)}' if failed else ''))
        med = lambda k: statistics.median(x[k] for x in parts)
        print(f'\nWhere the stall goes (medians, ms after the kill, from the backup\'s events and kvload\'s trace): the loss noticed +{med(0):.0f}, '
              f'announced +{med(1):.0f}, drained and took over +{med(2):.0f}, the interface up +{med(3):.0f}, the first reply +{med(4):.0f}; '
              f'per kill (lost/won/up/stall): '
              + ", ".join(f"{l:.0f}/{w:.0f}/{u:.0f}/{st:.0f}" for (l, _, w, u, _), st in zip(parts, stalls)) + '.')


def fault_args(a):
    """The fault options of a kill series, as its command line names them."""
    return (f"--faults {','.join(a.faults)} " if a.faults != ['kill'] else '') + (f'--silence-ms {a.silence_ms} ' if a.silence_ms else '')


def fault_table(builds, res, runs):
    """What a fault's stall is made of, per (build, fault): noticing the primary is lost (at once for a kill: its data
    link closes; the silence bound for a freeze or a partition), then the takeover (the arbiter, the drain, the
    interface up); and whether a live old primary kept off the wire after the takeover and was fenced."""
    pm = lambda xs: (lambda v: f'{statistics.median(v):.0f} / {v[-1]:.0f}' if v else 'n/a')(sorted(x for x in xs if x == x))
    out = ['| build, fault | kills | stall p50 / max ms | detection (the fault to the loss noticed) p50 / max ms | takeover (the loss '
           'noticed to the interface up) p50 / max ms | old primary\'s frames on the wire after the takeover (sum) | old primary fenced (exit 3) |',
           '|---|---|---|---|---|---|---|']
    for name, _, _ in builds:
        stalls, parts, _ = res[name]
        if not stalls:
            continue
        olds = [v['oldFrames'] for v in runs[name] if 'oldFrames' in v]
        fenced = sum(1 for v in runs[name] if v.get('oldExit') == 3)
        out.append(f'| {name} | {len(stalls)} | {pm(stalls)} | {pm(x[0] for x in parts)} | {pm(x[3] - x[0] for x in parts)} | '
                   + (f'{sum(olds)} | {fenced} of {len(olds)} |' if olds else 'n/a (killed) | n/a |'))
    return '\n'.join(out)


def old_words(v):
    """Freeze and partition: what the old primary sent on the wire after the takeover, and how it ended."""
    if 'oldFrames' not in v:
        return ''
    return f"; old primary: {v['oldFrames']} frames on the wire after the takeover, exit {v['oldExit']}"


def stall_summary(name, stalls, parts, failed):
    """A table row: the stall and, as medians of ms after the kill, its parts (parts: lost, announced, took over,
    interface up, first reply per kill)."""
    s = sorted(stalls)
    p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
    med = lambda k: statistics.median(x[k] for x in parts)
    return (f'| {name} | {len(s)} | {statistics.median(s):.0f} | {p99:.0f} | {med(0):.0f} | {med(1):.0f} | {med(2):.0f} | {med(3):.0f} | {med(4):.0f} | '
            + ", ".join(f"{l:.0f}/{w:.0f}/{u:.0f}/{st:.0f}" for (l, _, w, u, _), st in zip(parts, stalls))
            + (f' (failed: {"; ".join(failed)})' if failed else '') + ' |')


def heard_words(v):
    """The survivor's heard frames (`--hears-primary`) in a kill's line."""
    h = v.get('heard')
    drop = f"; backup's device dropped {v['tapDropped']:.0f}" if v.get('tapDropped', 0) == v.get('tapDropped', 0) else ''
    if not h:
        return drop
    kinds = (f" (data {h['givenData']}, ack {h['givenAck']}, SYN/RST {h['givenControl']}, other {h['givenOther']}; not given: old {h['old']}, "
             f"own {h['own']}, foreign {h['foreign']})") if 'old' in h else ''
    return (f"; heard {h['read']} frames ({h['atLoss']} read only at the loss, at most {h['largestBurst']} per wake-up), kept "
            f"{h['kept']}, overwritten {h['overwritten']}, given {h['given']}{kinds}, reader raised {h['raised']}") + drop


def heard_summary(rows):
    """Over a build's kills: the heard frames' counts (medians, max) and the device's drops."""
    hs = [h for h, _ in rows if h]
    med = lambda k: statistics.median(h[k] for h in hs)
    drops = [d for _, d in rows if d == d]
    kinds = ''
    if all('old' in h for h in hs):
        tot = lambda k: sum(h[k] for h in hs)
        kinds = (f'; over the kills given {tot("given")}: data {tot("givenData")}, ack {tot("givenAck")}, SYN/RST {tot("givenControl")}, '
                 f'other {tot("givenOther")}; not given: old {tot("old")}, own {tot("own")}, foreign {tot("foreign")}')
    return (f'frames heard per takeover p50 {med("read"):.0f}, kept {med("kept"):.0f}, overwritten {med("overwritten"):.0f}, '
            f'given to the stack p50 {med("given"):.0f} (per kill: {", ".join(str(h["given"]) for h in hs)}{kinds}), read only at the loss '
            f'p50 {med("atLoss"):.0f}, largest burst max {max(h["largestBurst"] for h in hs)}, reader raised in {sum(bool(h["raised"]) for h in hs)} '
            f'of {len(hs)}; frames the backup\'s device dropped: {", ".join(f"{d:.0f}" for d in drops)}')


def link_words():
    """How the kill runs' link was, for the printed section."""
    if not LINK:
        return ''
    return (f' The clients reach the guest through bench/lossyrelay.py (`--lossy-link`): {LINK["loss"]:.0%} of the frames lost each way, '
            f'{LINK["duplicate"]:.0%} sent twice, {LINK["reorder"]:.0%} held back 1-3 ms, before and after the takeover.')


def relay_words(v):
    r = v.get('relay')
    own = f"; own stall {v['own']:.0f} ms, descriptors attached {v['attached']:.0f} ms after the interface" if 'own' in v else ''
    return (f"; relay dropped {r['dropped']}, duplicated {r['duplicated']}, reordered {r['reordered']} of {r['relayed']}" if r else '') + own


def own_words(kept):
    """With --keep-traces: the failover's own stall and the descriptors' attach time over the kills (medians, max)."""
    if not kept:
        return ''
    own, att = sorted(x[0] for x in kept), sorted(x[1] for x in kept)
    return (f'the failover\'s own stall (the longest wait of a request in flight across the takeover none of whose frames the link '
            f'dropped; bench/vnettrace.py) p50 {statistics.median(own):.0f} ms, max {own[-1]:.0f}; the survivor\'s descriptors '
            f'attached p50 {statistics.median(att):.0f} ms (max {att[-1]:.0f}) after its interface was up; per kill (own/attached): '
            + ', '.join(f'{o:.0f}/{a:.0f}' for o, a in kept))


# --silence-ms: the backup's --primary-silence-ms in kill runs (empty: its default)
SILENCE = ()


# --kill-variants: what each kill run is, alternating kill by kill (name: build, primary's options, backup's options)
KILL_VARIANTS = {
    'before': ('the --compare build', (), ()),
    'this': ('this build', (), ()),
    'noprobe': ("this build, no tail-loss probe after the takeover's repair (primary --no-takeover-probe)", ('--no-takeover-probe',), ()),
    'norush': ('this build, the live guest an ordinary thread from the go-live (backup --live-rush-ms 0)', (), ('--live-rush-ms', '0')),
    'neither': ('this build, neither the probe nor the real-time window', ('--no-takeover-probe',), ('--live-rush-ms', '0')),
    'noprep': ("this build, the go-live's code not prepared while following (backup --no-go-live-preparation)", (), ('--no-go-live-preparation',)),
    # a standby the survivor asks after the takeover makes it record on (the recording continued in its go-live); none
    # listens at that address (port 9 of loopback), so the survivor keeps asking it, off the replay thread
    'standby': ('this build, the backup given a standby (it records on after the takeover; none answers)', (), ('--standby', 'http://127.0.0.1:9', '--standby-retry-ms', '200')),
    'beforestandby': ('the --compare build, the backup given a standby (as standby)', (), ('--standby', 'http://127.0.0.1:9', '--standby-retry-ms', '200')),
    'standbynoprep': ('this build, the backup given a standby, its go-live not prepared', (), ('--standby', 'http://127.0.0.1:9', '--standby-retry-ms', '200', '--no-go-live-preparation')),
}


def silence_runs(a):
    """--silence-runs N: no fault at all. N protected runs (kvserver on the virtual network, 64 connections, --seconds
    each) with the backup's --primary-silence-ms (--silence-ms) and the primary's --heartbeat-ms (--heartbeat-ms):
    how long a healthy primary falls silent on the data link at the machine's load, and how often a bound that short
    takes over from it (a false detection: the arbiter fences the healthy primary, the clients keep their connections
    and see a stall, the pair is left without a backup). The backup's histogram counts every silence of at least 25,
    50, 100, 150, 200, 250, 300 and 500 ms since the session's first message; `warm` is the part of the run before the
    short bound applies (the backup's silence warm-up)."""
    subprocess.run(['gcc', '-O2', '-o', KVLOAD, os.path.join(ROOT, 'bench', 'kvload.c')], check=True)
    make_namespace(a.client_rto_min)
    pargs = (('--heartbeat-ms', str(a.heartbeat_ms)) if a.heartbeat_ms else ()) + (('--no-pulse',) if a.no_pulse else ())
    rows, loads = [], []
    try:
        for i in range(a.silence_runs):
            lock = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-s{i}.lock')
            events = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-s{i}.events')
            pevents = os.path.join(tempfile.gettempdir(), f'revirt-vnet-{os.getpid()}-s{i}.pevents')
            t_start = time.time() * 1000
            p = b = ready = None
            row = {'run': i, 'load': os.getloadavg()[0]}
            try:
                p, b, addr = start('protect', 'virtual', lock, events, a.this, pargs + (('--events', pevents) if a.primary_events else ()), SILENCE)
                ready = time.time() * 1000
                try:
                    row.update(load('virtual', addr, 64, a.seconds))
                except Exception as e:
                    row['loadError'] = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                shutdown('virtual', addr)
                b.p.wait(timeout=120)
            except Exception as e:
                row['error'] = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
            finally:
                if p is not None:
                    end_pair(p, b, lock)
                    row['primaryExit'] = p.p.returncode
                    row['primaryTail'] = p.lines[-4:]
            evs = events_of(events)
            pevs = events_of(pevents) if a.primary_events else []
            for f in (events, pevents):
                if os.path.exists(f):
                    os.remove(f)
            lost = next((e for e in evs if e['event'] == 'primary-lost'), None)
            # the primary's pulse (a build with LinkPulse and --primary-events): its own delays and the process's GC pauses
            pend = next((e for e in pevs if e['event'] == 'pulse-ended'), None) or {}
            row.update(pulseLateMs=pend.get('maxLateMs'), heartbeatLateMs=pend.get('heartbeatMaxLateMs'), gcPauseMs=pend.get('gcPauseMs'),
                       gcs=pend.get('gcs'), realtime=pend.get('realtime'), lockWaits=pend.get('lockWaits'))
            fin = next((e for e in evs if e['event'] == 'primary-finished'), None)
            e = lost or fin or {}
            row.update(lost=lost is not None, lostAt=(lost['unixMs'] - t_start) if lost else None, readyAt=ready - t_start if ready else None,
                       reason=lost.get('reason') if lost else None, longest=e.get('longestSilenceMs'), silences=e.get('silences'),
                       bound=e.get('silenceBoundMs'), longestAt=e.get('longestSilenceAtMs'), long=e.get('longSilences'),
                       unpulsed=e.get('longestUnpulsedMs'), longUnpulsed=e.get('longUnpulsed'), pulses=e.get('pulses'),
                       pulseGap=e.get('pulseGapMs'), pulseDelay=e.get('pulseDelayMs'),
                       tookOver=any(x['event'] == 'took-over' for x in evs), load2=os.getloadavg()[0])
            loads += [row['load'], row['load2']]
            rows.append(row)
            print('run', i, json.dumps(row), flush=True)
    finally:
        subprocess.run(['ip', 'netns', 'del', NS])
        os.remove(KVLOAD)
    done = [r for r in rows if r.get('silences')]
    print(f'\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {min(loads):.0f}-{max(loads):.0f}; '
          f'command: `python3 bench/vnet.py --silence-runs {a.silence_runs} --seconds {a.seconds:g} {fault_args(a)}'
          f'{f"--heartbeat-ms {a.heartbeat_ms} " if a.heartbeat_ms else ""}{"--no-pulse " if a.no_pulse else ""}{"--primary-events " if a.primary_events else ""}'
          f'{f"--this {a.this} " if a.this != BIN else ""}`\n')
    print('| run | load | the healthy primary declared lost | longest silence ms (ms into the session) | silences of at least 25/50/100/150/200/250/300/500 ms | the first of 100 ms or more, ENDED_AT:MS | requests |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        ready = f"ready at {r['readyAt']:.0f}" if r['readyAt'] is not None else 'before the guest was ready'
        taken = (f"yes{', taken over' if r['tookOver'] else ''}, {r['lostAt']:.0f} ms after the start ({ready}): {r['reason']}"
                 if r['lost'] else ('no' if r.get('silences') else f"? {r.get('error')}"))
        print(f"| {r['run']} | {r['load']:.0f}-{r['load2']:.0f} | {taken} | {r['longest']} ({r['longestAt']}) | {r['silences']} | {r.get('long') or ''} | {r.get('requests', float('nan')):.0f} |")
    if any(r.get('pulses') for r in rows):
        print('\nThe pulse (LinkPulse) beside the messages the runtime writes, per run: the longest silence between messages other than '
              'pulses (batches and heartbeats: what the bound measured without the pulse), the longest gap between two pulses by '
              'their own send stamps (the primary\'s side), the longest from a pulse\'s send to its read (the backup\'s side); '
              'with --primary-events the primary\'s own figures: the pulse thread\'s latest wake past its due time, the managed '
              'heartbeat\'s latest send past its due time, the process\'s GC pauses in all and collections (gen 0/1/2).\n')
        print('| run | longest silence, all messages ms | without pulses ms (first of 100 ms or more, AT:MS) | pulses | pulse send gap ms | pulse send-to-read ms | pulse wake late ms | heartbeat late ms | GC pause ms (gen0/1/2) | pulse real-time |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        for r in rows:
            print(f"| {r['run']} | {r['longest']} | {r.get('unpulsed')} ({r.get('longUnpulsed') or ''}) | {r.get('pulses')} | {r.get('pulseGap')} | {r.get('pulseDelay')} | "
                  f"{r.get('pulseLateMs')} | {r.get('heartbeatLateMs')} | {r.get('gcPauseMs')} ({r.get('gcs')}) | {r.get('realtime')} |")
    silent = [r for r in rows if r['lost'] and str(r.get('reason', '')).startswith('no batch or heartbeat')]
    print(f"\n{len(silent)} false detections by the silence bound in {len(done)} runs ({sum(r['tookOver'] for r in rows)} takeovers).")


def compare_kills(a):
    subprocess.run(['gcc', '-O2', '-o', KVLOAD, os.path.join(ROOT, 'bench', 'kvload.c')], check=True)
    make_namespace(a.client_rto_min, relay_clients=LINK is not None)
    if HEARS:
        mirror_primary_port()
    names = a.kill_variants or (['before', 'this'] if a.compare else ['this'])
    label = lambda n: 'before' if n == 'before' else 'this build' if n == 'this' else n
    # each (variant, fault) is a row of its own; the faults alternate kill by kill as the variants do
    runs_of = [(label(n) + ('' if a.faults == ['kill'] else f', {f}'), a.compare if n in ('before', 'beforestandby') else a.this, n, f) for f in a.faults for n in names]
    fault_of = {name: f for name, _, _, f in runs_of}
    builds = [(name, d, n) for name, d, n, _ in runs_of]
    res = {n: ([], [], []) for n, _, _ in builds}
    kept = {n: [] for n, _, _ in builds}   # with --keep-traces: (own stall, descriptors attached) per kill
    heard = {n: [] for n, _, _ in builds}  # (the heard-frames event or None, frames the backup's device dropped) per kill
    floors = {n: [] for n, _, _ in builds}  # the link's floor per kill (kill_once)
    runs = {n: [] for n, _, _ in builds}    # every completed kill's figures
    loads = []
    try:
        for i in range(a.kills):
            for name, d, variant in builds:
                stalls, parts, failed = res[name]
                _, pargs, bargs = KILL_VARIANTS[variant]
                try:
                    v = kill_once(i, 6, d, pargs, bargs + SILENCE, None if variant in ('before', 'this') else variant, fault_of[name])
                    stalls.append(v['stall'])
                    parts.append((v['lost'], v['announced'], v['won'], v['up'], v['first']))
                    heard[name].append((v['heard'], v['tapDropped']))
                    floors[name].append(v['floor'])
                    runs[name].append(v)
                    if 'own' in v:
                        kept[name].append((v['own'], v['attached']))
                    fl = run_floor(v['floor'])
                    print('kill', i, name, f"stall {v['stall']:.0f} ms, floor {fl:.0f} ms (median of {'/'.join(f'{x:.0f}' for x in v['floor'])}), stall - floor {v['stall'] - fl:+.0f} ms (longest request of the run {v['max_ms']:.0f} ms) (backup: lost +{v['lost']:.0f}, won +{v['won']:.0f}, up +{v['up']:.0f} ms; "
                          f"announced +{v['announced']:.0f} ms; descriptors attached +{v['attachedAt']:.0f} ms; first reply +{v['first']:.0f} ms; longest silence before {v['quiet']:.0f} ms; {v['why']}{relay_words(v)}{heard_words(v)}{old_words(v)}); errors {v['errors']:.0f}; load {os.getloadavg()[0]:.0f}", flush=True)
                except Exception as e:
                    failed.append(str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
                    print('kill', i, name, 'FAILED', e, flush=True)
                loads.append(os.getloadavg()[0])
    finally:
        subprocess.run(['ip', 'netns', 'del', NS])
        os.remove(KVLOAD)
    print(f'\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {min(loads):.0f}-{max(loads):.0f} '
          f'during the run; {" / ".join(n for n, _, _ in builds)} alternating, kill by kill; {SERVER.name}. Command: `python3 bench/vnet.py --kills-only --kills {a.kills} '
          f'{"--compare BIN_DIR " if a.compare else ""}{f"--kill-variants {a.kill_variants_arg} " if a.kill_variants else ""}{"--redis " if a.redis else ""}{f"--client-rto-min {a.client_rto_min} " if a.client_rto_min is not None else ""}'
          f'{f"--lossy-link --loss {a.loss:g} --duplicate {a.duplicate:g} --reorder {a.reorder:g} " if LINK else ""}{"--hears-primary " if HEARS else ""}{"--compare-hears " if HEARS == "both" else ""}{fault_args(a)}{"--keep-traces DIR" if KEEP else ""}`.{link_words()}\n')
    for name, _, variant in builds:
        if variant not in ('before', 'this'):
            print(f'{name}: {KILL_VARIANTS[variant][0]}.')
    if a.faults != ['kill']:
        print('Faults (the times are ms after the fault): ' + '; '.join(f'{f}: {FAULTS[f]}' for f in a.faults)
              + f". The backup's --primary-silence-ms: {a.silence_ms or '1000 (its default)'}.")
    print('\n| build | kills | stall p50 ms | stall p99 (max) ms | loss noticed p50 | announced p50 | drained, took over p50 | interface up p50 | first reply p50 | per kill lost/won/up/stall ms |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for name, _, _ in builds:
        stalls, parts, failed = res[name]
        if stalls:
            print(stall_summary(name, stalls, parts, failed))
    if a.faults != ['kill']:
        print('\n' + fault_table(builds, res, runs))
    print('\nThe bound (per kill: the stall, the link\'s floor - the same statistic, the longest wait of a request in flight during a window as '
          'long as the kill-to-interface-up one, at moments before the kill in the same run, median over the moments - and the stall minus the floor):\n')
    print(bound_table([(name, bound_rows(runs[name])) for name, _, _ in builds]))
    for name, _, _ in builds:
        if floors[name]:
            print(f'\n{name}: ' + floor_words(floors[name]) + '.')
    for name, _, _ in builds:
        if kept[name]:
            print(f'\n{name}: ' + own_words(kept[name]) + '.')
    for name, _, _ in builds:
        if runs[name]:
            print('\n' + golive_words(name, runs[name]) + '.')
    for name, _, _ in builds:
        if any(h for h, _ in heard[name]):
            print(f'\n{name}: ' + heard_summary(heard[name]) + '.')

if __name__ == '__main__':
    main()
