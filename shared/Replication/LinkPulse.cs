using System.Runtime.InteropServices;
using Iced.Intel;
using ReVirt.Linux;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Replication;

/// <summary>
/// The primary's liveness pulse on a plain data link: a native thread, unknown to the .NET runtime, that writes a
/// <c>Pulse</c> message (15 bytes, its send time on CLOCK_MONOTONIC inside) on the link every interval, at the lowest
/// real-time priority (SCHED_RR 2; nice -10 when that is refused).
///
/// Why native: the managed heartbeat thread (real-time too) still stops whenever the runtime suspends managed threads
/// for a garbage collection, and on a loaded machine a collection's suspension waits until every managed thread (the
/// guest's among them, at ordinary priority) has been scheduled to reach a safe point, and the collection then runs on
/// an ordinary thread: a healthy primary's heartbeats paused for hundreds of milliseconds (docs/PERFORMANCE-replication.md).
/// This thread runs machine code generated here (no managed frames), so no collection, thread-pool delay or managed
/// lock stops it. It is a thread of the primary's process, so a SIGSTOP stops it with the rest; it writes on the
/// link's own socket, so a partition cuts it with the log; a killed process takes it along.
///
/// The runtime's progress still counts: the pulse goes out only while <see cref="KeepAliveUntil"/> (refreshed by the
/// managed heartbeat loop) has not passed, so a primary whose managed side has not run for that grace (a deadlock, a
/// collection that never ends) falls silent and is taken over from, only later than a dead one.
///
/// Sharing the stream: each message on the link must reach the socket whole and unmixed. Every writer takes one lock
/// word in the native block, a priority-inheriting futex (FUTEX_LOCK_PI: an ordinary writer preempted while holding it
/// runs at the pulse's real-time priority until it lets go, instead of leaving the pulse to wait for its next time
/// slice); the pulse thread holds it for one 15-byte write, and the managed writers of the link take and release it
/// inside the native <see cref="Write"/> (never in managed code: a thread the runtime suspended while holding it would
/// stop the pulse for the whole suspension).
///
/// Lifetime: the block (lock word, counters, the pulse's bytes) is freed by whichever side lets go last: the thread
/// when it ends (stopped, or its write failed: it then closes its own duplicate of the socket, so a descriptor number
/// reused after the link's close is never written to), the link when it has closed.
/// </summary>
public sealed unsafe partial class LinkPulse
{
    // the control block (offsets used by the generated code)
    const int OffLock = 0, OffStop = 4, OffPulseFd = 8, OffRefs = 12, OffIntervalNs = 16, OffKeepAliveNs = 24,
        OffPulses = 32, OffMaxLateNs = 40, OffLockWaits = 48, OffError = 56, OffTid = 60, OffSchedResult = 64,
        OffNiceResult = 68, OffLastPulseNs = 72, OffExited = 80, OffFrameLength = 84, OffSchedParam = 88,
        OffNext = 96, OffNow = 112, OffFrame = 128, OffMapBytes = 160, OffBusySleep = 168, OffSkipped = 184,
        OffWriterFd = 192, OffSignalMask = 200;
    const int BlockBytes = 4096;
    /// <summary>Where the send time sits in the frame: length (4), PrimaryMessage.pulse's tag and length (2), Pulse's
    /// sent_monotonic_ns tag (1).</summary>
    const int StampInFrame = 7;
    /// <summary>The frame: length 11, PrimaryMessage field 8 (pulse, length-delimited) of 9 bytes: Pulse field 1
    /// (sent_monotonic_ns, fixed64), then the 8 bytes of the stamp (written by the thread at each pulse).</summary>
    static ReadOnlySpan<byte> FrameHead => [11, 0, 0, 0, (8 << 3) | 2, 9, (1 << 3) | 1];
    const int FrameBytes = 15;

    // Linux x86-64 system calls and constants the generated code uses
    const int SysWrite = 1, SysClose = 3, SysMunmap = 11, SysRtSigprocmask = 14, SysSchedYield = 24, SysNanosleep = 35, SysSetpriority = 141,
        SysSchedSetscheduler = 144, SysGettid = 186, SysFutex = 202, SysClockGettime = 228, SysClockNanosleep = 230;
    const int ClockMonotonic = 1, TimerAbstime = 1, EIntr = 4, EAgain = 11;
    const int FutexLockPiPrivate = 6 | 128, FutexUnlockPiPrivate = 7 | 128;
    const int ProtRead = 1, ProtWrite = 2, ProtExec = 4, MapPrivateAnonymous = 0x22, FDupFdCloexec = 1030;
    const long NsPerSecond = 1_000_000_000;
    /// <summary>How long the pulse thread naps when waiting for the lock in the kernel failed (it should not).</summary>
    const long BusySleepNs = 200_000;

