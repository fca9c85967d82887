using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.Oracle;

/// <summary>
/// Host-CPU oracle for differential CPU tests: runs a machine-code snippet natively, starting from exactly the
/// register state of a <see cref="CpuSnapshot"/>, and returns the state afterwards.
/// </summary>
/// <remarks>
/// <para>Memory layout (both regions at fixed addresses, so the VM under test can map the same guest addresses and
/// memory operands, RIP-relative operands and branch targets compare exactly):</para>
/// <list type="bullet">
/// <item><see cref="ScratchBase"/> .. +<see cref="ScratchSize"/> (RW): the first <see cref="DataSize"/> bytes are
/// test data (registers may point there); the rest is the snippet's private stack. Before each run
/// <see cref="CpuSnapshot.Memory"/> is copied to <see cref="ScratchBase"/> and the rest of the region is zeroed;
/// afterwards the same number of bytes is copied back into the output snapshot.</item>
/// <item><see cref="CodeBase"/> .. +<see cref="CodeSize"/>: trampoline (RX), then the snippet at
/// <see cref="SnippetAddress"/> (RWX if the kernel allows it, else rewritten each run as RW then RX), then a private
/// RW context page.</item>
/// </list>
/// <para>RSP convention: the snippet runs on the scratch stack, so the input RSP must lie in
/// [<see cref="MinRsp"/>, <see cref="MaxRsp"/>] (use <see cref="DefaultRsp"/> or <see cref="CpuSnapshot.Create"/>);
/// anything else throws <see cref="ArgumentOutOfRangeException"/>. Give the VM the same RSP.
/// The region below RSP may be clobbered if the kernel delivers a signal during the run, so tests must not
/// depend on memory below RSP that the snippet did not write itself.</para>
/// <para>RFLAGS: only CF PF AF ZF SF OF and DF are taken from the input (bit 1 is set, everything else is clear).
/// The output RFLAGS is the raw pushfq value (so e.g. IF is set); compare with a flag mask. DF is cleared before
/// returning to .NET. MXCSR is loaded from the input (default 0x1F80) and x87 is FNINIT-ed; the host's x87/SSE
/// control state is restored afterwards.</para>
/// <para>Tests must generate only safe snippets: no faults (#UD, #GP, #PF, #DE, unmasked SIMD exceptions...), no
/// system calls, no memory accesses outside the scratch region, no stack use beyond it, no changes to FS/GS, and
/// control must leave the snippet by falling off its last byte (branches inside it are fine; no ret or jumps out).
/// A fault kills the whole test process; it is not caught.</para>
/// </remarks>
public static unsafe class NativeRunner
{
    /// <summary>Fixed address of the scratch data + stack region.</summary>
    public const ulong ScratchBase = 0x1000_0000;

    /// <summary>Total size of the scratch region (data + stack).</summary>
    public const int ScratchSize = 0x1_0000;

    /// <summary>Size of the data part at the start of the scratch region; default length of <see cref="CpuSnapshot.Memory"/>.</summary>
    public const int DataSize = 0x1000;

    /// <summary>Exclusive top of the scratch stack.</summary>
    public const ulong StackTop = ScratchBase + ScratchSize;

    /// <summary>Default input RSP: 256 bytes below the top of the scratch region (so [rsp+8] etc. are readable zeros).</summary>
    public const ulong DefaultRsp = StackTop - 0x100;

    /// <summary>Lowest allowed input RSP (leaves 8 KiB of stack below it for pushes and signal frames).</summary>
    public const ulong MinRsp = ScratchBase + DataSize + 0x2000;

    /// <summary>Highest allowed input RSP.</summary>
    public const ulong MaxRsp = StackTop;

    /// <summary>Fixed address of the executable region (trampoline, snippet, context page).</summary>
    public const ulong CodeBase = 0x1010_0000;

    /// <summary>Size of the executable region.</summary>
    public const int CodeSize = 0x1_0000;

