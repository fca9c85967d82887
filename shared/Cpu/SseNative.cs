using System.Runtime.InteropServices;
using Iced.Intel;

namespace ReVirt.Cpu;

/// <summary>
/// Exact SSE floating point by running the very instruction on the host CPU under the guest's MXCSR.
/// <para>
/// For every floating-point instruction form (by Iced <see cref="Code"/>, and for the compare forms by
/// predicate) a tiny native stub is generated once into executable memory:
/// save host MXCSR; load the guest MXCSR (all exceptions masked); load xmm0, xmm1, rax from a scratch block;
/// run the instruction in its register form (op xmm0/rax, xmm1/rax); store xmm0, rax, rflags and the new MXCSR
/// back; restore the host MXCSR. The result, the NaN propagation, rounding control, DAZ/FTZ and every MXCSR
/// exception flag are therefore those of real hardware. The host is x86-64 (the VM's only supported host), so
/// every SSE/SSE2 instruction exists there. Scratch layout: [0,16) xmm0, [16,32) xmm1, [32,40) rax,
/// [40,44) MXCSR, [48,56) rflags.
/// </para>
/// The managed fast paths in Isa.SseFloat.cs avoid the call when the result is provably flag-free.
/// </summary>
internal static unsafe class SseNative
{
    public const int OffDst = 0, OffSrc = 16, OffGpr = 32, OffMxcsr = 40, OffFlags = 48, ScratchSize = 64;
    const int Slot = 96;

    /// <summary>Stub entry by Code; compare forms have 8 consecutive stubs (one per predicate), Slot bytes apart.</summary>
    static readonly nint[] StubByCode = new nint[IcedCounts.Code];
    static readonly byte[] Op0Gpr = new byte[IcedCounts.Code]; // 0 xmm, 4 r32, 8 r64
    static readonly byte[] Op1Gpr = new byte[IcedCounts.Code];
    static readonly bool[] Described = new bool[IcedCounts.Code];
    static readonly object Lock = new();
    static byte* _region;
    static int _used, _size;

