using Iced.Intel;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.CpuTests;

/// <summary>
/// Flags are recorded lazily (operation, operands, result) and condition tests derive only the flags they need.
/// Each case runs a flag-writing instruction followed by every condition (setcc into a byte of memory, then a
/// conditional branch that skips an increment, then pushfq) natively and in the VM; all must agree with the host.
/// </summary>
public class LazyFlagsTests
{
    static readonly ConditionCode[] Conditions = Enum.GetValues<ConditionCode>().Where(c => c != ConditionCode.None).ToArray();

    /// <summary>The flag writers under test, on rax and rbx (64- or 32-bit), with CF set or clear on entry.</summary>
    static readonly (string Name, Action<Assembler, bool> Emit)[] Writers =
    {
        ("add", (a, q) => { if (q) a.add(rax, rbx); else a.add(eax, ebx); }),
        ("sub", (a, q) => { if (q) a.sub(rax, rbx); else a.sub(eax, ebx); }),
        ("cmp", (a, q) => { if (q) a.cmp(rax, rbx); else a.cmp(eax, ebx); }),
        ("cmp imm", (a, q) => { if (q) a.cmp(rax, 0x7f); else a.cmp(eax, -2); }),
        ("and", (a, q) => { if (q) a.and(rax, rbx); else a.and(eax, ebx); }),
        ("or", (a, q) => { if (q) a.or(rax, rbx); else a.or(eax, ebx); }),
        ("xor", (a, q) => { if (q) a.xor(rax, rbx); else a.xor(eax, ebx); }),
        ("test", (a, q) => { if (q) a.test(rax, rbx); else a.test(eax, ebx); }),
        ("inc", (a, q) => { if (q) a.inc(rax); else a.inc(eax); }),
        ("dec", (a, q) => { if (q) a.dec(rax); else a.dec(eax); }),
        ("neg", (a, q) => { if (q) a.neg(rax); else a.neg(eax); }),
        ("adc", (a, q) => { if (q) a.adc(rax, rbx); else a.adc(eax, ebx); }),
        ("sbb", (a, q) => { if (q) a.sbb(rax, rbx); else a.sbb(eax, ebx); }),
        ("add mem", (a, q) => { if (q) a.add(rax, __qword_ptr[rsi]); else a.add(eax, __dword_ptr[rsi]); }),
        ("sub byte", (a, q) => a.sub(al, bl)),
        // inc and dec after another writer keep its CF (derived from its record alone)
        ("add, inc", (a, q) => { if (q) { a.add(rax, rbx); a.inc(rax); } else { a.add(eax, ebx); a.inc(eax); } }),
        ("sub, dec", (a, q) => { if (q) { a.sub(rax, rbx); a.dec(rbx); } else { a.sub(eax, ebx); a.dec(ebx); } }),
        ("and, dec", (a, q) => { if (q) { a.and(rax, rbx); a.dec(rax); } else { a.and(eax, ebx); a.dec(eax); } }),
        ("dec, inc", (a, q) => { if (q) { a.dec(rax); a.inc(rbx); } else { a.dec(eax); a.inc(ebx); } }),
        // flags of inc overwritten before any reader: the compiled tier computes none for it
        ("inc, add", (a, q) => { if (q) { a.inc(rax); a.add(rax, rbx); } else { a.inc(eax); a.add(eax, ebx); } }),
        // shifts record their result and CF/OF; rotates lay CF/OF over what is pending (a record, or stored flags)
        ("shl", (a, q) => { if (q) a.shl(rax, 3); else a.shl(eax, 1); }),
        ("shr", (a, q) => { if (q) a.shr(rax, 1); else a.shr(eax, 13); }),
        ("sar", (a, q) => { if (q) a.sar(rax, 63); else a.sar(eax, 5); }),
        ("shl byte past its size", (a, q) => a.shl(bl, 9)),
        ("rol", (a, q) => { if (q) a.rol(rax, 13); else a.rol(eax, 1); }),
        ("ror", (a, q) => { if (q) a.ror(rax, 1); else a.ror(eax, 7); }),
        ("rol byte by its size", (a, q) => a.rol(al, 8)),
        ("shl mem", (a, q) => { if (q) a.shl(__qword_ptr[rsi], 7); else a.shl(__dword_ptr[rsi], 31); }),
        ("ror mem", (a, q) => { if (q) a.ror(__qword_ptr[rsi], 9); else a.ror(__dword_ptr[rsi], 1); }),
        ("add, rol", (a, q) => { if (q) { a.add(rax, rbx); a.rol(rbx, 5); } else { a.add(eax, ebx); a.rol(ebx, 5); } }),
        ("sub, ror, load", (a, q) => { if (q) { a.sub(rax, rbx); a.ror(rax, 11); a.mov(rdx, __qword_ptr[rsi]); } else { a.sub(eax, ebx); a.ror(eax, 11); a.mov(edx, __dword_ptr[rsi]); } }),
        ("inc, rol", (a, q) => { if (q) { a.inc(rax); a.rol(rbx, 1); } else { a.inc(eax); a.rol(ebx, 1); } }),
        ("rol, inc", (a, q) => { if (q) { a.rol(rax, 3); a.inc(rbx); } else { a.rol(eax, 3); a.inc(ebx); } }),
        ("shr, ror", (a, q) => { if (q) { a.shr(rax, 2); a.ror(rbx, 3); } else { a.shr(eax, 2); a.ror(ebx, 3); } }),
        ("rol, ror, add", (a, q) => { if (q) { a.rol(rax, 2); a.ror(rbx, 3); a.add(rax, rbx); } else { a.rol(eax, 2); a.ror(ebx, 3); a.add(eax, ebx); } }),
    };

