using System.Diagnostics;
using System.Reflection;
using ReVirt.Linux;
using Process = System.Diagnostics.Process;

namespace ReVirt.Replication;

/// <summary>
/// Tells the backup that the live replica's process is ending the moment it starts to end, instead of when the kernel
/// gets round to closing its sockets (issue 13: a SIGKILLed process's sockets are closed only after its whole address
/// space is torn down — 20-30 ms on an idle machine, 130-190 ms and more at load 20-40 — and that was most of a
/// failover's detection).
///
/// How: a small process beside the replica (the same program, verb <see cref="Verb"/>) holds a duplicate of the data
/// link's socket and waits on a robust futex that one idle thread of the replica owns. The kernel releases a thread's
/// robust futexes at the very start of that thread's exit (before any memory is torn down, and without waiting for the
/// process's other threads), marking the word FUTEX_OWNER_DIED and waking a waiter; the watcher then shuts the link's
/// socket down, which sends the FIN after every byte the replica wrote — so the backup reads the end of the link
/// exactly as it would after the kernel's close, only sooner, and nothing else about detection changes.
///
/// Contract: the watcher acts only when the replica's process is exiting (killed or ended); a frozen (SIGSTOP), starved
/// or cut-off replica keeps its owner thread and is judged by the silence bound as before, so the watch adds no false
/// takeover, and the arbiter still decides every takeover. If the watcher is missing, killed or too slow, detection
/// falls back to the kernel's close (while the watcher lives it holds the socket, so then to the silence bound).
/// Best effort: without pidfd_getfd (Linux 5.6) or the permission to take the replica's descriptors it reports why
/// and the replica runs unwatched.
/// </summary>
public static unsafe class ExitWatch
{
    /// <summary>The verb the replica's own program runs the watcher under (internal: not for operators).</summary>
    public const string Verb = "exit-watch";

    // futex word layout (include/uapi/linux/futex.h)
    const uint FutexWaiters = 0x8000_0000, FutexOwnerDied = 0x4000_0000, FutexTidMask = 0x3fff_ffff;
    const int FutexWait = 0; // without FUTEX_PRIVATE_FLAG: the word is in a shared mapping, waited on from another process
    const int PageBytes = 4096;
    // the shared page: the futex word, the robust list head (struct robust_list_head) and its one entry
    const int WordOffset = 0, HeadOffset = 64, EntryOffset = 128;
    const int RobustListHeadBytes = 24;
    const int MfdCloexec = 1, ProtRead = 1, ProtWrite = 2, MapShared = 1, ShutRdWr = 2, PollIn = 1;
    const int ETimedOut = 110, EAgain = 11, EIntr = 4;
    const int CloseRangeCloexec = 1 << 2; // CLOSE_RANGE_CLOEXEC (Linux 5.11): mark, do not close

    /// <summary>What the watcher prints once it holds the descriptors and waits.</summary>
    const string WatchingLine = "watching";
    const int ESrch = 3;

    static readonly object Gate = new();
    static int _lockFd = -1;
    static string? _unavailable;

    /// <summary>
    /// The replica's side: starts a watcher for <paramref name="link"/> (the owner thread is made once per process).
    /// Returns the watcher (dispose it when the link ends: it is then no longer needed) or null with the reason in
    /// <paramref name="why"/>. <paramref name="watching"/> (with the watcher's pid) is called once the watcher holds the descriptors and waits
    /// (from then on a death of this process ends the link at once); <paramref name="failed"/> gets the reason if the
    /// watcher stops watching on its own.
    /// </summary>
    public static Watcher? Start(DataLink link, Action<int> watching, Action<string> failed, out string? why)
    {
        why = null;
        if (!OperatingSystem.IsLinux()) { why = "not Linux"; return null; }
        int lockFd = OwnerLock(out why);
        if (lockFd < 0) return null;
        var (file, prefix) = OwnProgram();
        var psi = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            // its stdio is not the replica's (stdout is the guest's output): it says on its stdout when it watches
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        psi.ArgumentList.Add(Verb);
        psi.ArgumentList.Add(Environment.ProcessId.ToString());
        psi.ArgumentList.Add(lockFd.ToString());
        psi.ArgumentList.Add(link.Descriptor.ToString());
        try
        {
            var p = new Process { StartInfo = psi, EnableRaisingEvents = true };
            var w = new Watcher(p);
            p.ErrorDataReceived += (_, e) => { if (e.Data != null) w.Errors.Enqueue(e.Data); };
            p.OutputDataReceived += (_, e) => { if (e.Data == WatchingLine) watching(w.Pid); };
            p.Exited += (_, _) => { if (!w.Disposed && w.Failure is { } f) failed(f); };
            // the watcher must hold none of this process's descriptors but the two it takes itself: one the guest opened
            // without O_CLOEXEC would stay open in it (a socket the guest closes would not be closed while it lives).
            // The mark is on this process's descriptors, for good, not only for this start. Contract: the caller's
            // process starts no program that is meant to inherit a descriptor above 2. That holds for `primary protect`
            // and `backup listen` (a guest's execve is the VM's; the only program they start is this watcher) and for a
            // .NET host that runs a replica in-process (a test host): .NET opens its own descriptors close-on-exec
            // anyway and Process.Start gives a child only its stdin/stdout/stderr (copied onto 0-2 in the child), so
            // the mark changes nothing for the programs such a host starts. A host that made a descriptor inheritable on
            // purpose for a child must not turn the exit watch on. Descriptors opened after this call are not marked.
            HostSys.Call(Nr.close_range, 3, uint.MaxValue, CloseRangeCloexec);
            p.Start();
            p.BeginErrorReadLine();
            p.BeginOutputReadLine();
            return w;
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException or IOException)
        {
            why = $"cannot start the exit watch: {e.Message}";
            return null;
        }
    }