    /// <summary>
    /// The thread's real-time priority (SCHED_RR): one above the lowest, where the replicas' own real-time threads run
    /// (ThreadPools.MakeCurrentThreadRealtime: the heartbeat sender, and the backup's replay, which may spin): at the
    /// same priority the pulse could wait behind a spinning thread's 100 ms round-robin slice. It runs for microseconds
    /// per interval, so it takes nothing from them.
    /// </summary>
    const int RealtimePriority = 2;

    static nint _run, _write;
    static readonly Lock CodeLock = new();

    readonly byte* _block;
    int _released;

    LinkPulse(byte* block) => _block = block;

    /// <summary>
    /// Starts a pulse on socket <paramref name="fd"/> every <paramref name="intervalMs"/> ms. Null with the reason in
    /// <paramref name="why"/> when it cannot (not Linux on x86-64, no memory, no thread): the link then has only its
    /// managed heartbeats, as before.
    /// </summary>
    public static LinkPulse? Start(int fd, int intervalMs, int keepAliveMs, out string? why)
    {
        why = null;
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64) { why = "not Linux on x86-64"; return null; }
        if (!Generate(out why)) return null;
        long own = HostSys.Call(Nr.fcntl, fd, FDupFdCloexec, 0);
        if (own < 0) { why = $"cannot duplicate the link's socket (errno {-own})"; return null; }
        long map = HostSys.Call(Nr.mmap, 0, BlockBytes, ProtRead | ProtWrite, MapPrivateAnonymous, -1, 0);
        if (map < 0) { HostSys.Call(Nr.close, own); why = $"cannot map the pulse's block (errno {-map})"; return null; }
        byte* b = (byte*)map;
        *(int*)(b + OffPulseFd) = (int)own;
        *(int*)(b + OffWriterFd) = fd;
        *(int*)(b + OffRefs) = 2;
        *(long*)(b + OffIntervalNs) = Math.Max(1, intervalMs) * 1_000_000L;
        *(long*)(b + OffMapBytes) = BlockBytes;
        *(long*)(b + OffBusySleep + 8) = BusySleepNs;
        *(int*)(b + OffSchedParam) = RealtimePriority;
        *(ulong*)(b + OffSignalMask) = ulong.MaxValue; // SIG_BLOCK of every signal (SIGKILL and SIGSTOP cannot be)
        FrameHead.CopyTo(new Span<byte>(b + OffFrame, FrameHead.Length));
        *(int*)(b + OffFrameLength) = FrameBytes;
        var pulse = new LinkPulse(b);
        pulse.KeepAliveUntil(keepAliveMs);
        int e = CreateThread(b, out nint thread);
        if (e != 0)
        {
            HostSys.Call(Nr.close, own);
            HostSys.Call(Nr.munmap, map, BlockBytes);
            why = $"cannot start the pulse thread (error {e})";
            return null;
        }
        pthread_detach(thread);
        return pulse;
    }

    /// <summary>The pulse may go out until <paramref name="ms"/> ms from now: called by the managed side whenever it
    /// runs (its heartbeat loop), so that only a runtime that stopped running for that long silences the pulse.</summary>
    public void KeepAliveUntil(int ms) => Volatile.Write(ref *(long*)(_block + OffKeepAliveNs), MonotonicNs() + ms * 1_000_000L);

    /// <summary>Pulses written so far.</summary>
    public long Pulses => Volatile.Read(ref *(long*)(_block + OffPulses));
    /// <summary>The longest the thread woke after a pulse was due (ms).</summary>
    public double MaxLateMs => Volatile.Read(ref *(long*)(_block + OffMaxLateNs)) / 1e6;
    /// <summary>Pulses that waited for another writer's message.</summary>
    public long LockWaits => Volatile.Read(ref *(long*)(_block + OffLockWaits));
    /// <summary>The thread runs at real-time priority (SCHED_RR 2); otherwise it asked for nice -10 (<see cref="Raised"/>).</summary>
    public bool Realtime => WaitStarted() && *(int*)(_block + OffSchedResult) == 0;
    /// <summary>The thread runs at real-time priority or at nice -10.</summary>
    public bool Raised => Realtime || *(int*)(_block + OffNiceResult) == 0;
    /// <summary>The thread's kernel id (0 until it ran).</summary>
    public int Tid => Volatile.Read(ref *(int*)(_block + OffTid));
    /// <summary>The negative errno of the write that ended the thread (0: none failed).</summary>
    public int Error => Volatile.Read(ref *(int*)(_block + OffError));
    /// <summary>The thread has ended.</summary>
    public bool Ended => Volatile.Read(ref *(int*)(_block + OffExited)) != 0;

    bool WaitStarted()
    {
        var sw = new SpinWait();
        for (long until = Environment.TickCount64 + 5000; Tid == 0 && !Ended && Environment.TickCount64 < until;) sw.SpinOnce();
        return Tid != 0;
    }

    /// <summary>
    /// Writes a whole message of the link (length prefix included) under the pulse's lock, blocking as the socket
    /// does (its send time-out applies). Returns the bytes written, or the negative errno (EAGAIN: the send time-out
    /// passed; part of the message may have gone).
    /// </summary>
    public long Write(ReadOnlySpan<byte> bytes)
    {
        if (Volatile.Read(ref _released) != 0) return -EBadF;
        fixed (byte* p = bytes)
            return ((delegate* unmanaged<byte*, byte*, long, long>)_write)(_block, p, bytes.Length);
    }
    const int EBadF = 9;

    /// <summary>No pulse is written after this returns (the caller holds the link's write lock, which every message's
    /// write takes: the thread checks the word again once it holds the pulse's lock). The thread ends within an
    /// interval; the counters stay readable until <see cref="Release"/>.</summary>
    public void Stop() => Volatile.Write(ref *(int*)(_block + OffStop), 1);

    /// <summary>The link has closed (its socket is shut down, so the thread's next write fails if this does not stop
    /// it first): the thread is told to stop and the link lets go of the block. No <see cref="Write"/> may follow.</summary>
    public void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) != 0) return;
        Volatile.Write(ref *(int*)(_block + OffStop), 1);
        if (Interlocked.Decrement(ref *(int*)(_block + OffRefs)) == 0) HostSys.Call(Nr.munmap, (long)_block, BlockBytes);
    }

    /// <summary>The pulse's counters as event fields (before <see cref="Release"/>).</summary>
    public (string, object?)[] Fields() =>
        [("pulses", Pulses), ("maxLateMs", Math.Round(MaxLateMs, 2)), ("lockWaits", LockWaits), ("realtime", Realtime), ("raised", Raised), ("error", Error)];

    static long MonotonicNs()
    {
        long* ts = stackalloc long[2];
        HostSys.Call(Nr.clock_gettime, ClockMonotonic, (long)ts);
        return ts[0] * NsPerSecond + ts[1];
    }

    /// <summary>Starts the thread real-time from its first instruction when permitted (created with an explicit
    /// SCHED_RR 2: a thread started at ordinary priority waits for its first time slice on a loaded machine before it
    /// can raise itself), else at the creator's priority (it then raises itself as far as it may).</summary>
    static int CreateThread(byte* block, out nint thread)
    {
        byte* attr = stackalloc byte[PthreadAttrBytes];
        int priority = RealtimePriority;
        if (pthread_attr_init(attr) == 0)
        {
            try
            {
                if (pthread_attr_setinheritsched(attr, PthreadExplicitSched) == 0 && pthread_attr_setschedpolicy(attr, ThreadPools.SchedRoundRobin) == 0
                    && pthread_attr_setschedparam(attr, &priority) == 0 && pthread_create(out thread, (nint)attr, _run, (nint)block) == 0)
                    return 0;
            }
            finally { pthread_attr_destroy(attr); }
        }
        return pthread_create(out thread, 0, _run, (nint)block);
    }
    /// <summary>Room for glibc's pthread_attr_t on x86-64 (56 bytes).</summary>
    const int PthreadAttrBytes = 64;
    const int PthreadExplicitSched = 1;

    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_create(out nint thread, nint attr, nint start, nint arg);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_attr_init(byte* attr);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_attr_destroy(byte* attr);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_attr_setinheritsched(byte* attr, int inherit);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_attr_setschedpolicy(byte* attr, int policy);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_attr_setschedparam(byte* attr, int* param);
    [LibraryImport(HostSys.Libc)]
    private static partial int pthread_detach(nint thread);

    /// <summary>Generates the two routines once per process: the pulse thread's body and the locked write.</summary>
    static bool Generate(out string? why)
    {
        why = null;
        lock (CodeLock)
        {
            if (_run != 0) return true;
            var a = new Assembler(64);
            var write = a.CreateLabel();
            EmitRun(a);
            a.Label(ref write);
            EmitWrite(a);
            long map = HostSys.Call(Nr.mmap, 0, BlockBytes, ProtRead | ProtWrite, MapPrivateAnonymous, -1, 0);
            if (map < 0) { why = $"cannot map the pulse's code (errno {-map})"; return false; }
            using var ms = new MemoryStream();
            var result = a.Assemble(new StreamCodeWriter(ms), (ulong)map, BlockEncoderOptions.ReturnNewInstructionOffsets);
            if (ms.Length > BlockBytes) throw new InvalidOperationException("the pulse's code outgrew its page");
            ms.ToArray().CopyTo(new Span<byte>((void*)map, BlockBytes));
            long r = HostSys.Call(Nr.mprotect, map, BlockBytes, ProtRead | ProtExec);
            if (r < 0) { why = $"cannot make the pulse's code executable (errno {-r})"; return false; }
            _write = (nint)result.GetLabelRIP(write);
            _run = (nint)map;
            return true;
        }
    }

    /// <summary>
    /// The thread: its id; real-time priority (else nice -10); then every interval, on CLOCK_MONOTONIC with absolute
    /// deadlines: stop if told; skip the pulse while the managed side's keep-alive has passed; take the lock (a nap
    /// while a writer holds it); stamp and write the frame. A failed write (the link shut down or broke) ends it;
    /// EAGAIN before any byte went (the socket's send time-out: the backup stopped reading) skips the pulse. At the
    /// end: close its socket, mark itself ended, let go of the block (unmapping it if the link let go first).
    /// </summary>
    static void EmitRun(Assembler a)
    {
        Label loop = a.CreateLabel(), noCarry = a.CreateLabel(), sleep = a.CreateLabel(), noLate = a.CreateLabel(),
            onTime = a.CreateLabel(), acquire = a.CreateLabel(), locked = a.CreateLabel(), again = a.CreateLabel(),
            failed = a.CreateLabel(), finish = a.CreateLabel(), kept = a.CreateLabel(), niced = a.CreateLabel(),
            stopLocked = a.CreateLabel();
        a.push(rbx); a.push(r12); a.push(r13); a.push(r14); a.push(r15);
        a.mov(rbx, rdi);
        // no signal handler runs on this thread (the runtime's handlers expect threads it knows)
        a.mov(eax, SysRtSigprocmask); a.xor(edi, edi); a.lea(rsi, __[rbx + OffSignalMask]); a.xor(edx, edx); a.mov(r10d, 8); a.syscall();
        a.mov(eax, SysGettid); a.syscall(); a.mov(__dword_ptr[rbx + OffTid], eax);
        a.mov(eax, SysSchedSetscheduler); a.xor(edi, edi); a.mov(esi, ThreadPools.SchedRoundRobin); a.lea(rdx, __[rbx + OffSchedParam]); a.syscall();
        a.mov(__dword_ptr[rbx + OffSchedResult], eax);
        a.test(eax, eax); a.je(niced);
        a.mov(eax, SysSetpriority); a.xor(edi, edi); a.xor(esi, esi); a.mov(edx, ThreadPools.AckPathNice); a.syscall();
        a.mov(__dword_ptr[rbx + OffNiceResult], eax);
        a.Label(ref niced);
        a.mov(eax, SysClockGettime); a.mov(edi, ClockMonotonic); a.lea(rsi, __[rbx + OffNext]); a.syscall();

        a.Label(ref loop);
        // the next deadline: one interval on (below a second, so at most one carry)
        a.mov(rax, __qword_ptr[rbx + OffNext + 8]); a.add(rax, __qword_ptr[rbx + OffIntervalNs]);
        a.cmp(rax, (int)NsPerSecond); a.jb(noCarry);
        a.sub(rax, (int)NsPerSecond); a.inc(__qword_ptr[rbx + OffNext]);
        a.Label(ref noCarry);
        a.mov(__qword_ptr[rbx + OffNext + 8], rax);
        a.Label(ref sleep);
        a.mov(eax, SysClockNanosleep); a.mov(edi, ClockMonotonic); a.mov(esi, TimerAbstime); a.lea(rdx, __[rbx + OffNext]); a.xor(r10d, r10d); a.syscall();
        a.cmp(eax, -EIntr); a.je(sleep);
        a.cmp(__dword_ptr[rbx + OffStop], 0); a.jne(finish);
        // now (r12) and the deadline (r13) in ns; the lateness's maximum kept
        a.mov(eax, SysClockGettime); a.mov(edi, ClockMonotonic); a.lea(rsi, __[rbx + OffNow]); a.syscall();
        a.mov(r12, __qword_ptr[rbx + OffNow]); a.imul(r12, r12, (int)NsPerSecond); a.add(r12, __qword_ptr[rbx + OffNow + 8]);
        a.mov(r13, __qword_ptr[rbx + OffNext]); a.imul(r13, r13, (int)NsPerSecond); a.add(r13, __qword_ptr[rbx + OffNext + 8]);
        a.mov(rax, r12); a.sub(rax, r13);
        a.cmp(rax, __qword_ptr[rbx + OffMaxLateNs]); a.jle(noLate);
        a.mov(__qword_ptr[rbx + OffMaxLateNs], rax);
        a.Label(ref noLate);
        // more than an interval late: the schedule restarts from now (no burst of pulses to catch up)
        a.cmp(rax, __qword_ptr[rbx + OffIntervalNs]); a.jle(onTime);
        a.mov(rax, __qword_ptr[rbx + OffNow]); a.mov(__qword_ptr[rbx + OffNext], rax);
        a.mov(rax, __qword_ptr[rbx + OffNow + 8]); a.mov(__qword_ptr[rbx + OffNext + 8], rax);
        a.Label(ref onTime);
        // the managed side has not run for its grace: no pulse
        a.cmp(r12, __qword_ptr[rbx + OffKeepAliveNs]); a.jg(loop);
        a.Label(ref acquire);
        a.mov(r15d, __dword_ptr[rbx + OffTid]);
        a.xor(eax, eax); a.@lock.cmpxchg(__dword_ptr[rbx + OffLock], r15d); a.je(locked);
        // a writer holds the link: wait in the kernel, which lends the holder this thread's priority until it lets go
        a.inc(__qword_ptr[rbx + OffLockWaits]);
        a.mov(eax, SysFutex); a.lea(rdi, __[rbx + OffLock]); a.mov(esi, FutexLockPiPrivate); a.xor(edx, edx); a.xor(r10d, r10d); a.syscall();
        a.test(eax, eax); a.je(locked);
        // (the wait failed: a nap, then again; a real-time thread must not spin on an ordinary thread's lock)
        a.mov(eax, SysNanosleep); a.lea(rdi, __[rbx + OffBusySleep]); a.xor(esi, esi); a.syscall();
        a.cmp(__dword_ptr[rbx + OffStop], 0); a.jne(finish);
        a.jmp(acquire);
        a.Label(ref locked);
        // told to stop while waiting for the lock: nothing more is written (Stop holds the lock as it tells)
        a.cmp(__dword_ptr[rbx + OffStop], 0); a.jne(stopLocked);
        a.mov(__qword_ptr[rbx + OffFrame + StampInFrame], r12);
        a.xor(r14d, r14d);
        a.Label(ref again);
        a.mov(eax, SysWrite); a.mov(edi, __dword_ptr[rbx + OffPulseFd]); a.lea(rsi, __[rbx + OffFrame]); a.add(rsi, r14);
        a.mov(edx, __dword_ptr[rbx + OffFrameLength]); a.sub(edx, r14d); a.syscall();
        a.cmp(rax, -EIntr); a.je(again);
        a.test(rax, rax); a.jle(failed);
        a.add(r14, rax); a.cmp(r14d, __dword_ptr[rbx + OffFrameLength]); a.jb(again);
        EmitUnlock(a, r15d);
        a.inc(__qword_ptr[rbx + OffPulses]); a.mov(__qword_ptr[rbx + OffLastPulseNs], r12);
        a.jmp(loop);
        a.Label(ref failed);
        a.mov(r13, rax);
        EmitUnlock(a, r15d);
        a.mov(rax, r13);
        // EAGAIN with nothing written: the send time-out passed (the backup is not reading); this pulse is skipped
        a.cmp(rax, -EAgain); a.jne(kept);
        a.test(r14, r14); a.jne(kept);
        a.inc(__qword_ptr[rbx + OffSkipped]);
        a.jmp(loop);
        a.Label(ref kept);
        a.mov(__dword_ptr[rbx + OffError], eax);
        a.jmp(finish);
        a.Label(ref stopLocked);
        EmitUnlock(a, r15d);
        a.Label(ref finish);
        a.mov(eax, SysClose); a.mov(edi, __dword_ptr[rbx + OffPulseFd]); a.syscall();
        a.mov(__dword_ptr[rbx + OffExited], 1);
        var done = a.CreateLabel();
        a.mov(eax, -1); a.@lock.xadd(__dword_ptr[rbx + OffRefs], eax); a.cmp(eax, 1); a.jne(done);
        a.mov(eax, SysMunmap); a.mov(rdi, rbx); a.mov(rsi, __qword_ptr[rbx + OffMapBytes]); a.syscall();
        a.Label(ref done);
        a.xor(eax, eax);
        a.pop(r15); a.pop(r14); a.pop(r13); a.pop(r12); a.pop(rbx);
        a.ret();
    }

    /// <summary>
    /// long write(block, bytes, length): takes the lock (yielding while the pulse thread holds it, for one 15-byte
    /// write), writes every byte (again after EINTR), releases the lock; returns the length or the negative errno.
    /// </summary>
    static void EmitWrite(Assembler a)
    {
        Label acquire = a.CreateLabel(), again = a.CreateLabel(), failed = a.CreateLabel(), unlock = a.CreateLabel();
        a.push(rbx); a.push(r12); a.push(r13); a.push(r14); a.push(r15);
        a.mov(rbx, rdi); a.mov(r12, rsi); a.mov(r13, rdx); a.xor(r14d, r14d);
        a.mov(eax, SysGettid); a.syscall(); a.mov(r15d, eax);
        a.Label(ref acquire);
        a.xor(eax, eax); a.@lock.cmpxchg(__dword_ptr[rbx + OffLock], r15d); a.je(again);
        a.mov(eax, SysFutex); a.lea(rdi, __[rbx + OffLock]); a.mov(esi, FutexLockPiPrivate); a.xor(edx, edx); a.xor(r10d, r10d); a.syscall();
        a.test(eax, eax); a.je(again);
        a.mov(eax, SysSchedYield); a.syscall();
        a.jmp(acquire);
        a.Label(ref again);
        a.mov(eax, SysWrite); a.mov(edi, __dword_ptr[rbx + OffWriterFd]); a.lea(rsi, __[r12 + r14]); a.mov(rdx, r13); a.sub(rdx, r14); a.syscall();
        a.cmp(rax, -EIntr); a.je(again);
        a.test(rax, rax); a.jle(failed);
        a.add(r14, rax); a.cmp(r14, r13); a.jb(again);
        a.jmp(unlock);
        a.Label(ref failed);
        a.mov(r14, rax); // the answer: the negative errno (or 0: nothing more can be written)
        a.Label(ref unlock);
        EmitUnlock(a, r15d);
        a.mov(rax, r14);
        a.pop(r15); a.pop(r14); a.pop(r13); a.pop(r12); a.pop(rbx);
        a.ret();
    }

    /// <summary>Releases the lock held by thread <paramref name="tid"/> (rbx: the block): the word back to 0 unless a
    /// waiter marked it, else the kernel hands it over (FUTEX_UNLOCK_PI). Clobbers rax, rcx, rdx, rsi, rdi, r11.</summary>
    static void EmitUnlock(Assembler a, AssemblerRegister32 tid)
    {
        Label done = a.CreateLabel();
        a.mov(eax, tid); a.xor(ecx, ecx); a.@lock.cmpxchg(__dword_ptr[rbx + OffLock], ecx); a.je(done);
        a.mov(eax, SysFutex); a.lea(rdi, __[rbx + OffLock]); a.mov(esi, FutexUnlockPiPrivate); a.syscall();
        a.Label(ref done);
        a.nop();
    }
}