    /// <summary>Address at which the snippet runs; assemble snippets for this RIP (see <see cref="Asm"/>).</summary>
    public const ulong SnippetAddress = CodeBase + 0x1000;

    private const ulong ContextAddress = CodeBase + CodeSize - 0x1000;
    private const int SnippetAreaSize = (int)(ContextAddress - SnippetAddress);
    private const int JmpSize = 5;

    /// <summary>Maximum snippet length in bytes.</summary>
    public const int MaxCodeLength = SnippetAreaSize - JmpSize;

    // Context page layout (offsets from ContextAddress).
    private const ulong InGpr = ContextAddress + 0x000;   // 16 * 8
    private const ulong InRflags = ContextAddress + 0x080;
    private const ulong InMxcsr = ContextAddress + 0x088;
    private const ulong HostRsp = ContextAddress + 0x090;
    private const ulong OutRflags = ContextAddress + 0x098;
    private const ulong OutMxcsr = ContextAddress + 0x0A0;
    private const ulong InXmm = ContextAddress + 0x100;   // 16 * 16
    private const ulong OutGpr = ContextAddress + 0x200;  // 16 * 8
    private const ulong OutXmm = ContextAddress + 0x300;  // 16 * 16
    private const ulong HostFx = ContextAddress + 0x400;  // 512, 16-aligned

    private const int PROT_READ = 1, PROT_WRITE = 2, PROT_EXEC = 4;
    private const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_FIXED_NOREPLACE = 0x100000;

    [DllImport("libc", SetLastError = true)]
    private static extern nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [DllImport("libc", SetLastError = true)]
    private static extern int mprotect(nint addr, nuint len, int prot);

    [DllImport("libc", SetLastError = true)]
    private static extern int munmap(nint addr, nuint length);

    private static readonly Lock Gate = new();
    private static bool initialized;
    private static ulong epilogueAddress;
    private static int lastUsed;
    private static bool snippetRwx;

    /// <summary>True when the host can run snippets (Linux on x86-64).</summary>
    public static bool IsSupported =>
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <summary>Assembles a snippet with Iced for RIP = <see cref="SnippetAddress"/>.</summary>
    public static byte[] Asm(Action<Assembler> build)
    {
        ArgumentNullException.ThrowIfNull(build);
        var a = new Assembler(64);
        build(a);
        using var ms = new MemoryStream();
        a.Assemble(new StreamCodeWriter(ms), SnippetAddress);
        return ms.ToArray();
    }

    /// <summary>Assembles and runs a snippet.</summary>
    public static CpuSnapshot Run(Action<Assembler> build, CpuSnapshot input) => Run(Asm(build), input);

