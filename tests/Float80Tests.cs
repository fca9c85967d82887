using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using ReVirt.Cpu;
using Xunit;

namespace ReVirt.Tests;

/// <summary>Compiles the x87 oracle (a small C program driving the host FPU) once per test class.</summary>
public sealed class X87OracleFixture : IDisposable
{
    private readonly string? _dir;
    public string? ExePath { get; }
    public string? Error { get; }

    public X87OracleFixture()
    {
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64 || !OperatingSystem.IsLinux())
        {
            Error = "host is not x86-64 Linux";
            return;
        }
        _dir = Path.Combine(Path.GetTempPath(), "revirt-x87oracle-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(_dir);
        string src = Path.Combine(_dir, "x87oracle.c");
        string exe = Path.Combine(_dir, "x87oracle");
        File.WriteAllText(src, Float80Tests.OracleSource);
        try
        {
            var r = Child.Run("gcc", ["-O1", "-o", exe, src], TimeSpan.FromMinutes(2));
            if (r.ExitCode != 0) Error = "gcc failed: " + r.Stderr;
            else ExePath = exe;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Error = "cannot run gcc (needed for the x87 oracle): " + e.Message;
        }
    }

    /// <summary>Feeds the lines to the oracle, returns one output line per input line.</summary>
    public string[] Run(IReadOnlyList<string> lines)
    {
        Assert.True(ExePath != null, Error);
        var sb = new StringBuilder(lines.Count * 56);
        foreach (var l in lines) sb.Append(l).Append('\n');
        var r = Child.Run(ExePath!, [], TimeSpan.FromMinutes(2), Encoding.ASCII.GetBytes(sb.ToString()));
        Assert.True(r.ExitCode == 0, $"the x87 oracle failed: {r.Stderr}");
        var res = r.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(lines.Count, res.Length);
        return res;
    }

    public void Dispose()
    {
        try
        {
            if (_dir != null) Directory.Delete(_dir, true);
        }
        catch (IOException)
        {
        }
    }
}