    [DllImport("libc", SetLastError = true)]
    static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);
    [DllImport("libc", SetLastError = true)]
    static extern int mprotect(nint addr, nuint len, int prot);

    static readonly byte[] Prologue =
    {
        0x48, 0x83, 0xEC, 0x08,       // sub rsp, 8
        0x0F, 0xAE, 0x1C, 0x24,       // stmxcsr [rsp]
        0x0F, 0xAE, 0x57, 0x28,       // ldmxcsr [rdi+40]
        0x0F, 0x10, 0x07,             // movups xmm0, [rdi]
        0x0F, 0x10, 0x4F, 0x10,       // movups xmm1, [rdi+16]
        0x48, 0x8B, 0x47, 0x20,       // mov rax, [rdi+32]
    };
    static readonly byte[] Epilogue =
    {
        0x9C, 0x59,                   // pushfq; pop rcx
        0x0F, 0x11, 0x07,             // movups [rdi], xmm0
        0x48, 0x89, 0x47, 0x20,       // mov [rdi+32], rax
        0x48, 0x89, 0x4F, 0x30,       // mov [rdi+48], rcx
        0x0F, 0xAE, 0x5F, 0x28,       // stmxcsr [rdi+40]
        0x0F, 0xAE, 0x14, 0x24,       // ldmxcsr [rsp]
        0x48, 0x83, 0xC4, 0x08,       // add rsp, 8
        0xC3,                         // ret
    };

    sealed class Writer : CodeWriter
    {
        public readonly List<byte> Bytes = new();
        public override void WriteByte(byte value) => Bytes.Add(value);
    }

    static bool HasImm(Code code) => code is Code.Cmpps_xmm_xmmm128_imm8 or Code.Cmppd_xmm_xmmm128_imm8
        or Code.Cmpss_xmm_xmmm32_imm8 or Code.Cmpsd_xmm_xmmm64_imm8;

    /// <summary>The stub's register for operand n of a form whose operand is a general register of this width
    /// (<see cref="Op0Gpr"/>), else an XMM register.</summary>
    static Register OpReg(byte gpr, int n) => gpr switch
    {
        8 => Register.RAX,
        4 => Register.EAX,
        _ => n == 0 ? Register.XMM0 : Register.XMM1,
    };

    /// <summary>The width of a general-register operand (register, or memory read as an integer: cvtsi2sd's rm32/rm64),
    /// 0 for an XMM register or floating-point memory.</summary>
    static byte GprWidth(OpKind kind, Register reg, MemorySize size) => kind switch
    {
        OpKind.Register => reg.IsGPR64() ? (byte)8 : reg.IsGPR32() ? (byte)4 : (byte)0,
        OpKind.Memory => size is MemorySize.Int64 or MemorySize.UInt64 ? (byte)8 : size is MemorySize.Int32 or MemorySize.UInt32 ? (byte)4 : (byte)0,
        _ => 0,
    };

    /// <summary>Whether the operand layout of the form is known (<see cref="Describe"/>).</summary>
    public static bool IsDescribed(Code code) => Volatile.Read(ref Described[(int)code]);

    /// <summary>Records the operand layout of a native-capable form from its first decoded instruction, before its
    /// first execution. Not from Iced's opcode tables (Code.ToOpCode): building them formats some 5,000 opcode
    /// strings, a fifth of an ahead-of-time compiled run's start-up when it was done at registration. Every
    /// instruction of a form has the same layout, so machines on other threads that describe it too write the same
    /// values.</summary>
    public static void Describe(ref Instruction i)
    {
        int c = (int)i.Code;
        Op0Gpr[c] = GprWidth(i.Op0Kind, i.Op0Register, i.MemorySize);
        Op1Gpr[c] = GprWidth(i.Op1Kind, i.Op1Register, i.MemorySize);
        Volatile.Write(ref Described[c], true);
    }

    /// <summary>Generates (once) the stubs for a code, on its first execution.</summary>
    static nint Prepare(Code code)
    {
        lock (Lock)
        {
            if (StubByCode[(int)code] != 0) return StubByCode[(int)code];
            Register r0 = OpReg(Op0Gpr[(int)code], 0);
            Register r1 = OpReg(Op1Gpr[(int)code], 1);
            int variants = HasImm(code) ? 8 : 1;
            EnsureRegion(variants * Slot);
            byte* start = _region + _used;
            for (int v = 0; v < variants; v++)
            {
                var ins = variants > 1 ? Instruction.Create(code, r0, r1, v) : Instruction.Create(code, r0, r1);
                var w = new Writer();
                w.Bytes.AddRange(Prologue);
                Encoder.Create(64, w).Encode(ins, 0);
                w.Bytes.AddRange(Epilogue);
                if (w.Bytes.Count > Slot) throw new InvalidOperationException("SSE stub too long");
                byte* p = start + v * Slot;
                for (int k = 0; k < w.Bytes.Count; k++) p[k] = w.Bytes[k];
            }
            _used += variants * Slot;
            Volatile.Write(ref StubByCode[(int)code], (nint)start);
            return (nint)start;
        }
    }

    static void EnsureRegion(int need)
    {
        if (_region != null && _used + need <= _size) return;
        const int size = 64 * 1024;
        nint p = mmap(0, size, 7 /* RWX */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, -1, 0);
        if (p == -1 || p == 0) throw new InvalidOperationException($"cannot map executable memory for SSE stubs (errno {Marshal.GetLastPInvokeError()})");
        _region = (byte*)p; _used = 0; _size = size;
    }

    public static bool Op0IsGpr(Code code) => Op0Gpr[(int)code] != 0;
    public static bool Op1IsGpr(Code code) => Op1Gpr[(int)code] != 0;

    /// <summary>
    /// Runs the stub for (code, imm) on the scratch block, with the guest MXCSR's control bits but every
    /// exception masked on the host. Merges the raised flags into the guest MXCSR; raises SIGFPE (leaving the
    /// destination untouched, as hardware does) when a raised exception is unmasked in the guest.
    /// </summary>
    public static void Run(VirtualCpu c, ref Instruction i, byte* s, int imm)
    {
        nint stub = StubByCode[(int)i.Code];
        if (stub == 0) stub = Prepare(i.Code);
        stub += (imm & 7) * Slot;
        uint guest = c.Mxcsr;
        *(uint*)(s + OffMxcsr) = (guest & 0xFFC0u) | 0x1F80u;
        ((delegate* unmanaged[SuppressGCTransition]<byte*, void>)stub)(s);
        uint raised = *(uint*)(s + OffMxcsr) & 0x3F;
        c.Mxcsr = guest | raised;
        uint unmasked = raised & ~(guest >> 7) & 0x3F;
        if (unmasked != 0)
        {
            int code = (unmasked & 1) != 0 ? 7 /* FPE_FLTINV */ : (unmasked & 4) != 0 ? 3 /* FPE_FLTDIV */
                : (unmasked & 8) != 0 ? 4 /* FPE_FLTOVF */ : (unmasked & 0x12) != 0 ? 5 /* FPE_FLTUND */ : 6 /* FPE_FLTRES */;
            throw new GuestSignalException(8, $"SIMD floating-point exception (mxcsr 0x{c.Mxcsr:x}) at 0x{i.IP:x}", code, i.IP);
        }
    }
}
