using System.Reflection;
using System.Runtime.CompilerServices;
using ReVirt.Linux;

namespace ReVirt.Replay;

/// <summary>
/// A following backup compiles the code of its takeover ahead (issue 13: the failover stall). A takeover runs code the
/// replay never ran — giving descriptors host descriptors (<see cref="TakeoverAgent"/>), bringing the virtual interface
/// up (<see cref="VirtualNic.TakeOver"/>, the stack's resynchronisation), renewing host waits — and each method's first
/// call waited for the JIT on the failover's critical path (tens of milliseconds in all, hundreds on a loaded machine).
/// Here a background thread of low priority asks the runtime to compile those methods (and their lambdas and local
/// functions) while the backup follows, once per process. It changes no state: only when the code is compiled.
/// </summary>
public static class TakeoverWarmup
{
    static int _started;

    /// <summary>Types whose methods a takeover calls for the first time.</summary>
    static readonly Type[] Types =
    [
        typeof(TakeoverAgent), typeof(ReplayBoundary), typeof(RecordingBoundary),
        typeof(VirtualNic), typeof(TapDevice), typeof(ReVirt.Net.NetStack), typeof(ReVirt.Net.TcpSocket),
        typeof(Kernel),
    ];

    /// <summary>Starts the warm-up (once per process; later calls do nothing).</summary>
    public static void Start()
    {
        if (Interlocked.Exchange(ref _started, 1) != 0) return;
        var t = new Thread(() => { foreach (var type in Types) Prepare(type); })
        {
            IsBackground = true, Priority = ThreadPriority.Lowest, Name = "takeover warm-up",
        };
        t.Start();
    }

    const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    /// <summary>Compiles every method of <paramref name="type"/> and of its nested types (the compiler puts lambdas
    /// and local functions there) that can be compiled without type arguments.</summary>
    static void Prepare(Type type)
    {
        if (type.ContainsGenericParameters) return;
        foreach (var m in type.GetMethods(All).Cast<MethodBase>().Concat(type.GetConstructors(All)))
        {
            if (m.IsAbstract || m.ContainsGenericParameters || m.GetMethodBody() == null) continue;
            try { RuntimeHelpers.PrepareMethod(m.MethodHandle); }
            catch (Exception e) when (e is ArgumentException or NotSupportedException or TypeLoadException or BadImageFormatException) { }
        }
        foreach (var nested in type.GetNestedTypes(All)) Prepare(nested);
    }
}