public class Float80Tests : IClassFixture<X87OracleFixture>
{
    public const string OracleSource = """
/* x87 oracle: reads "op a b rc pc" lines (a, b: 20 hex digits = signexp(4) mantissa(16)),
   prints "r1 r2 sw" (r1, r2: 20 hex digits, sw: 4 hex digits masked with 0x477F). */
#include <stdio.h>
#include <stdint.h>
#include <string.h>
typedef struct { uint64_t m; uint16_t se; uint8_t pad[6]; } f80;
static int hx(const char *s, f80 *v) {
    uint64_t hi = 0, lo = 0; int n = 0;
    for (; *s; s++, n++) {
        int d = (*s >= '0' && *s <= '9') ? *s - '0' : (*s >= 'a' && *s <= 'f') ? *s - 'a' + 10 : (*s >= 'A' && *s <= 'F') ? *s - 'A' + 10 : -1;
        if (d < 0) return -1;
        hi = (hi << 4) | (lo >> 60); lo = (lo << 4) | (uint64_t)d;
    }
    v->m = lo; v->se = (uint16_t)hi; return n;
}
#define ST2(insn) __asm__ volatile("fldt %4\n\tfldt %3\n\t" insn "\n\tfnstsw %2\n\tfstpt %0\n\tfstpt %1\n" : "=m"(*r1), "=m"(*r2), "=m"(*sw) : "m"(*a), "m"(*b))
#define ST1(insn) __asm__ volatile("fldt %3\n\tfldt %2\n\t" insn "\n\tfnstsw %1\n\tfstpt %0\n" : "=m"(*r1), "=m"(*sw) : "m"(*a), "m"(*b))
#define ST3(insn) __asm__ volatile("fldt %4\n\tfldt %3\n\t" insn "\n\tfnstsw %2\n\tfstpt %0\n\tfstpt %1\n\tfstp %%st(0)\n" : "=m"(*r1), "=m"(*r2), "=m"(*sw) : "m"(*a), "m"(*b))
#define STM(insn, T) do { T t = 0; __asm__ volatile("fldt %2\n\t" insn " %0\n\tfnstsw %1\n" : "=m"(t), "=m"(*sw) : "m"(*a)); r1->m = (uint64_t)t; } while (0)
#define STMP(insn, T) do { T t = 0; __asm__ volatile("fldt %2\n\t" insn " %0\n\tfnstsw %1\n\tfstp %%st(0)\n" : "=m"(t), "=m"(*sw) : "m"(*a)); r1->m = (uint64_t)t; } while (0)
#define LDM(insn, T) do { T t = (T)a->m; __asm__ volatile(insn " %2\n\tfnstsw %1\n\tfstpt %0\n" : "=m"(*r1), "=m"(*sw) : "m"(t)); } while (0)
#define MOP(insn, T) do { T t = (T)b->m; __asm__ volatile("fldt %2\n\t" insn " %3\n\tfnstsw %1\n\tfstpt %0\n" : "=m"(*r1), "=m"(*sw) : "m"(*a), "m"(t)); } while (0)
#define K(insn) __asm__ volatile(insn "\n\tfnstsw %1\n\tfstpt %0\n" : "=m"(*r1), "=m"(*sw))
#define TST(insn) __asm__ volatile("fldt %1\n\t" insn "\n\tfnstsw %0\n\tfstp %%st(0)\n" : "=m"(*sw) : "m"(*a))
int main(void) {
    char line[256], op[32], as[64], bs[64];
    int rc, pc;
    while (fgets(line, sizeof line, stdin)) {
        f80 A = {0}, B = {0}, R1 = {0}, R2 = {0}; uint16_t SW = 0;
        f80 *a = &A, *b = &B, *r1 = &R1, *r2 = &R2; uint16_t *sw = &SW;
        if (sscanf(line, "%31s %63s %63s %d %d", op, as, bs, &rc, &pc) != 5 || hx(as, a) < 0 || hx(bs, b) < 0) { printf("ERR\n"); continue; }
        uint16_t cw = (uint16_t)(0x003F | 0x0040 | ((rc & 3) << 10) | ((pc == 24 ? 0 : pc == 53 ? 2 : 3) << 8));
        __asm__ volatile("fninit\n\tfldcw %0\n" : : "m"(cw));
        if (!strcmp(op, "add")) ST2("fadd %%st(1), %%st");
        else if (!strcmp(op, "sub")) ST2("fsub %%st(1), %%st");
        else if (!strcmp(op, "subr")) ST2("fsubr %%st(1), %%st");
        else if (!strcmp(op, "mul")) ST2("fmul %%st(1), %%st");
        else if (!strcmp(op, "div")) ST2("fdiv %%st(1), %%st");
        else if (!strcmp(op, "divr")) ST2("fdivr %%st(1), %%st");
        else if (!strcmp(op, "sqrt")) ST2("fsqrt");
        else if (!strcmp(op, "rndint")) ST2("frndint");
        else if (!strcmp(op, "com")) ST2("fcom %%st(1)");
        else if (!strcmp(op, "ucom")) ST2("fucom %%st(1)");
        else if (!strcmp(op, "scale")) ST2("fscale");
        else if (!strcmp(op, "prem")) ST2("fprem");
        else if (!strcmp(op, "prem1")) ST2("fprem1");
        else if (!strcmp(op, "abs")) ST2("fabs");
        else if (!strcmp(op, "chs")) ST2("fchs");
        else if (!strcmp(op, "xtract")) ST3("fxtract");
        else if (!strcmp(op, "sin")) ST2("fsin");
        else if (!strcmp(op, "cos")) ST2("fcos");
        else if (!strcmp(op, "sincos")) ST3("fsincos");
        else if (!strcmp(op, "ptan")) ST3("fptan");
        else if (!strcmp(op, "f2xm1")) ST2("f2xm1");
        else if (!strcmp(op, "patan")) ST1("fpatan");
        else if (!strcmp(op, "yl2x")) ST1("fyl2x");
        else if (!strcmp(op, "yl2xp1")) ST1("fyl2xp1");
        else if (!strcmp(op, "tst")) TST("ftst");
        else if (!strcmp(op, "xam")) TST("fxam");
        else if (!strcmp(op, "st32")) STM("fsts", uint32_t);
        else if (!strcmp(op, "st64")) STM("fstl", uint64_t);
        else if (!strcmp(op, "ist16")) STMP("fistps", uint16_t);
        else if (!strcmp(op, "ist32")) STMP("fistpl", uint32_t);
        else if (!strcmp(op, "ist64")) STMP("fistpll", uint64_t);
        else if (!strcmp(op, "istt16")) STMP("fisttps", uint16_t);
        else if (!strcmp(op, "istt32")) STMP("fisttpl", uint32_t);
        else if (!strcmp(op, "istt64")) STMP("fisttpll", uint64_t);
        else if (!strcmp(op, "ld32")) LDM("flds", uint32_t);
        else if (!strcmp(op, "ld64")) LDM("fldl", uint64_t);
        else if (!strcmp(op, "ild16")) LDM("filds", uint16_t);
        else if (!strcmp(op, "ild32")) LDM("fildl", uint32_t);
        else if (!strcmp(op, "ild64")) LDM("fildll", uint64_t);
        else if (!strcmp(op, "bst")) { f80 t = {0}; __asm__ volatile("fldt %2\n\tfbstp %0\n\tfnstsw %1\n" : "=m"(t), "=m"(*sw) : "m"(*a)); *r1 = t; }
        else if (!strcmp(op, "bld")) __asm__ volatile("fbld %2\n\tfnstsw %1\n\tfstpt %0\n" : "=m"(*r1), "=m"(*sw) : "m"(*a));
        else if (!strcmp(op, "addd")) MOP("faddl", uint64_t);
        else if (!strcmp(op, "subd")) MOP("fsubl", uint64_t);
        else if (!strcmp(op, "subrd")) MOP("fsubrl", uint64_t);
        else if (!strcmp(op, "muld")) MOP("fmull", uint64_t);
        else if (!strcmp(op, "divd")) MOP("fdivl", uint64_t);
        else if (!strcmp(op, "divrd")) MOP("fdivrl", uint64_t);
        else if (!strcmp(op, "comd")) MOP("fcoml", uint64_t);
        else if (!strcmp(op, "adds")) MOP("fadds", uint32_t);
        else if (!strcmp(op, "divrs")) MOP("fdivrs", uint32_t);
        else if (!strcmp(op, "iadd")) MOP("fiaddl", uint32_t);
        else if (!strcmp(op, "ldpi")) K("fldpi");
        else if (!strcmp(op, "ldl2e")) K("fldl2e");
        else if (!strcmp(op, "ldl2t")) K("fldl2t");
        else if (!strcmp(op, "ldlg2")) K("fldlg2");
        else if (!strcmp(op, "ldln2")) K("fldln2");
        else { printf("ERR\n"); continue; }
        printf("%04x%016llx %04x%016llx %04x\n", R1.se, (unsigned long long)R1.m, R2.se, (unsigned long long)R2.m, SW & 0x477F);
    }
    return 0;
}
""";