    /// <summary>
    /// Runs <paramref name="code"/> natively at <see cref="SnippetAddress"/> from the state in <paramref name="input"/>
    /// and returns the resulting state. Thread-safe (runs are serialized).
    /// </summary>
    public static CpuSnapshot Run(byte[] code, CpuSnapshot input)
    {
        ArgumentNullException.ThrowIfNull(code);
        ArgumentNullException.ThrowIfNull(input);
        if (!IsSupported)
            throw new PlatformNotSupportedException("NativeRunner needs Linux on x86-64.");
        if (code.Length > MaxCodeLength)
            throw new ArgumentException($"Snippet is {code.Length} bytes; at most {MaxCodeLength} allowed.", nameof(code));
        if (input.Gpr is not { Length: 16 })
            throw new ArgumentException("Gpr must have 16 elements.", nameof(input));
        if (input.Xmm is not { Length: 16 })
            throw new ArgumentException("Xmm must have 16 elements.", nameof(input));
        if (input.Memory is null || input.Memory.Length > ScratchSize)
            throw new ArgumentException($"Memory must be non-null and at most {ScratchSize} bytes.", nameof(input));
        ulong rsp = input.Gpr[CpuSnapshot.RSP];
        if (rsp < MinRsp || rsp > MaxRsp)
            throw new ArgumentOutOfRangeException(nameof(input),
                $"Input RSP 0x{rsp:X} must lie in the scratch stack [0x{MinRsp:X}, 0x{MaxRsp:X}] (use NativeRunner.DefaultRsp).");

        lock (Gate)
        {
            EnsureInitialized();

            // Snippet + "jmp epilogue". The previous snippet's bytes are overwritten with int3 so a stray jump
            // cannot run stale code. mprotect is slow (~60 us per call under a hypervisor), so the snippet pages are
            // RWX when the kernel allows it and write-then-RX otherwise.
            int used = code.Length + JmpSize;
            int dirty = Math.Max(used, lastUsed);
            int pages = (dirty + 0xFFF) & ~0xFFF;
            var snippet = (nint)SnippetAddress;
            if (!snippetRwx)
                Check(mprotect(snippet, (nuint)pages, PROT_READ | PROT_WRITE), "mprotect RW");
            var area = new Span<byte>((void*)snippet, pages);
            area[..dirty].Fill(0xCC);
            code.CopyTo(area);
            ulong jmpAt = SnippetAddress + (ulong)code.Length;
            area[code.Length] = 0xE9;
            BitConverter.TryWriteBytes(area.Slice(code.Length + 1, 4), checked((int)((long)epilogueAddress - (long)(jmpAt + JmpSize))));
            if (!snippetRwx)
                Check(mprotect(snippet, (nuint)pages, PROT_READ | PROT_EXEC), "mprotect RX");
            lastUsed = used;

            // Scratch memory.
            var scratch = new Span<byte>((void*)ScratchBase, ScratchSize);
            scratch.Clear();
            input.Memory.CopyTo(scratch);

            // Input context.
            for (int i = 0; i < 16; i++)
            {
                *(ulong*)(InGpr + (ulong)i * 8) = input.Gpr[i];
                *(UInt128*)(InXmm + (ulong)i * 16) = input.Xmm[i];
            }
            *(ulong*)InRflags = (input.Rflags & CpuSnapshot.InputFlags) | 0x2;
            *(uint*)InMxcsr = input.Mxcsr;

            ((delegate* unmanaged<void>)CodeBase)();

            var output = new CpuSnapshot
            {
                Rflags = *(ulong*)OutRflags,
                Mxcsr = *(uint*)OutMxcsr,
                Memory = scratch[..input.Memory.Length].ToArray(),
            };
            for (int i = 0; i < 16; i++)
            {
                output.Gpr[i] = *(ulong*)(OutGpr + (ulong)i * 8);
                output.Xmm[i] = *(UInt128*)(OutXmm + (ulong)i * 16);
            }
            return output;
        }
    }

    private static void EnsureInitialized()
    {
        if (initialized)
            return;

        MapFixed(ScratchBase, ScratchSize, PROT_READ | PROT_WRITE);
        try
        {
            MapFixed(CodeBase, CodeSize, PROT_READ | PROT_WRITE);
            try
            {
                byte[] trampoline = BuildTrampoline(out epilogueAddress);
                if (trampoline.Length > (int)(SnippetAddress - CodeBase))
                    throw new InvalidOperationException("Trampoline does not fit in its page.");
                trampoline.CopyTo(new Span<byte>((void*)CodeBase, trampoline.Length));
                new Span<byte>((void*)SnippetAddress, SnippetAreaSize).Fill(0xCC);
                Check(mprotect((nint)CodeBase, (nuint)(ContextAddress - CodeBase), PROT_READ | PROT_EXEC), "mprotect code");
                snippetRwx = mprotect((nint)SnippetAddress, SnippetAreaSize, PROT_READ | PROT_WRITE | PROT_EXEC) == 0;
            }
            catch
            {
                munmap((nint)CodeBase, CodeSize);
                throw;
            }
        }
        catch
        {
            munmap((nint)ScratchBase, ScratchSize);
            throw;
        }
        initialized = true;
    }