    static readonly ulong[] Values = { 0, 1, 2, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000,
        0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000, ulong.MaxValue, 0x1234_5678_9abc_def0 };

    [Fact]
    public void ConditionsAfterEveryWriterMatchHost()
    {
        if (!NativeRunner.IsSupported) return;
        var r = new Random(7);
        var failures = new List<string>();
        int run = 0;
        foreach (var (name, emit) in Writers)
            foreach (bool q in new[] { true, false })
                for (int k = 0; k < 24; k++)
                {
                    var input = Input(r, k % 3 == 0, (k & 1) != 0);
                    var code = NativeRunner.Asm(a =>
                    {
                        emit(a, q);
                        for (int c = 0; c < Conditions.Length; c++)
                        {
                            a.AddInstruction(Instruction.Create(SetccCode(Conditions[c]), new MemoryOperand(rdi, c)));
                            // taken or not shows in a bit of rcx; lea leaves the flags for the next condition
                            var skip = a.CreateLabel();
                            EmitJcc(a, Conditions[c], skip);
                            a.lea(rcx, __[rcx + 1]);
                            a.Label(ref skip);
                            a.lea(rcx, __[rcx + rcx]);
                        }
                        a.pushfq();
                        a.pop(rdx);
                    });
                    run++;
                    Compare(code, input, $"{name} {(q ? 64 : 32)}-bit", failures);
                }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(run > 500);
    }

    /// <summary>A conditional jump right after the flag writer (the compiled tier decides it from the compared
    /// values, without the flags), for every writer, condition, operand size of 64 and 32 bits, and CF on entry.</summary>
    [Fact]
    public void JccRightAfterEveryWriterMatchesHost()
    {
        if (!NativeRunner.IsSupported) return;
        var r = new Random(11);
        var failures = new List<string>();
        int run = 0;
        foreach (var (name, emit) in Writers)
            foreach (bool q in new[] { true, false })
                foreach (var cc in Conditions)
                    for (int k = 0; k < 4; k++)
                    {
                        var input = Input(r, k == 0, (k & 1) != 0);
                        var code = NativeRunner.Asm(a =>
                        {
                            var skip = a.CreateLabel();
                            emit(a, q);
                            EmitJcc(a, cc, skip);
                            a.lea(rcx, __[rcx + 1]);
                            a.Label(ref skip);
                            a.pushfq();
                            a.pop(rdx);
                        });
                        run++;
                        Compare(code, input, $"{name}; j{cc} {(q ? 64 : 32)}-bit", failures);
                    }
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(run > 1000);
    }

    /// <summary>rax and rbx from the edge values (equal when asked), the same value at rsi in memory, rdi at the
    /// scratch start, rcx 0, and CF as asked.</summary>
    static CpuSnapshot Input(Random r, bool equal, bool cf)
    {
        var input = CpuSnapshot.Create();
        input.Gpr[CpuSnapshot.RAX] = Values[r.Next(Values.Length)] + (ulong)r.Next(-1, 2);
        input.Gpr[CpuSnapshot.RBX] = equal ? input.Gpr[CpuSnapshot.RAX] : Values[r.Next(Values.Length)];
        input.Gpr[CpuSnapshot.RSI] = NativeRunner.ScratchBase + 0x100;
        input.Gpr[CpuSnapshot.RDI] = NativeRunner.ScratchBase;
        input.Gpr[CpuSnapshot.RCX] = 0;
        input.Rflags = cf ? CpuSnapshot.CF : 0;
        BitConverter.GetBytes(input.Gpr[CpuSnapshot.RBX]).CopyTo(input.Memory, 0x100);
        return input;
    }

    static void Compare(byte[] code, CpuSnapshot input, string what, List<string> failures)
    {
        var native = NativeRunner.Run(code, input);
        var vm = VmRunner.Run(code, input, out string? fault);
        string diff = fault ?? CpuSnapshot.Diff(native, vm, CpuSnapshot.ArithFlags, compareXmm: false);
        if (diff.Length != 0 && failures.Count < 10)
            failures.Add($"{what} rax={input.Gpr[0]:x} rbx={input.Gpr[3]:x} cf={input.Rflags & CpuSnapshot.CF}:\n{diff}");
    }

    static Code SetccCode(ConditionCode c) => Enum.Parse<Code>("Set" + c + "_rm8", true);

    static void EmitJcc(Assembler a, ConditionCode c, Label l)
    {
        switch (c)
        {
            case ConditionCode.o: a.jo(l); break; case ConditionCode.no: a.jno(l); break;
            case ConditionCode.b: a.jb(l); break; case ConditionCode.ae: a.jae(l); break;
            case ConditionCode.e: a.je(l); break; case ConditionCode.ne: a.jne(l); break;
            case ConditionCode.be: a.jbe(l); break; case ConditionCode.a: a.ja(l); break;
            case ConditionCode.s: a.js(l); break; case ConditionCode.ns: a.jns(l); break;
            case ConditionCode.p: a.jp(l); break; case ConditionCode.np: a.jnp(l); break;
            case ConditionCode.l: a.jl(l); break; case ConditionCode.ge: a.jge(l); break;
            case ConditionCode.le: a.jle(l); break; default: a.jg(l); break;
        }
    }
}