    private const ulong IntBit = 1UL << 63;
    private const ulong QuietBit = 1UL << 62;
    private static readonly int[] Precisions = [24, 53, 64];

    private readonly X87OracleFixture _oracle;

    public Float80Tests(X87OracleFixture oracle) => _oracle = oracle;

    // ------------------------------------------------------------ case generation

    private static ulong Rand63(Random r) => (ulong)r.NextInt64() & ~IntBit;

    private static ulong RandFraction(Random r)
    {
        ulong f = Rand63(r);
        switch (r.Next(10))
        {
            case 0: return f & ~((1UL << r.Next(0, 63)) - 1);
            case 1: return f | ((1UL << r.Next(0, 63)) - 1);
            case 2:
            {
                int p = Precisions[r.Next(2)];
                int rb = 63 - p;                // round bit position for precision p
                f |= 1UL << rb;
                ulong below = (1UL << rb) - 1;
                return r.Next(3) switch { 0 => f & ~below, 1 => f | below, _ => f };
            }
            case 3: return r.Next(2) == 0 ? 0 : ~IntBit;
            case 4: return (ulong)r.Next(0, 16);
            case 5: return ~IntBit - (ulong)r.Next(0, 16);
            default: return f;
        }
    }

    private static Float80 Normal(Random r, bool neg, int biasedExp) =>
        new(IntBit | RandFraction(r), (ushort)((neg ? 0x8000 : 0) | Math.Clamp(biasedExp, 1, 0x7FFE)));

    private static Float80 Gen(Random r)
    {
        int k = r.Next(100);
        bool neg = r.Next(2) == 0;
        ushort s = neg ? (ushort)0x8000 : (ushort)0;
        if (k < 5) return new Float80(0, s);
        if (k < 12) return new Float80((IntBit | RandFraction(r)) >> r.Next(1, 64), s);
        if (k < 14) return new Float80(IntBit | RandFraction(r), s);
        if (k < 18) return new Float80(IntBit, (ushort)(s | 0x7FFF));
        if (k < 21) return new Float80(IntBit | QuietBit | (RandFraction(r) >> r.Next(1, 62)), (ushort)(s | 0x7FFF));
        if (k < 24)
        {
            ulong f = (Rand63(r) & ~QuietBit) >> r.Next(0, 62);
            return new Float80(IntBit | (f == 0 ? 1 : f), (ushort)(s | 0x7FFF));
        }
        if (k < 26)
        {
            return r.Next(4) switch
            {
                0 => new Float80(Rand63(r) >> r.Next(0, 63), (ushort)(s | r.Next(1, 0x7FFF))),
                1 => new Float80(0, (ushort)(s | 0x7FFF)),
                2 => new Float80(Rand63(r) | 1, (ushort)(s | 0x7FFF)),
                _ => new Float80(0, (ushort)(s | r.Next(1, 0x7FFF))),
            };
        }
        if (k < 34)
        {
            // small integers and simple fractions
            long v = r.Next(-3000, 3000);
            var f = Float80.FromInt64(v);
            if (v != 0 && r.Next(2) == 0) f = new Float80(f.Mantissa, (ushort)(f.SignExp - r.Next(1, 4)));
            return f;
        }
        int j = r.Next(10);
        int e = j < 4 ? 0x3FFF + r.Next(-70, 71)
            : j < 6 ? r.Next(1, 0x7FFF)
            : j < 8 ? r.Next(1, 90)
            : 0x7FFE - r.Next(0, 90);
        return Normal(r, neg, e);
    }