    /// <summary>A running watcher process (this replica's child).</summary>
    public sealed class Watcher(Process process) : IDisposable
    {
        internal readonly System.Collections.Concurrent.ConcurrentQueue<string> Errors = new();
        internal volatile bool Disposed;
        public int Pid => process.Id;

        /// <summary>Why the watcher stopped (it could not take the descriptors), or null while it watches.</summary>
        internal string? Failure
        {
            get
            {
                try
                {
                    if (!process.HasExited || process.ExitCode == 0) return null;
                    process.WaitForExit(1000); // the rest of its stderr
                    return Errors.TryPeek(out var m) ? m : $"the exit watch ended with status {process.ExitCode}";
                }
                catch (InvalidOperationException) { return null; }
            }
        }

        /// <summary>Ends the watcher (the link it watches was closed by this replica).</summary>
        public void Dispose()
        {
            Disposed = true;
            try { if (!process.HasExited) process.Kill(); } catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception) { }
            process.Dispose();
        }
    }

    /// <summary>The program this process runs (dotnet and the entry assembly, or the app's own executable).</summary>
    static (string File, string[] Prefix) OwnProgram()
    {
        string host = Environment.ProcessPath ?? "dotnet";
        string? entry = Assembly.GetEntryAssembly()?.Location;
        return Path.GetFileNameWithoutExtension(host) == "dotnet" && !string.IsNullOrEmpty(entry) ? (host, [entry]) : (host, []);
    }

    /// <summary>
    /// The shared page whose futex word an idle thread of this process owns through its robust list (made at the first
    /// call). The thread is real-time when allowed (a SIGKILL's wake-up of a real-time thread runs its exit at once on a
    /// loaded machine) and does nothing but sleep.
    /// </summary>
    static int OwnerLock(out string? why)
    {
        lock (Gate)
        {
            why = _unavailable;
            if (_lockFd >= 0 || _unavailable != null) return _lockFd;
            long fd = HostSys.WithPath(Nr.memfd_create, "revirt-exit-watch", p => HostSys.Call(Nr.memfd_create, p, MfdCloexec));
            if (fd < 0) { why = _unavailable = $"memfd_create: errno {-fd}"; return -1; }
            long r = HostSys.Call(Nr.ftruncate, fd, PageBytes);
            long page = r < 0 ? r : HostSys.Call(Nr.mmap, 0, PageBytes, ProtRead | ProtWrite, MapShared, fd, 0);
            if (page < 0) { HostSys.Call(Nr.close, fd); why = _unavailable = $"the shared page: errno {-page}"; return -1; }
            var ready = new ManualResetEventSlim();
            long result = 0;
            var owner = new Thread(() =>
            {
                ThreadPools.MakeCurrentThreadRealtime();
                byte* b = (byte*)page;
                long tid = HostSys.Call(Nr.gettid);
                *(uint*)(b + WordOffset) = (uint)tid;
                // struct robust_list_head { robust_list *next; long futex_offset; robust_list *list_op_pending; }: one
                // entry, whose futex word lies futex_offset bytes from it; the entry points back at the head (a ring)
                *(long*)(b + HeadOffset) = (long)(b + EntryOffset);
                *(long*)(b + HeadOffset + 8) = WordOffset - EntryOffset;
                *(long*)(b + HeadOffset + 16) = 0;
                *(long*)(b + EntryOffset) = (long)(b + HeadOffset);
                // replaces the C library's list head for this thread only; it never takes a C library robust mutex
                result = HostSys.Call(Nr.set_robust_list, (long)(b + HeadOffset), RobustListHeadBytes);
                ready.Set();
                Thread.Sleep(Timeout.Infinite);
            }) { Name = "exit-watch-owner", IsBackground = true };
            owner.Start();
            if (!ready.Wait(TimeSpan.FromSeconds(10))) result = -ETimedOut;
            if (result < 0) { why = _unavailable = $"set_robust_list: errno {-result}"; return -1; }
            return _lockFd = (int)fd;
        }
    }

    /// <summary>
    /// The watcher process: <c>exit-watch PID LOCK-FD LINK-FD</c>. Takes the replica's shared page and link socket
    /// (pidfd_getfd), waits until the owner thread's exit marks the word, then shuts the socket down and ends.
    /// Exit status 0 when it acted (or the replica was gone already), 2 when it could not watch (reason on stderr).
    /// </summary>
    public static int RunWatcher(string[] args)
    {
        if (args.Length != 4 || !int.TryParse(args[1], out int pid) || !int.TryParse(args[2], out int lockFd) || !int.TryParse(args[3], out int linkFd))
        {
            Console.Error.WriteLine($"usage: {Verb} PID LOCK-FD LINK-FD (started by a protected replica for itself)");
            return 2;
        }
        long pidfd = HostSys.Call(Nr.pidfd_open, pid, 0);
        if (pidfd < 0) { Console.Error.WriteLine($"{Verb}: pidfd_open({pid}): errno {-pidfd}"); return -pidfd == ESrch ? 0 : 2; }
        long page = -1, link = HostSys.Call(Nr.pidfd_getfd, pidfd, linkFd, 0);
        long lk = link < 0 ? link : HostSys.Call(Nr.pidfd_getfd, pidfd, lockFd, 0);
        if (lk >= 0) page = HostSys.Call(Nr.mmap, 0, PageBytes, ProtRead | ProtWrite, MapShared, lk, 0);
        if (link < 0 || lk < 0 || page < 0)
        {
            if (Exited(pidfd)) return 0;
            Console.Error.WriteLine($"{Verb}: cannot take the replica's descriptors: errno {-Math.Min(link, Math.Min(lk, page))}");
            return 2;
        }
        ThreadPools.MakeCurrentThreadRealtime();
        Console.Out.WriteLine(WatchingLine);
        Console.Out.Flush();
        WaitForOwnerExit((uint*)((byte*)page + WordOffset), pidfd);
        // the FIN follows every byte the replica wrote; the backup reads the link's end as after the kernel's close
        HostSys.Call(Nr.shutdown, link, ShutRdWr);
        return 0;
    }

    /// <summary>Waits until the word's owner died (the kernel set FUTEX_OWNER_DIED) or the process is gone.</summary>
    static void WaitForOwnerExit(uint* word, long pidfd)
    {
        var timeout = stackalloc long[2];
        while (true)
        {
            uint v = Volatile.Read(ref *word);
            if ((v & FutexOwnerDied) != 0 || (v & FutexTidMask) == 0) return;
            // the kernel wakes a waiter only when FUTEX_WAITERS is set
            if ((v & FutexWaiters) == 0)
            {
                if (Interlocked.CompareExchange(ref *word, v | FutexWaiters, v) != v) continue;
                v |= FutexWaiters;
            }
            timeout[0] = 1; timeout[1] = 0; // a second: then also ask whether the process is gone (belt and braces)
            long r = HostSys.Call(Nr.futex, (long)word, FutexWait, v, (long)timeout);
            if (r < 0 && -r != ETimedOut && -r != EAgain && -r != EIntr) { if (Exited(pidfd)) return; Thread.Sleep(100); }
            if (r == -ETimedOut && Exited(pidfd)) return;
        }
    }

    static bool Exited(long pidfd)
    {
        var pfd = stackalloc int[2];
        pfd[0] = (int)pidfd; pfd[1] = PollIn;
        return HostSys.Call(Nr.poll, (long)pfd, 1, 0) > 0;
    }
}