    private static void MapFixed(ulong address, int size, int prot)
    {
        nint p = mmap((nint)address, (nuint)size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == -1)
            throw new InvalidOperationException($"mmap at 0x{address:X} failed (errno {Marshal.GetLastPInvokeError()}).");
        if ((ulong)p != address)
        {
            // Kernels before 4.17 treat MAP_FIXED_NOREPLACE as a hint.
            munmap(p, (nuint)size);
            throw new InvalidOperationException($"mmap at 0x{address:X} returned 0x{p:X}: address in use.");
        }
    }

    private static void Check(int rc, string what)
    {
        if (rc != 0)
            throw new InvalidOperationException($"{what} failed (errno {Marshal.GetLastPInvokeError()}).");
    }

    /// <summary>
    /// Entry (at CodeBase, SysV, no arguments): save callee-saved GPRs and RSP, FXSAVE host x87/SSE state,
    /// load MXCSR/XMM/RFLAGS/GPRs from the context page, jump to the snippet. The snippet falls through to a
    /// "jmp epilogue"; the epilogue stores GPRs (RSP included), switches back to the host stack before pushfq
    /// (so nothing is written to the snippet's stack), stores RFLAGS/XMM/MXCSR, clears DF and restores the host.
    /// All context accesses use absolute 32-bit addresses (the context page lies below 2 GiB), so no register
    /// is needed as a base.
    /// </summary>
    private static byte[] BuildTrampoline(out ulong epilogue)
    {
        var a = new Assembler(64);
        AssemblerRegister64[] gprs = [rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
        AssemblerRegisterXMM[] xmms =
            [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15];

        // ---- prologue ----
        a.push(rbx);
        a.push(rbp);
        a.push(r12);
        a.push(r13);
        a.push(r14);
        a.push(r15);
        a.mov(__qword_ptr[HostRsp], rsp);
        a.fxsave64(__[HostFx]);
        a.fninit();
        a.ldmxcsr(__dword_ptr[InMxcsr]);
        for (int i = 0; i < 16; i++)
            a.movdqu(xmms[i], __xmmword_ptr[InXmm + (ulong)i * 16]);
        a.push(__qword_ptr[InRflags]);   // on the host stack
        a.popfq();
        // From here on only flag-neutral MOVs.
        a.mov(rsp, __qword_ptr[InGpr + CpuSnapshot.RSP * 8]);
        for (int i = 0; i < 16; i++)
        {
            if (i != CpuSnapshot.RSP)
                a.mov(gprs[i], __qword_ptr[InGpr + (ulong)i * 8]);
        }
        a.jmp(SnippetAddress);

        // ---- epilogue ----
        var epi = a.CreateLabel("epilogue");
        a.Label(ref epi);
        for (int i = 0; i < 16; i++)
            a.mov(__qword_ptr[OutGpr + (ulong)i * 8], gprs[i]);
        a.mov(rsp, __qword_ptr[HostRsp]);
        a.pushfq();
        a.pop(rax);
        a.mov(__qword_ptr[OutRflags], rax);
        a.cld();
        for (int i = 0; i < 16; i++)
            a.movdqu(__xmmword_ptr[OutXmm + (ulong)i * 16], xmms[i]);
        a.stmxcsr(__dword_ptr[OutMxcsr]);
        if (Avx.IsSupported)
            a.vzeroupper();
        a.fxrstor64(__[HostFx]);
        a.pop(r15);
        a.pop(r14);
        a.pop(r13);
        a.pop(r12);
        a.pop(rbp);
        a.pop(rbx);
        a.ret();

        using var ms = new MemoryStream();
        var result = a.Assemble(new StreamCodeWriter(ms), CodeBase, BlockEncoderOptions.ReturnNewInstructionOffsets);
        epilogue = result.GetLabelRIP(epi);
        return ms.ToArray();
    }
}