    private static bool IsFiniteNonZero(Float80 x) => x.BiasedExponent != 0x7FFF && (x.Mantissa & IntBit) != 0 && x.BiasedExponent != 0;

    /// <summary>Second operand, often related to the first so that interesting results (cancellation, tiny, huge) occur.</summary>
    private static Float80 GenRelated(Random r, Float80 a, string kind)
    {
        int m = r.Next(10);
        if (a.IsNaN && m < 3)
        {
            // same payload, other sign and/or other kind (NaN tie-breaking)
            ulong mm = r.Next(2) == 0 ? a.Mantissa : a.Mantissa ^ QuietBit;
            if ((mm << 1) == 0) mm |= 1;
            return new Float80(mm, (ushort)(a.SignExp ^ (r.Next(2) * 0x8000)));
        }
        if (m < 4 || !IsFiniteNonZero(a)) return Gen(r);
        bool neg = r.Next(2) == 0;
        int ua = a.BiasedExponent - 16383;
        if (m < 7) return Normal(r, neg, a.BiasedExponent + r.Next(-66, 67));
        if (m == 7)
        {
            ulong mm = a.Mantissa ^ (Rand63(r) >> r.Next(0, 63));
            return new Float80(mm | IntBit, (ushort)((neg ? 0x8000 : 0) | a.BiasedExponent));
        }
        int target = r.Next(2) == 0 ? -16382 + r.Next(-70, 4) : 16383 + r.Next(-2, 3);
        int ub = kind switch
        {
            "mul" => target - ua,
            "div" => ua - target,
            "add" => r.Next(2) == 0 ? ua : ua + r.Next(-2, 3),
            _ => ua + r.Next(-100, 100),
        };
        if (ub + 16383 < 1) return new Float80(Rand63(r) >> r.Next(0, 63), (ushort)(neg ? 0x8000 : 0));
        return Normal(r, neg, ub + 16383);
    }

    private static string Hex(Float80 x) => $"{x.SignExp:x4}{x.Mantissa:x16}";

    private static Float80 ParseHex(string s) =>
        new(ulong.Parse(s.AsSpan(4, 16), NumberStyles.HexNumber), ushort.Parse(s.AsSpan(0, 4), NumberStyles.HexNumber));

    private readonly record struct Case(string Op, Float80 A, Float80 B, int Rc, int Pc);

    private delegate (Float80 R1, Float80 R2, X87Status St) Model(Float80 a, Float80 b, X87Rounding rc, X87Precision pc);

    private static X87Precision Pc(int bits) => bits == 24 ? X87Precision.Single24 : bits == 53 ? X87Precision.Double53 : X87Precision.Extended64;

    private static Float80 Bits(ulong v) => new(v, 0);

    /// <summary>Runs the cases through the oracle and the model and returns the mismatch report (empty = all equal).</summary>
    private List<string> Check(List<Case> cases, Model model, bool approx = false)
    {
        var lines = cases.Select(c => $"{c.Op} {Hex(c.A)} {Hex(c.B)} {c.Rc} {c.Pc}").ToList();
        string[] outs = _oracle.Run(lines);
        var bad = new List<string>();
        for (int i = 0; i < cases.Count; i++)
        {
            var c = cases[i];
            string[] parts = outs[i].Split(' ');
            Float80 e1 = ParseHex(parts[0]), e2 = ParseHex(parts[1]);
            ushort esw = ushort.Parse(parts[2], NumberStyles.HexNumber);
            var (g1, g2, gst) = model(c.A, c.B, (X87Rounding)c.Rc, Pc(c.Pc));
            ushort gsw = (ushort)gst;
            bool ok = approx
                ? Close(e1, g1) && Close(e2, g2) && (esw & 0x4407) == (gsw & 0x4407)
                : e1 == g1 && e2 == g2 && esw == gsw;
            if (!ok && bad.Count < 40)
                bad.Add($"{lines[i]} => host {Hex(e1)} {Hex(e2)} {esw:x4}, model {Hex(g1)} {Hex(g2)} {gsw:x4}");
        }
        return bad;
    }

    /// <summary>Relative closeness for the double-based transcendentals (same class, within 2^-42 relative).</summary>
    private static bool Close(Float80 e, Float80 g)
    {
        if (e == g) return true;
        if (e.IsNaN || g.IsNaN || e.IsInfinity || g.IsInfinity || e.IsUnsupported || g.IsUnsupported) return false;
        if (e.Sign != g.Sign) return false;
        // denormal results: the host's own approximation is off by an ulp or so
        if (e.BiasedExponent == 0 && g.BiasedExponent == 0)
            return Math.Abs((double)e.Mantissa - g.Mantissa) <= Math.Max(2, e.Mantissa * Math.ScaleB(1.0, -42));
        if (e.IsZero || g.IsZero) return false;
        var diff = Float80.Sub(e, g, X87Rounding.Nearest, out _);
        var rel = Float80.Div(diff, e, X87Rounding.Nearest, out _);
        return rel.IsZero || rel.BiasedExponent < 16383 - 42;
    }

