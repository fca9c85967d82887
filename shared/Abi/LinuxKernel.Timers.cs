using System.Buffers.Binary;
using CpuT = ReVirt.Cpu.Cpu;

namespace ReVirt.Abi;

/// <summary>Interval timers (setitimer, alarm): host timers that post signals to the guest. They exist only in a
/// live or recording run (they are created inside host operations); a replay receives the signals from the log.</summary>
public sealed partial class LinuxKernel
{
    sealed class HostTimer
    {
        public Timer? Timer;
        public DateTime Due;
        public TimeSpan Interval;
    }

    readonly HostTimer[] _itimers = { new(), new(), new() };

    static int TimerSignal(int which) => which switch { 0 => 14, 1 => 26, _ => 27 };

    long Setitimer(CpuT cpu, int which, ulong newAddr, ulong oldAddr)
    {
        if (which < 0 || which > 2) return -Errno.EINVAL;
        byte[]? nv = newAddr != 0 ? Mem.ReadBytes(newAddr, 32) : null;
        if (oldAddr != 0) CheckWritable(oldAddr, 32);
        return Host(cpu, Nr.setitimer, () =>
        {
            var res = HostResult.Of(0);
            var t = _itimers[which];
            if (oldAddr != 0) res.Write(oldAddr, EncodeItimer(t));
            if (nv != null)
            {
                var interval = ToSpan(nv, 0);
                var value = ToSpan(nv, 16);
                Arm(which, value, interval);
            }
            return res;
        }).Value;
    }

    long Getitimer(CpuT cpu, int which, ulong addr)
    {
        if (which < 0 || which > 2) return -Errno.EINVAL;
        CheckWritable(addr, 32);
        return Host(cpu, Nr.getitimer, () => HostResult.Of(0).Write(addr, EncodeItimer(_itimers[which]))).Value;
    }

    long Alarm(CpuT cpu, uint seconds)
    {
        return Host(cpu, Nr.alarm, () =>
        {
            var t = _itimers[0];
            long remaining = t.Timer == null ? 0 : (long)Math.Ceiling(Math.Max(0, (t.Due - DateTime.UtcNow).TotalSeconds));
            Arm(0, TimeSpan.FromSeconds(seconds), TimeSpan.Zero);
            return HostResult.Of(remaining);
        }).Value;
    }

    void Arm(int which, TimeSpan value, TimeSpan interval)
    {
        var t = _itimers[which];
        t.Timer?.Dispose();
        t.Timer = null;
        if (value <= TimeSpan.Zero) return;
        int sig = TimerSignal(which);
        t.Due = DateTime.UtcNow + value;
        t.Interval = interval;
        t.Timer = new Timer(_ =>
        {
            if (Exited) return;
            if (t.Interval > TimeSpan.Zero) t.Due = DateTime.UtcNow + t.Interval;
            PostHostSignal(sig);
        }, null, value, interval > TimeSpan.Zero ? interval : Timeout.InfiniteTimeSpan);
    }

    static TimeSpan ToSpan(byte[] b, int o)
    {
        long sec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o)), usec = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(o + 8));
        return TimeSpan.FromTicks(sec * TimeSpan.TicksPerSecond + usec * 10);
    }

    static byte[] EncodeItimer(HostTimer t)
    {
        var b = new byte[32];
        if (t.Timer != null)
        {
            var rem = t.Due - DateTime.UtcNow;
            if (rem < TimeSpan.Zero) rem = TimeSpan.FromTicks(10);
            BinaryPrimitives.WriteInt64LittleEndian(b, (long)t.Interval.TotalSeconds);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), (t.Interval.Ticks % TimeSpan.TicksPerSecond) / 10);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(16), (long)rem.TotalSeconds);
            BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(24), (rem.Ticks % TimeSpan.TicksPerSecond) / 10);
        }
        return b;
    }

    void StopTimers()
    {
        foreach (var t in _itimers) { t.Timer?.Dispose(); t.Timer = null; }
    }
}