    private void RunOp(string op, int count, int seed, Model model,
        Func<Random, Float80>? genA = null, Func<Random, Float80, Float80>? genB = null, bool approx = false, string kind = "")
    {
        var r = new Random(seed + SeedOffset * 1000);
        var cases = new List<Case>(count);
        for (int i = 0; i < count; i++)
        {
            Float80 a = genA != null ? genA(r) : Gen(r);
            Float80 b = genB != null ? genB(r, a) : GenRelated(r, a, kind);
            // RC and PC are random for every operation: those they must not affect are checked to ignore them
            cases.Add(new Case(op, a, b, r.Next(4), Precisions[r.Next(3)]));
        }
        var bad = Check(cases, model, approx);
        Assert.True(bad.Count == 0, $"{op}: {bad.Count}+ mismatches\n" + string.Join("\n", bad));
    }

    /// <summary>Cases per operation; F80_N / F80_SEED in the environment allow longer or different runs.</summary>
    private static readonly int N = int.TryParse(Environment.GetEnvironmentVariable("F80_N"), out int n) && n > 0 ? n : 20000;
    private static readonly int SeedOffset = int.TryParse(Environment.GetEnvironmentVariable("F80_SEED"), out int s) ? s : 0;

    // ------------------------------------------------------------ arithmetic

    [Fact]
    public void Add() => RunOp("add", N, 1, (a, b, rc, pc) => (Float80.Add(a, b, rc, out var st, pc), b, st), kind: "add");

    [Fact]
    public void Sub() => RunOp("sub", N, 2, (a, b, rc, pc) => (Float80.Sub(a, b, rc, out var st, pc), b, st), kind: "add");

    [Fact]
    public void SubReverse() => RunOp("subr", N / 2, 3, (a, b, rc, pc) => (Float80.Sub(b, a, rc, out var st, pc), b, st), kind: "add");

    [Fact]
    public void Mul() => RunOp("mul", N, 4, (a, b, rc, pc) => (Float80.Mul(a, b, rc, out var st, pc), b, st), kind: "mul");

    [Fact]
    public void Div() => RunOp("div", N, 5, (a, b, rc, pc) => (Float80.Div(a, b, rc, out var st, pc), b, st), kind: "div");

    [Fact]
    public void DivReverse() => RunOp("divr", N / 2, 6, (a, b, rc, pc) => (Float80.Div(b, a, rc, out var st, pc), b, st), kind: "div");

    [Fact]
    public void Sqrt() => RunOp("sqrt", N, 7, (a, b, rc, pc) => (Float80.Sqrt(a, rc, out var st, pc), b, st));

    [Fact]
    public void RoundToInteger() => RunOp("rndint", N, 8, (a, b, rc, pc) => (Float80.RoundToInteger(a, rc, out var st), b, st));

    [Fact]
    public void Compare()
    {
        RunOp("com", N / 2, 9, (a, b, rc, pc) => { Float80.Compare(a, b, true, out var st); return (a, b, st); });
        RunOp("ucom", N / 2, 10, (a, b, rc, pc) => { Float80.Compare(a, b, false, out var st); return (a, b, st); });
    }

    [Fact]
    public void TestAndExamine()
    {
        RunOp("tst", N / 4, 11, (a, b, rc, pc) => { Float80.Test(a, out var st); return (Float80.Zero, Float80.Zero, st); });
        RunOp("xam", N / 4, 12, (a, b, rc, pc) => (Float80.Zero, Float80.Zero, Float80.Examine(a)));
    }

    [Fact]
    public void AbsAndNeg()
    {
        RunOp("abs", N / 4, 13, (a, b, rc, pc) => (Float80.Abs(a), b, X87Status.None));
        RunOp("chs", N / 4, 14, (a, b, rc, pc) => (Float80.Neg(a), b, X87Status.None));
    }

    private static Float80 ScaleOperand(Random r, Float80 a)
    {
        int k = r.Next(10);
        if (k < 3) return Gen(r);
        if (k < 7) return Float80.FromInt64(r.Next(-80, 80));
        if (k < 8) return Float80.FromInt64(r.Next(-40000, 40000));
        if (k < 9)
        {
            // fractional
            var f = Float80.FromInt64(r.Next(-300, 300));
            return f.IsZero ? f : new Float80(f.Mantissa, (ushort)(f.SignExp - r.Next(1, 5)));
        }
        // push a value to the edge of the range
        if (!IsFiniteNonZero(a)) return Gen(r);
        int ua = a.BiasedExponent - 16383;
        int t = r.Next(2) == 0 ? -16382 - ua + r.Next(-70, 3) : 16383 - ua + r.Next(-1, 2);
        return Float80.FromInt64(t);
    }

    [Fact]
    public void Scale() => RunOp("scale", N, 15, (a, b, rc, pc) => (Float80.Scale(a, b, rc, out var st), b, st), genB: ScaleOperand);

    private static Float80 RemOperand(Random r, Float80 a)
    {
        int k = r.Next(10);
        if (k < 3 || !IsFiniteNonZero(a)) return Gen(r);
        int d = k < 6 ? r.Next(-3, 70) : k < 8 ? r.Next(60, 300) : r.Next(-80, 3000);
        int e = a.BiasedExponent - d;
        if (e < 1) return new Float80(Rand63(r) >> r.Next(0, 63), (ushort)(r.Next(2) * 0x8000));
        return Normal(r, r.Next(2) == 0, Math.Min(e, 0x7FFE));
    }

    [Fact]
    public void PartialRemainder()
    {
        RunOp("prem", N, 16, (a, b, rc, pc) => (Float80.Prem(a, b, out var st), b, st), genB: RemOperand);
        RunOp("prem1", N, 17, (a, b, rc, pc) => (Float80.Prem1(a, b, out var st), b, st), genB: RemOperand);
    }

    [Fact]
    public void Xtract() => RunOp("xtract", N / 2, 18, (a, b, rc, pc) =>
    {
        var sig = Float80.Xtract(a, out var exp, out var st);
        return (sig, exp, st);
    });

    [Fact]
    public void MemoryOperands()
    {
        Func<Random, Float80, Float80> d = (r, a) => Bits(IeeeBits(r, 11, 52));
        Func<Random, Float80, Float80> f = (r, a) => Bits(IeeeBits(r, 8, 23));
        static Float80 D(Float80 b, out bool dn) => Float80.FromDoubleOperand(BitConverter.UInt64BitsToDouble(b.Mantissa), out dn);
        static Float80 S(Float80 b, out bool dn) => Float80.FromSingleOperand(BitConverter.UInt32BitsToSingle((uint)b.Mantissa), out dn);
        int n = N / 8;
        RunOp("addd", n, 50, (a, b, rc, pc) => (Float80.Add(a, D(b, out bool dn), rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("subd", n, 51, (a, b, rc, pc) => (Float80.Sub(a, D(b, out bool dn), rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("subrd", n, 52, (a, b, rc, pc) => (Float80.Sub(D(b, out bool dn), a, rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("muld", n, 53, (a, b, rc, pc) => (Float80.Mul(a, D(b, out bool dn), rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("divd", n, 54, (a, b, rc, pc) => (Float80.Div(a, D(b, out bool dn), rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("divrd", n, 55, (a, b, rc, pc) => (Float80.Div(D(b, out bool dn), a, rc, out var st, pc, dn), Float80.Zero, st), genB: d);
        RunOp("comd", n, 56, (a, b, rc, pc) => { Float80.Compare(a, D(b, out bool dn), true, out var st, dn); return (a, Float80.Zero, st); }, genB: d);
        RunOp("adds", n, 57, (a, b, rc, pc) => (Float80.Add(a, S(b, out bool dn), rc, out var st, pc, dn), Float80.Zero, st), genB: f);
        RunOp("divrs", n, 58, (a, b, rc, pc) => (Float80.Div(S(b, out bool dn), a, rc, out var st, pc, dn), Float80.Zero, st), genB: f);
        RunOp("iadd", n, 59, (a, b, rc, pc) => (Float80.Add(a, Float80.FromInt32((int)b.Mantissa), rc, out var st, pc), Float80.Zero, st),
            genB: (r, a) => Bits((uint)(r.Next(3) == 0 ? r.Next() : r.Next(-100, 100))));
    }

    // ------------------------------------------------------------ conversions

    private static Float80 IntRange(Random r)
    {
        if (r.Next(4) == 0) return Gen(r);
        bool neg = r.Next(2) == 0;
        int e = 0x3FFF + r.Next(-3, 66);
        if (r.Next(3) == 0) return Float80.Add(Float80.FromInt64(r.Next(2) == 0 ? long.MinValue : long.MaxValue), Float80.FromInt64(r.Next(-3000, 3000)), X87Rounding.Nearest, out _);
        if (r.Next(3) == 0) return Float80.FromInt64((r.Next(2) == 0 ? -1 : 1) * (r.Next(2) == 0 ? 32768L + r.Next(-3, 3) : 2147483648L + r.Next(-3, 3)));
        return Normal(r, neg, e);
    }

    [Fact]
    public void StoreInteger()
    {
        RunOp("ist16", N / 2, 19, (a, b, rc, pc) => { short v = Float80.ToInt16(a, rc, out var st); return (Bits((ushort)v), Float80.Zero, st); }, genA: IntRange);
        RunOp("ist32", N / 2, 20, (a, b, rc, pc) => { int v = Float80.ToInt32(a, rc, out var st); return (Bits((uint)v), Float80.Zero, st); }, genA: IntRange);
        RunOp("ist64", N / 2, 21, (a, b, rc, pc) => { long v = Float80.ToInt64(a, rc, out var st); return (Bits((ulong)v), Float80.Zero, st); }, genA: IntRange);
        RunOp("istt16", N / 4, 22, (a, b, rc, pc) => { short v = Float80.TruncateToInt16(a, out var st); return (Bits((ushort)v), Float80.Zero, st); }, genA: IntRange);
        RunOp("istt32", N / 4, 23, (a, b, rc, pc) => { int v = Float80.TruncateToInt32(a, out var st); return (Bits((uint)v), Float80.Zero, st); }, genA: IntRange);
        RunOp("istt64", N / 4, 24, (a, b, rc, pc) => { long v = Float80.TruncateToInt64(a, out var st); return (Bits((ulong)v), Float80.Zero, st); }, genA: IntRange);
    }

    [Fact]
    public void LoadInteger()
    {
        Func<Random, Float80> g = rr => Bits((ulong)rr.NextInt64() >> rr.Next(0, 64) ^ (rr.Next(2) == 0 ? 0 : ulong.MaxValue));
        RunOp("ild16", N / 8, 25, (a, b, rc, pc) => (Float80.FromInt16((short)a.Mantissa), Float80.Zero, X87Status.None), genA: g);
        RunOp("ild32", N / 8, 26, (a, b, rc, pc) => (Float80.FromInt32((int)a.Mantissa), Float80.Zero, X87Status.None), genA: g);
        RunOp("ild64", N / 8, 27, (a, b, rc, pc) => (Float80.FromInt64((long)a.Mantissa), Float80.Zero, X87Status.None), genA: g);
    }

    /// <summary>Values around the binary64/binary32 range edges.</summary>
    private static Float80 NarrowRange(Random r, int bias, int fracBits)
    {
        if (r.Next(3) == 0) return Gen(r);
        bool neg = r.Next(2) == 0;
        int k = r.Next(4);
        int u = k == 0 ? r.Next(-bias, bias + 1) : k == 1 ? 1 - bias - r.Next(-3, fracBits + 4) : k == 2 ? bias + r.Next(-2, 2) : r.Next(-3 * bias, 3 * bias);
        var f = Normal(r, neg, u + 16383);
        if (r.Next(2) == 0)
        {
            // round bit / sticky patterns at the target precision
            ulong m = f.Mantissa & ~((1UL << (63 - fracBits)) - 1);
            int rb = 62 - fracBits;
            m |= r.Next(3) switch { 0 => 1UL << rb, 1 => (1UL << rb) | 1, _ => 0 };
            f = new Float80(m | IntBit, f.SignExp);
        }
        return f;
    }

    [Fact]
    public void StoreFloat()
    {
        RunOp("st64", N, 28, (a, b, rc, pc) => (Bits(BitConverter.DoubleToUInt64Bits(Float80.ToDouble(a, rc, out var st))), Float80.Zero, st), genA: r => NarrowRange(r, 1023, 52));
        RunOp("st32", N, 29, (a, b, rc, pc) => (Bits(BitConverter.SingleToUInt32Bits(Float80.ToSingle(a, rc, out var st))), Float80.Zero, st), genA: r => NarrowRange(r, 127, 23));
    }

    private static ulong IeeeBits(Random r, int expBits, int fracBits)
    {
        ulong e = r.Next(4) switch { 0 => 0, 1 => (1UL << expBits) - 1, _ => (ulong)r.NextInt64(0, 1L << expBits) };
        ulong f = (ulong)r.NextInt64() >> (64 - fracBits);
        if (r.Next(4) == 0) f >>= r.Next(0, fracBits);
        if (r.Next(8) == 0) f = 0;
        return ((ulong)r.Next(2) << (expBits + fracBits)) | (e << fracBits) | f;
    }

    [Fact]
    public void LoadFloat()
    {
        RunOp("ld64", N / 4, 30, (a, b, rc, pc) => (Float80.FromDouble(BitConverter.UInt64BitsToDouble(a.Mantissa), out var st), Float80.Zero, st), genA: r => Bits(IeeeBits(r, 11, 52)));
        RunOp("ld32", N / 4, 31, (a, b, rc, pc) => (Float80.FromSingle(BitConverter.UInt32BitsToSingle((uint)a.Mantissa), out var st), Float80.Zero, st), genA: r => Bits(IeeeBits(r, 8, 23)));
    }

    [Fact]
    public void Bcd()
    {
        RunOp("bst", N / 2, 32, (a, b, rc, pc) =>
        {
            Span<byte> buf = stackalloc byte[10];
            Float80.ToBcd(a, rc, buf, out var st);
            return (Float80.FromBytes(buf), Float80.Zero, st);
        }, genA: r => r.Next(3) == 0 ? IntRange(r) : r.Next(2) == 0 ? Gen(r) : Float80.Add(Float80.FromInt64((r.Next(2) * 2 - 1) * 999_999_999_999_999_999L), Float80.FromInt64(r.Next(-3, 3)), X87Rounding.Nearest, out _));
        RunOp("bld", N / 4, 33, (a, b, rc, pc) =>
        {
            Span<byte> buf = stackalloc byte[10];
            a.WriteTo(buf);
            return (Float80.FromBcd(buf), Float80.Zero, X87Status.None);
        }, genA: r =>
        {
            Span<byte> buf = stackalloc byte[10];
            for (int i = 0; i < 9; i++) buf[i] = (byte)(r.Next(10) | (r.Next(10) << 4));
            if (r.Next(4) == 0) buf.Slice(r.Next(0, 9)).Clear();
            buf[9] = (byte)(r.Next(2) * 0x80);
            return Float80.FromBytes(buf);
        });
    }

    [Fact]
    public void Constants()
    {
        foreach (var (op, c) in new[] { ("ldpi", Float80.Constant.Pi), ("ldl2e", Float80.Constant.Log2E), ("ldl2t", Float80.Constant.Log2Ten), ("ldlg2", Float80.Constant.Log10Two), ("ldln2", Float80.Constant.LnTwo) })
            RunOp(op, 16, 34, (a, b, rc, pc) => (Float80.LoadConstant(c, rc), Float80.Zero, X87Status.None));
    }

    [Fact]
    public void MemoryImage()
    {
        var r = new Random(35);
        for (int i = 0; i < 1000; i++)
        {
            var f = Gen(r);
            byte[] img = f.ToBytes();
            Assert.Equal(10, img.Length);
            Assert.Equal(f, Float80.FromBytes(img));
            Assert.Equal((byte)f.Mantissa, img[0]);
            Assert.Equal((byte)(f.SignExp >> 8), img[9]);
        }
    }

    // ------------------------------------------------------------ transcendentals (approximate)

    private static Float80 TrigArg(Random r)
    {
        if (r.Next(3) == 0) return Gen(r);
        return Float80.FromDouble((r.NextDouble() * 2 - 1) * Math.Pow(2, r.Next(-30, 64)));
    }

    /// <summary>Keeps generated special/small values whose biased exponent is below the limit; null otherwise (undefined domain).</summary>
    private static Float80? InDomain(Float80 x, int maxBiasedExp) =>
        x.BiasedExponent == 0x7FFF || x.IsUnsupported || x.BiasedExponent < maxBiasedExp ? x : null;

    [Fact]
    public void Transcendentals()
    {
        int n = N / 6;
        RunOp("sin", n, 40, (a, b, rc, pc) => (Float80.Sin(a, rc, out var st), b, st), genA: TrigArg, approx: true);
        RunOp("cos", n, 41, (a, b, rc, pc) => (Float80.Cos(a, rc, out var st), b, st), genA: TrigArg, approx: true);
        RunOp("sincos", n, 42, (a, b, rc, pc) =>
        {
            var s = Float80.SinCos(a, rc, out var c, out var st);
            return (st & X87Status.C2) != 0 ? (a, b, st) : (c, s, st);
        }, genA: TrigArg, approx: true);
        RunOp("ptan", n, 43, (a, b, rc, pc) =>
        {
            var t = Float80.Tan(a, rc, out var one, out var st);
            return (st & X87Status.C2) != 0 ? (a, b, st) : (one, t, st);
        }, genA: TrigArg, approx: true);
        RunOp("f2xm1", n, 44, (a, b, rc, pc) => (Float80.F2xm1(a, rc, out var st), b, st),
            genA: r => InDomain(Gen(r), 16383) ?? Float80.FromDouble((r.NextDouble() * 2 - 1) * Math.Pow(2, -r.Next(0, 40))), approx: true);
        RunOp("patan", n, 45, (a, b, rc, pc) => (Float80.Atan2(b, a, rc, out var st), Float80.Zero, st), approx: true);
        RunOp("yl2x", n, 46, (a, b, rc, pc) => (Float80.Yl2x(a, b, rc, out var st), Float80.Zero, st), approx: true);
        RunOp("yl2xp1", n, 47, (a, b, rc, pc) => (Float80.Yl2xp1(a, b, rc, out var st), Float80.Zero, st),
            genA: r => InDomain(Gen(r), 16381) ?? Float80.FromDouble((r.NextDouble() * 2 - 1) * 0.29 * Math.Pow(2, -r.Next(0, 40))), approx: true);
    }
}
