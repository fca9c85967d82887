using Iced.Intel;
using ReVirt.Tests.Oracle;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace ReVirt.Tests.Sse;

/// <summary>
/// Differential tests of the SSE/SSE2 family against the host CPU: for every instruction form, many random
/// states (XMM lanes biased towards NaNs, infinities, denormals, zeros and boundary values for the floating-point
/// forms; random MXCSR rounding/DAZ/FTZ/sticky flags with all exceptions masked) are run natively and in the VM,
/// and all GPRs, the arithmetic flags, XMM0-15, MXCSR and the scratch memory must agree.
/// </summary>
public class SseDifferentialTests
{
    public enum Lane { Int, F32, F64 }

    public sealed record Form(string Name, Lane Kind, Func<Random, Action<Assembler>> Build);

    /// <summary>Random states per form: 300 in the default run (the same 300 each time: the seed is the form's name),
    /// 600 under the soak switch (REVIRT_SOAK=1), which adds the next 300 of the same sequence. Each state draws over 500
    /// 64-bit values (16 XMM registers, the GPRs, 4 KiB of scratch memory) from the special-value-biased generators and
    /// its own MXCSR mode, so 300 states cover every special value and rounding/DAZ/FTZ mode many times over.</summary>
    static int Cases => SoakSwitch.On ? 600 : 300;
    static readonly ulong Data = NativeRunner.ScratchBase;

    static Form F(string name, Lane k, Action<Assembler> a) => new(name, k, _ => a);
    static Form Fi(string name, Lane k, Func<Random, Action<Assembler>> b) => new(name, k, b);

    // memory operands: rsi points at a 16-byte aligned place in the data area
    static AssemblerMemoryOperand X => __xmmword_ptr[rsi];
    static AssemblerMemoryOperand Q => __qword_ptr[rsi + 8];
    static AssemblerMemoryOperand D => __dword_ptr[rsi + 4];

    static readonly Form[] AllForms = BuildForms();

    static Form[] BuildForms()
    {
        var l = new List<Form>
        {
            // ---- moves
            F("movd xmm,r32", Lane.Int, a => a.movd(xmm1, eax)),
            F("movd xmm,m32", Lane.Int, a => a.movd(xmm1, D)),
            F("movq xmm,r64", Lane.Int, a => a.movq(xmm1, rax)),
            F("movd r32,xmm", Lane.Int, a => a.movd(ebx, xmm2)),
            F("movd m32,xmm", Lane.Int, a => a.movd(D, xmm2)),
            F("movq r64,xmm", Lane.Int, a => a.movq(rbx, xmm2)),
            F("movq xmm,xmm", Lane.Int, a => a.movq(xmm1, xmm2)),
            F("movq xmm,m64", Lane.Int, a => a.movq(xmm1, Q)),
            F("movq m64,xmm", Lane.Int, a => a.movq(Q, xmm3)),
            F("movaps", Lane.Int, a => { a.movaps(xmm1, xmm2); a.movaps(xmm3, X); a.movaps(__xmmword_ptr[rsi + 32], xmm4); }),
            F("movapd", Lane.Int, a => { a.movapd(xmm1, xmm2); a.movapd(xmm3, X); a.movapd(__xmmword_ptr[rsi + 32], xmm4); }),
            F("movdqa", Lane.Int, a => { a.movdqa(xmm1, xmm2); a.movdqa(xmm3, X); a.movdqa(__xmmword_ptr[rsi + 32], xmm4); }),
            F("movups", Lane.Int, a => { a.movups(xmm1, xmm2); a.movups(xmm3, __xmmword_ptr[rsi + 3]); a.movups(__xmmword_ptr[rsi + 37], xmm4); }),
            F("movupd", Lane.Int, a => { a.movupd(xmm1, xmm2); a.movupd(xmm3, __xmmword_ptr[rsi + 5]); a.movupd(__xmmword_ptr[rsi + 39], xmm4); }),
            F("movdqu", Lane.Int, a => { a.movdqu(xmm1, xmm2); a.movdqu(xmm3, __xmmword_ptr[rsi + 9]); a.movdqu(__xmmword_ptr[rsi + 41], xmm4); }),
            F("movnt", Lane.Int, a => { a.movntps(X, xmm1); a.movntpd(__xmmword_ptr[rsi + 16], xmm2); a.movntdq(__xmmword_ptr[rsi + 32], xmm3); a.movnti(__dword_ptr[rsi + 48], eax); a.movnti(__qword_ptr[rsi + 56], rbx); }),
            F("movss", Lane.F32, a => { a.movss(xmm1, xmm2); a.movss(xmm3, D); a.movss(__dword_ptr[rsi + 20], xmm4); }),
            F("movsd", Lane.F64, a => { a.movsd(xmm1, xmm2); a.movsd(xmm3, Q); a.movsd(__qword_ptr[rsi + 24], xmm4); }),
            F("movlps/movhps", Lane.F32, a => { a.movlps(xmm1, Q); a.movhps(xmm2, Q); a.movlps(__qword_ptr[rsi + 16], xmm3); a.movhps(__qword_ptr[rsi + 24], xmm4); }),
            F("movlpd/movhpd", Lane.F64, a => { a.movlpd(xmm1, Q); a.movhpd(xmm2, Q); a.movlpd(__qword_ptr[rsi + 16], xmm3); a.movhpd(__qword_ptr[rsi + 24], xmm4); }),
            F("movhlps/movlhps", Lane.F32, a => { a.movhlps(xmm1, xmm2); a.movlhps(xmm3, xmm4); }),
            F("movmsk", Lane.F32, a => { a.movmskps(eax, xmm1); a.movmskpd(rbx, xmm2); a.pmovmskb(ecx, xmm3); a.pmovmskb(rdx, xmm4); }),
            F("maskmovdqu", Lane.Int, a => { a.mov(rdi, rsi); a.maskmovdqu(xmm1, xmm2); }),
            Fi("pinsrw", Lane.Int, r => { int k = r.Next(256); return a => { a.pinsrw(xmm1, eax, (byte)(k)); a.pinsrw(xmm2, __word_ptr[rsi + 6], (byte)(k + 3)); }; }),
            Fi("pextrw", Lane.Int, r => { int k = r.Next(256); return a => { a.pextrw(eax, xmm1, (byte)(k)); a.pextrw(ebx, xmm2, (byte)(k + 5)); }; }),
            // ---- shuffles
            Fi("pshufd", Lane.Int, r => { int k = r.Next(256); return a => { a.pshufd(xmm1, xmm2, (byte)(k)); a.pshufd(xmm3, X, (byte)(255 - k)); }; }),
            Fi("pshuflw", Lane.Int, r => { int k = r.Next(256); return a => { a.pshuflw(xmm1, xmm2, (byte)(k)); a.pshuflw(xmm3, X, (byte)(k ^ 0x5a)); }; }),
            Fi("pshufhw", Lane.Int, r => { int k = r.Next(256); return a => { a.pshufhw(xmm1, xmm2, (byte)(k)); a.pshufhw(xmm3, X, (byte)(k ^ 0xa5)); }; }),
            Fi("shufps", Lane.F32, r => { int k = r.Next(256); return a => { a.shufps(xmm1, xmm2, (byte)(k)); a.shufps(xmm3, X, (byte)(k ^ 0x33)); a.shufps(xmm4, xmm4, (byte)(k)); }; }),
            Fi("shufpd", Lane.F64, r => { int k = r.Next(256); return a => { a.shufpd(xmm1, xmm2, (byte)(k)); a.shufpd(xmm3, X, (byte)(k ^ 3)); }; }),
            Fi("pslldq/psrldq", Lane.Int, r => { int k = r.Next(20); return a => { a.pslldq(xmm1, (byte)(k)); a.psrldq(xmm2, (byte)(k)); a.pslldq(xmm3, (byte)(16 + r.Next(240))); }; }),
        };

        // packed integer / logic / unpack: op xmm,xmm ; op xmm,m128 ; op xmm,xmm (same register)
        void Bin(string n, Action<Assembler, AssemblerRegisterXMM, AssemblerRegisterXMM> rr, Action<Assembler, AssemblerRegisterXMM, AssemblerMemoryOperand> rm, Lane k = Lane.Int)
            => l.Add(F(n, k, a => { rr(a, xmm1, xmm2); rm(a, xmm3, X); rr(a, xmm4, xmm4); }));
        Bin("pxor", (a, x, y) => a.pxor(x, y), (a, x, m) => a.pxor(x, m));
        Bin("por", (a, x, y) => a.por(x, y), (a, x, m) => a.por(x, m));
        Bin("pand", (a, x, y) => a.pand(x, y), (a, x, m) => a.pand(x, m));
        Bin("pandn", (a, x, y) => a.pandn(x, y), (a, x, m) => a.pandn(x, m));
        Bin("xorps", (a, x, y) => a.xorps(x, y), (a, x, m) => a.xorps(x, m), Lane.F32);
        Bin("xorpd", (a, x, y) => a.xorpd(x, y), (a, x, m) => a.xorpd(x, m), Lane.F64);
        Bin("andps", (a, x, y) => a.andps(x, y), (a, x, m) => a.andps(x, m), Lane.F32);
        Bin("andpd", (a, x, y) => a.andpd(x, y), (a, x, m) => a.andpd(x, m), Lane.F64);
        Bin("andnps", (a, x, y) => a.andnps(x, y), (a, x, m) => a.andnps(x, m), Lane.F32);
        Bin("andnpd", (a, x, y) => a.andnpd(x, y), (a, x, m) => a.andnpd(x, m), Lane.F64);
        Bin("orps", (a, x, y) => a.orps(x, y), (a, x, m) => a.orps(x, m), Lane.F32);
        Bin("orpd", (a, x, y) => a.orpd(x, y), (a, x, m) => a.orpd(x, m), Lane.F64);
        Bin("paddb", (a, x, y) => a.paddb(x, y), (a, x, m) => a.paddb(x, m));
        Bin("paddw", (a, x, y) => a.paddw(x, y), (a, x, m) => a.paddw(x, m));
        Bin("paddd", (a, x, y) => a.paddd(x, y), (a, x, m) => a.paddd(x, m));
        Bin("paddq", (a, x, y) => a.paddq(x, y), (a, x, m) => a.paddq(x, m));
        Bin("psubb", (a, x, y) => a.psubb(x, y), (a, x, m) => a.psubb(x, m));
        Bin("psubw", (a, x, y) => a.psubw(x, y), (a, x, m) => a.psubw(x, m));
        Bin("psubd", (a, x, y) => a.psubd(x, y), (a, x, m) => a.psubd(x, m));
        Bin("psubq", (a, x, y) => a.psubq(x, y), (a, x, m) => a.psubq(x, m));
        Bin("paddsb", (a, x, y) => a.paddsb(x, y), (a, x, m) => a.paddsb(x, m));
        Bin("paddsw", (a, x, y) => a.paddsw(x, y), (a, x, m) => a.paddsw(x, m));
        Bin("paddusb", (a, x, y) => a.paddusb(x, y), (a, x, m) => a.paddusb(x, m));
        Bin("paddusw", (a, x, y) => a.paddusw(x, y), (a, x, m) => a.paddusw(x, m));
        Bin("psubsb", (a, x, y) => a.psubsb(x, y), (a, x, m) => a.psubsb(x, m));
        Bin("psubsw", (a, x, y) => a.psubsw(x, y), (a, x, m) => a.psubsw(x, m));
        Bin("psubusb", (a, x, y) => a.psubusb(x, y), (a, x, m) => a.psubusb(x, m));
        Bin("psubusw", (a, x, y) => a.psubusw(x, y), (a, x, m) => a.psubusw(x, m));
        Bin("pmullw", (a, x, y) => a.pmullw(x, y), (a, x, m) => a.pmullw(x, m));
        Bin("pmulhw", (a, x, y) => a.pmulhw(x, y), (a, x, m) => a.pmulhw(x, m));
        Bin("pmulhuw", (a, x, y) => a.pmulhuw(x, y), (a, x, m) => a.pmulhuw(x, m));
        Bin("pmuludq", (a, x, y) => a.pmuludq(x, y), (a, x, m) => a.pmuludq(x, m));
        Bin("pmaddwd", (a, x, y) => a.pmaddwd(x, y), (a, x, m) => a.pmaddwd(x, m));
        Bin("pcmpeqb", (a, x, y) => a.pcmpeqb(x, y), (a, x, m) => a.pcmpeqb(x, m));
        Bin("pcmpeqw", (a, x, y) => a.pcmpeqw(x, y), (a, x, m) => a.pcmpeqw(x, m));
        Bin("pcmpeqd", (a, x, y) => a.pcmpeqd(x, y), (a, x, m) => a.pcmpeqd(x, m));
        Bin("pcmpgtb", (a, x, y) => a.pcmpgtb(x, y), (a, x, m) => a.pcmpgtb(x, m));
        Bin("pcmpgtw", (a, x, y) => a.pcmpgtw(x, y), (a, x, m) => a.pcmpgtw(x, m));
        Bin("pcmpgtd", (a, x, y) => a.pcmpgtd(x, y), (a, x, m) => a.pcmpgtd(x, m));
        Bin("pminub", (a, x, y) => a.pminub(x, y), (a, x, m) => a.pminub(x, m));
        Bin("pmaxub", (a, x, y) => a.pmaxub(x, y), (a, x, m) => a.pmaxub(x, m));
        Bin("pminsw", (a, x, y) => a.pminsw(x, y), (a, x, m) => a.pminsw(x, m));
        Bin("pmaxsw", (a, x, y) => a.pmaxsw(x, y), (a, x, m) => a.pmaxsw(x, m));
        Bin("pavgb", (a, x, y) => a.pavgb(x, y), (a, x, m) => a.pavgb(x, m));
        Bin("pavgw", (a, x, y) => a.pavgw(x, y), (a, x, m) => a.pavgw(x, m));
        Bin("psadbw", (a, x, y) => a.psadbw(x, y), (a, x, m) => a.psadbw(x, m));
        Bin("psllw", (a, x, y) => a.psllw(x, y), (a, x, m) => a.psllw(x, m));
        Bin("pslld", (a, x, y) => a.pslld(x, y), (a, x, m) => a.pslld(x, m));
        Bin("psllq", (a, x, y) => a.psllq(x, y), (a, x, m) => a.psllq(x, m));
        Bin("psrlw", (a, x, y) => a.psrlw(x, y), (a, x, m) => a.psrlw(x, m));
        Bin("psrld", (a, x, y) => a.psrld(x, y), (a, x, m) => a.psrld(x, m));
        Bin("psrlq", (a, x, y) => a.psrlq(x, y), (a, x, m) => a.psrlq(x, m));
        Bin("psraw", (a, x, y) => a.psraw(x, y), (a, x, m) => a.psraw(x, m));
        Bin("psrad", (a, x, y) => a.psrad(x, y), (a, x, m) => a.psrad(x, m));
        Bin("punpcklbw", (a, x, y) => a.punpcklbw(x, y), (a, x, m) => a.punpcklbw(x, m));
        Bin("punpcklwd", (a, x, y) => a.punpcklwd(x, y), (a, x, m) => a.punpcklwd(x, m));
        Bin("punpckldq", (a, x, y) => a.punpckldq(x, y), (a, x, m) => a.punpckldq(x, m));
        Bin("punpcklqdq", (a, x, y) => a.punpcklqdq(x, y), (a, x, m) => a.punpcklqdq(x, m));
        Bin("punpckhbw", (a, x, y) => a.punpckhbw(x, y), (a, x, m) => a.punpckhbw(x, m));
        Bin("punpckhwd", (a, x, y) => a.punpckhwd(x, y), (a, x, m) => a.punpckhwd(x, m));
        Bin("punpckhdq", (a, x, y) => a.punpckhdq(x, y), (a, x, m) => a.punpckhdq(x, m));
        Bin("punpckhqdq", (a, x, y) => a.punpckhqdq(x, y), (a, x, m) => a.punpckhqdq(x, m));
        Bin("unpcklps", (a, x, y) => a.unpcklps(x, y), (a, x, m) => a.unpcklps(x, m), Lane.F32);
        Bin("unpckhps", (a, x, y) => a.unpckhps(x, y), (a, x, m) => a.unpckhps(x, m), Lane.F32);
        Bin("unpcklpd", (a, x, y) => a.unpcklpd(x, y), (a, x, m) => a.unpcklpd(x, m), Lane.F64);
        Bin("unpckhpd", (a, x, y) => a.unpckhpd(x, y), (a, x, m) => a.unpckhpd(x, m), Lane.F64);
        Bin("packsswb", (a, x, y) => a.packsswb(x, y), (a, x, m) => a.packsswb(x, m));
        Bin("packuswb", (a, x, y) => a.packuswb(x, y), (a, x, m) => a.packuswb(x, m));
        Bin("packssdw", (a, x, y) => a.packssdw(x, y), (a, x, m) => a.packssdw(x, m));

        // shifts by immediate (count drawn per case, including counts beyond the element width)
        void ShImm(string n, Action<Assembler, AssemblerRegisterXMM, byte> op)
            => l.Add(Fi(n + " imm", Lane.Int, r => { int k = r.Next(4) == 0 ? r.Next(256) : r.Next(70); return a => { op(a, xmm1, (byte)(k)); op(a, xmm2, (byte)(k & 15)); }; }));
        ShImm("psllw", (a, x, k) => a.psllw(x, k));
        ShImm("pslld", (a, x, k) => a.pslld(x, k));
        ShImm("psllq", (a, x, k) => a.psllq(x, k));
        ShImm("psrlw", (a, x, k) => a.psrlw(x, k));
        ShImm("psrld", (a, x, k) => a.psrld(x, k));
        ShImm("psrlq", (a, x, k) => a.psrlq(x, k));
        ShImm("psraw", (a, x, k) => a.psraw(x, k));
        ShImm("psrad", (a, x, k) => a.psrad(x, k));

        // ---- floating point: scalar forms use xmm,xmm and xmm,mem; packed xmm,xmm and xmm,m128
        void S(string n, Lane k, Action<Assembler, AssemblerRegisterXMM, AssemblerRegisterXMM> rr, Action<Assembler, AssemblerRegisterXMM, AssemblerMemoryOperand> rm, AssemblerMemoryOperand mem)
            => l.Add(F(n, k, a => { rr(a, xmm1, xmm2); rm(a, xmm3, mem); rr(a, xmm4, xmm4); rr(a, xmm5, xmm6); }));
        AssemblerMemoryOperand M32 = __dword_ptr[rsi + 4], M64 = __qword_ptr[rsi + 8];
        S("addss", Lane.F32, (a, x, y) => a.addss(x, y), (a, x, m) => a.addss(x, m), M32);
        S("addsd", Lane.F64, (a, x, y) => a.addsd(x, y), (a, x, m) => a.addsd(x, m), M64);
        S("addps", Lane.F32, (a, x, y) => a.addps(x, y), (a, x, m) => a.addps(x, m), X);
        S("addpd", Lane.F64, (a, x, y) => a.addpd(x, y), (a, x, m) => a.addpd(x, m), X);
        S("subss", Lane.F32, (a, x, y) => a.subss(x, y), (a, x, m) => a.subss(x, m), M32);
        S("subsd", Lane.F64, (a, x, y) => a.subsd(x, y), (a, x, m) => a.subsd(x, m), M64);
        S("subps", Lane.F32, (a, x, y) => a.subps(x, y), (a, x, m) => a.subps(x, m), X);
        S("subpd", Lane.F64, (a, x, y) => a.subpd(x, y), (a, x, m) => a.subpd(x, m), X);
        S("mulss", Lane.F32, (a, x, y) => a.mulss(x, y), (a, x, m) => a.mulss(x, m), M32);
        S("mulsd", Lane.F64, (a, x, y) => a.mulsd(x, y), (a, x, m) => a.mulsd(x, m), M64);
        S("mulps", Lane.F32, (a, x, y) => a.mulps(x, y), (a, x, m) => a.mulps(x, m), X);
        S("mulpd", Lane.F64, (a, x, y) => a.mulpd(x, y), (a, x, m) => a.mulpd(x, m), X);
        S("divss", Lane.F32, (a, x, y) => a.divss(x, y), (a, x, m) => a.divss(x, m), M32);
        S("divsd", Lane.F64, (a, x, y) => a.divsd(x, y), (a, x, m) => a.divsd(x, m), M64);
        S("divps", Lane.F32, (a, x, y) => a.divps(x, y), (a, x, m) => a.divps(x, m), X);
        S("divpd", Lane.F64, (a, x, y) => a.divpd(x, y), (a, x, m) => a.divpd(x, m), X);
        S("minss", Lane.F32, (a, x, y) => a.minss(x, y), (a, x, m) => a.minss(x, m), M32);
        S("minsd", Lane.F64, (a, x, y) => a.minsd(x, y), (a, x, m) => a.minsd(x, m), M64);
        S("minps", Lane.F32, (a, x, y) => a.minps(x, y), (a, x, m) => a.minps(x, m), X);
        S("minpd", Lane.F64, (a, x, y) => a.minpd(x, y), (a, x, m) => a.minpd(x, m), X);
        S("maxss", Lane.F32, (a, x, y) => a.maxss(x, y), (a, x, m) => a.maxss(x, m), M32);
        S("maxsd", Lane.F64, (a, x, y) => a.maxsd(x, y), (a, x, m) => a.maxsd(x, m), M64);
        S("maxps", Lane.F32, (a, x, y) => a.maxps(x, y), (a, x, m) => a.maxps(x, m), X);
        S("maxpd", Lane.F64, (a, x, y) => a.maxpd(x, y), (a, x, m) => a.maxpd(x, m), X);
        S("sqrtss", Lane.F32, (a, x, y) => a.sqrtss(x, y), (a, x, m) => a.sqrtss(x, m), M32);
        S("sqrtsd", Lane.F64, (a, x, y) => a.sqrtsd(x, y), (a, x, m) => a.sqrtsd(x, m), M64);
        S("sqrtps", Lane.F32, (a, x, y) => a.sqrtps(x, y), (a, x, m) => a.sqrtps(x, m), X);
        S("sqrtpd", Lane.F64, (a, x, y) => a.sqrtpd(x, y), (a, x, m) => a.sqrtpd(x, m), X);
        S("rcpps/rsqrtps", Lane.F32, (a, x, y) => { a.rcpps(x, y); a.rsqrtss(y, x); }, (a, x, m) => { a.rsqrtps(x, m); a.rcpss(xmm7, __dword_ptr[rsi]); }, X);
        S("comisd/ucomisd", Lane.F64, (a, x, y) => { a.comisd(x, y); a.setb(al); a.sete(bl); a.setp(cl); a.ucomisd(y, x); }, (a, x, m) => { a.ucomisd(x, M64); a.setb(dl); a.comisd(x, M64); }, M64);
        S("comiss/ucomiss", Lane.F32, (a, x, y) => { a.comiss(x, y); a.setb(al); a.sete(bl); a.setp(cl); a.ucomiss(y, x); }, (a, x, m) => { a.ucomiss(x, M32); a.setb(dl); a.comiss(x, M32); }, M32);
        foreach (int p in new[] { 0, 1, 2, 3, 4, 5, 6, 7 })
        {
            int q = p;
            S($"cmpps {q}", Lane.F32, (a, x, y) => a.cmpps(x, y, (byte)(q)), (a, x, m) => a.cmpps(x, m, (byte)(q)), X);
            S($"cmppd {q}", Lane.F64, (a, x, y) => a.cmppd(x, y, (byte)(q)), (a, x, m) => a.cmppd(x, m, (byte)(q)), X);
            S($"cmpss {q}", Lane.F32, (a, x, y) => a.cmpss(x, y, (byte)(q)), (a, x, m) => a.cmpss(x, m, (byte)(q)), M32);
            S($"cmpsd {q}", Lane.F64, (a, x, y) => a.cmpsd(x, y, (byte)(q)), (a, x, m) => a.cmpsd(x, m, (byte)(q)), M64);
        }
        S("cvtss2sd", Lane.F32, (a, x, y) => a.cvtss2sd(x, y), (a, x, m) => a.cvtss2sd(x, m), M32);
        S("cvtsd2ss", Lane.F64, (a, x, y) => a.cvtsd2ss(x, y), (a, x, m) => a.cvtsd2ss(x, m), M64);
        S("cvtdq2ps", Lane.Int, (a, x, y) => a.cvtdq2ps(x, y), (a, x, m) => a.cvtdq2ps(x, m), X);
        S("cvtdq2pd", Lane.Int, (a, x, y) => a.cvtdq2pd(x, y), (a, x, m) => a.cvtdq2pd(x, m), M64);
        S("cvtps2dq", Lane.F32, (a, x, y) => a.cvtps2dq(x, y), (a, x, m) => a.cvtps2dq(x, m), X);
        S("cvttps2dq", Lane.F32, (a, x, y) => a.cvttps2dq(x, y), (a, x, m) => a.cvttps2dq(x, m), X);
        S("cvtpd2dq", Lane.F64, (a, x, y) => a.cvtpd2dq(x, y), (a, x, m) => a.cvtpd2dq(x, m), X);
        S("cvttpd2dq", Lane.F64, (a, x, y) => a.cvttpd2dq(x, y), (a, x, m) => a.cvttpd2dq(x, m), X);
        S("cvtps2pd", Lane.F32, (a, x, y) => a.cvtps2pd(x, y), (a, x, m) => a.cvtps2pd(x, m), M64);
        S("cvtpd2ps", Lane.F64, (a, x, y) => a.cvtpd2ps(x, y), (a, x, m) => a.cvtpd2ps(x, m), X);
        l.Add(F("cvtsi2sd", Lane.F64, a => { a.cvtsi2sd(xmm1, eax); a.cvtsi2sd(xmm2, rbx); a.cvtsi2sd(xmm3, __dword_ptr[rsi + 4]); a.cvtsi2sd(xmm4, __qword_ptr[rsi + 8]); a.cvtsi2sd(xmm5, rcx); }));
        l.Add(F("cvtsi2ss", Lane.F32, a => { a.cvtsi2ss(xmm1, eax); a.cvtsi2ss(xmm2, rbx); a.cvtsi2ss(xmm3, __dword_ptr[rsi + 4]); a.cvtsi2ss(xmm4, __qword_ptr[rsi + 8]); a.cvtsi2ss(xmm5, ecx); }));
        l.Add(F("cvttsd2si", Lane.F64, a => { a.cvttsd2si(eax, xmm1); a.cvttsd2si(rbx, xmm2); a.cvttsd2si(ecx, __qword_ptr[rsi + 8]); a.cvttsd2si(rdx, __qword_ptr[rsi + 16]); }));
        l.Add(F("cvtsd2si", Lane.F64, a => { a.cvtsd2si(eax, xmm1); a.cvtsd2si(rbx, xmm2); a.cvtsd2si(ecx, __qword_ptr[rsi + 8]); a.cvtsd2si(rdx, __qword_ptr[rsi + 16]); }));
        l.Add(F("cvttss2si", Lane.F32, a => { a.cvttss2si(eax, xmm1); a.cvttss2si(rbx, xmm2); a.cvttss2si(ecx, __dword_ptr[rsi + 4]); a.cvttss2si(rdx, __dword_ptr[rsi + 12]); }));
        l.Add(F("cvtss2si", Lane.F32, a => { a.cvtss2si(eax, xmm1); a.cvtss2si(rbx, xmm2); a.cvtss2si(ecx, __dword_ptr[rsi + 4]); a.cvtss2si(rdx, __dword_ptr[rsi + 12]); }));
        l.Add(F("ldmxcsr/stmxcsr", Lane.F64, a => { a.stmxcsr(__dword_ptr[rsi + 64]); a.ldmxcsr(__dword_ptr[rsi + 68]); a.addsd(xmm1, xmm2); a.cvtsd2si(eax, xmm1); a.stmxcsr(__dword_ptr[rsi + 72]); }));
        l.Add(F("fxsave xmm/mxcsr", Lane.Int, a => { a.fxrstor(__[rsi + 1024]); a.fxsave(__[rsi + 2048]); }));
        return l.ToArray();
    }

    public static IEnumerable<object[]> FormNames() => AllForms.Select(f => new object[] { f.Name });

    // ---------------------------------------------------------------- random states

    static readonly ulong[] SpecialsD =
    {
        0, 0x8000_0000_0000_0000, 0x3FF0_0000_0000_0000, 0xBFF0_0000_0000_0000, 0x7FF0_0000_0000_0000, 0xFFF0_0000_0000_0000,
        0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF0_0000_0000_0001, 0xFFF4_0000_0000_1234, 0x7FF8_dead_beef_0000,
        0x0000_0000_0000_0001, 0x800F_FFFF_FFFF_FFFF, 0x0010_0000_0000_0000, 0x7FEF_FFFF_FFFF_FFFF, 0x41E0_0000_0000_0000,
        0xC1E0_0000_0000_0000, 0x43E0_0000_0000_0000, 0xC3E0_0000_0000_0000, 0x41DF_FFFF_FFC0_0000, 0x3FE0_0000_0000_0000,
        0x4004_0000_0000_0000, 0xBFF8_0000_0000_0000, 0x0000_8000_0000_0000, 0x3690_0000_0000_0000, 0x47F0_0000_0000_0000,
    };

    static readonly uint[] SpecialsF =
    {
        0, 0x8000_0000, 0x3F80_0000, 0xBF80_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFFA0_1234,
        0x0000_0001, 0x807F_FFFF, 0x0080_0000, 0x7F7F_FFFF, 0x4F00_0000, 0xCF00_0000, 0x5F00_0000, 0xDF00_0000, 0x3F00_0000,
        0x4020_0000, 0xBFC0_0000, 0x0040_0000, 0x4EFF_FFFF, 0x1E80_0000,
    };

    static ulong RandD(Random r) => r.Next(6) switch
    {
        0 => SpecialsD[r.Next(SpecialsD.Length)],
        1 => (ulong)r.NextInt64() ^ ((ulong)r.Next(2) << 63),
        2 => BitConverter.DoubleToUInt64Bits(Math.Round((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-4, 66)))),
        3 => BitConverter.DoubleToUInt64Bits((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-1074, 1024))),
        _ => BitConverter.DoubleToUInt64Bits((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-30, 30))),
    };

    static uint RandF(Random r) => r.Next(6) switch
    {
        0 => SpecialsF[r.Next(SpecialsF.Length)],
        1 => (uint)r.Next() ^ ((uint)r.Next(2) << 31),
        2 => BitConverter.SingleToUInt32Bits(MathF.Round((float)((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-4, 66))))),
        3 => BitConverter.SingleToUInt32Bits((float)((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-149, 128)))),
        _ => BitConverter.SingleToUInt32Bits((float)((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-20, 20)))),
    };

    static ulong RandInt(Random r) => r.Next(5) switch
    {
        0 => (ulong)r.NextInt64() ^ ((ulong)r.Next(2) << 63),
        1 => (ulong)(long)r.Next(-300, 300),
        2 => 0x8080_8080_8080_8080UL ^ (ulong)r.Next(256) * 0x0101_0101_0101_0101UL,
        3 => (ulong)r.Next(256) * 0x0001_0001_0001_0001UL,
        _ => (ulong)(long)r.Next(int.MinValue, int.MaxValue) << r.Next(34),
    };

    static ulong Rand64(Random r, Lane k) => k switch
    {
        Lane.F64 => RandD(r),
        Lane.F32 => RandF(r) | (ulong)RandF(r) << 32,
        _ => r.Next(3) == 0 ? RandD(r) : RandInt(r),
    };

    static CpuSnapshot RandomState(Random r, Lane k)
    {
        var s = CpuSnapshot.Create();
        for (int g = 0; g < 16; g++)
            if (g != CpuSnapshot.RSP) s.Gpr[g] = g == 1 && r.Next(2) == 0 ? (ulong)r.Next(-40, 40) : r.Next(3) == 0 ? Rand64(r, k) : RandInt(r);
        s.Gpr[CpuSnapshot.RSI] = Data + 0x100 + (ulong)r.Next(32) * 16;
        s.Gpr[CpuSnapshot.RDI] = 0;
        s.Rflags = (ulong)r.Next(0x1000) & CpuSnapshot.ArithFlags;
        for (int x = 0; x < 16; x++) s.Xmm[x] = new UInt128(Rand64(r, k), Rand64(r, k));
        for (int o = 0; o + 8 <= s.Memory.Length; o += 8) BitConverter.TryWriteBytes(s.Memory.AsSpan(o), Rand64(r, k));
        // MXCSR: all exceptions masked (an unmasked one would kill the native run); random RC, DAZ, FTZ, sticky flags
        s.Mxcsr = r.Next(3) == 0 ? CpuSnapshot.DefaultMxcsr | (uint)r.Next(2) * 0x20
            : 0x1F80u | (uint)r.Next(64) | (uint)r.Next(4) << 13 | (uint)r.Next(2) * 0x40 | (uint)r.Next(2) * 0x8000;
        return s;
    }

    /// <summary>Pre-fills the memory blocks used by ldmxcsr and fxrstor so they are valid (masked) images.</summary>
    static void PrepareSystemImages(Random r, CpuSnapshot s)
    {
        uint mx = 0x1F80u | (uint)r.Next(64) | (uint)r.Next(4) << 13 | (uint)r.Next(2) * 0x40 | (uint)r.Next(2) * 0x8000;
        int rsi = (int)(s.Gpr[CpuSnapshot.RSI] - Data);
        BitConverter.TryWriteBytes(s.Memory.AsSpan(rsi + 68), mx);
        // fxrstor image at rsi+1024: x87 part default (fninit state), MXCSR, MXCSR_MASK, XMM registers random
        var img = s.Memory.AsSpan(rsi + 1024, 512);
        img[..160].Clear();
        BitConverter.TryWriteBytes(img, (ushort)0x037F);
        BitConverter.TryWriteBytes(img[24..], mx);
        BitConverter.TryWriteBytes(img[28..], 0xFFFFu);
        // image at rsi+2048 (fxsave target) is compared only for the parts we model: zero it; the x87 area is masked out below
        s.Memory.AsSpan(rsi + 2048, 512).Clear();
    }

    [Theory]
    [MemberData(nameof(FormNames))]
    public void MatchesHostCpu(string name)
    {
        Assert.True(NativeRunner.IsSupported);
        Form form = AllForms.First(f => f.Name == name);
        var r = new Random(StableSeed(name));
        int failures = 0;
        var report = new System.Text.StringBuilder();
        for (int n = 0; n < Cases; n++)
        {
            var input = RandomState(r, form.Kind);
            PrepareSystemImages(r, input);
            byte[] code = NativeRunner.Asm(form.Build(r));
            var expected = NativeRunner.Run(code, input);
            var actual = VmRunner.Run(code, input, out string? fault);
            if (name.StartsWith("fxsave", StringComparison.Ordinal))
            {
                // the x87 portion (bytes 0-23 and 32-159 of the image) belongs to the x87 family
                int o = (int)(input.Gpr[CpuSnapshot.RSI] - Data) + 2048;
                // and MXCSR_MASK (bytes 28-31) is the modelled CPU's 0xFFFF, while newer hosts report more bits
                foreach (var img in new[] { expected.Memory, actual.Memory }) { img.AsSpan(o, 24).Clear(); img.AsSpan(o + 28, 132).Clear(); }
            }
            string diff = fault ?? CpuSnapshot.Diff(expected, actual, CpuSnapshot.ArithFlags, compareMxcsr: true);
            if (diff.Length != 0 && ++failures <= 3)
                report.Append($"case {n}: {diff}\ninput:\n{input}\n");
        }
        Assert.True(failures == 0, $"{name}: {failures}/{Cases} cases differ\n{report}");
    }

    // ---------------------------------------------------------------- the forms the compiled tier runs as IL

    /// <summary>The double-precision arithmetic's managed fast path (Isa.ArithSdFast and kin, which both tiers take:
    /// the compiled tier through its precompiled operations): taken only under MXCSR's default control bits (with PE
    /// set for add, sub, mul and div) and normal-or-zero lanes, so the general cases above reach it in about one case
    /// of twenty. These states reach it in about a third: MXCSR is the default with PE set in half the cases (the
    /// rest: PE clear, or a random mode), and each lane is a moderate normal value, a zero of either sign, or (one in
    /// four) a NaN with a payload, a signalling NaN, an infinity, a denormal or an extreme value; the forms put a zero
    /// against a zero (min and max give the source's) and an operand against itself.</summary>
    public static IEnumerable<object[]> InlineFormNames() => InlineForms.Select(f => new object[] { f.Name });

    static readonly Form[] InlineForms = BuildInlineForms();

    static Form[] BuildInlineForms()
    {
        var l = new List<Form>();
        void S(string n, Action<Assembler, AssemblerRegisterXMM, AssemblerRegisterXMM> rr, Action<Assembler, AssemblerRegisterXMM, AssemblerMemoryOperand> rm, AssemblerMemoryOperand mem)
            => l.Add(F(n, Lane.F64, a => { rr(a, xmm1, xmm2); rm(a, xmm3, mem); rr(a, xmm4, xmm4); rr(a, xmm5, xmm6); rr(a, xmm7, xmm8); }));
        AssemblerMemoryOperand M64 = __qword_ptr[rsi + 8];
        S("addsd", (a, x, y) => a.addsd(x, y), (a, x, m) => a.addsd(x, m), M64);
        S("subsd", (a, x, y) => a.subsd(x, y), (a, x, m) => a.subsd(x, m), M64);
        S("mulsd", (a, x, y) => a.mulsd(x, y), (a, x, m) => a.mulsd(x, m), M64);
        S("divsd", (a, x, y) => a.divsd(x, y), (a, x, m) => a.divsd(x, m), M64);
        S("minsd", (a, x, y) => a.minsd(x, y), (a, x, m) => a.minsd(x, m), M64);
        S("maxsd", (a, x, y) => a.maxsd(x, y), (a, x, m) => a.maxsd(x, m), M64);
        S("addpd", (a, x, y) => a.addpd(x, y), (a, x, m) => a.addpd(x, m), X);
        S("subpd", (a, x, y) => a.subpd(x, y), (a, x, m) => a.subpd(x, m), X);
        S("mulpd", (a, x, y) => a.mulpd(x, y), (a, x, m) => a.mulpd(x, m), X);
        S("divpd", (a, x, y) => a.divpd(x, y), (a, x, m) => a.divpd(x, m), X);
        S("minpd", (a, x, y) => a.minpd(x, y), (a, x, m) => a.minpd(x, m), X);
        S("maxpd", (a, x, y) => a.maxpd(x, y), (a, x, m) => a.maxpd(x, m), X);
        return l.ToArray();
    }

    static readonly ulong[] InlineSpecialsD =
    {
        0x7FF8_0000_0000_0000, 0xFFF8_0000_0000_0000, 0x7FF8_dead_beef_0000, 0xFFFC_0000_0000_1234, 0x7FF0_0000_0000_0001,
        0xFFF4_0000_0000_1234, 0x7FF0_0000_0000_0000, 0xFFF0_0000_0000_0000, 0x0000_0000_0000_0001, 0x800F_FFFF_FFFF_FFFF,
        0x0008_0000_0000_0000, 0x0010_0000_0000_0000, 0x8010_0000_0000_0000, 0x7FEF_FFFF_FFFF_FFFF, 0xFFEF_FFFF_FFFF_FFFF,
        0x0010_0000_0000_0001, 0x2000_0000_0000_0000, 0x5FF0_0000_0000_0000,
    };

    static ulong InlineLane(Random r) => r.Next(8) switch
    {
        0 or 1 => InlineSpecialsD[r.Next(InlineSpecialsD.Length)],
        2 => (ulong)r.Next(2) << 63, // +-0
        _ => BitConverter.DoubleToUInt64Bits((r.NextDouble() - 0.5) * Math.Pow(2, r.Next(-60, 60))),
    };

    static CpuSnapshot InlineState(Random r)
    {
        var s = RandomState(r, Lane.F64);
        for (int x = 0; x < 16; x++) s.Xmm[x] = new UInt128(InlineLane(r), InlineLane(r));
        // equal operands (a zero against a zero of the other sign among them) in some cases
        if (r.Next(4) == 0) s.Xmm[2] = s.Xmm[1] ^ ((UInt128)(ulong)r.Next(2) << 63) ^ ((UInt128)(ulong)r.Next(2) << 127);
        for (int o = 0; o + 8 <= s.Memory.Length; o += 8) BitConverter.TryWriteBytes(s.Memory.AsSpan(o), InlineLane(r));
        s.Mxcsr = r.Next(4) switch
        {
            0 or 1 => CpuSnapshot.DefaultMxcsr | 0x20,
            2 => CpuSnapshot.DefaultMxcsr | (uint)r.Next(0x20) & ~0x20u,
            _ => 0x1F80u | (uint)r.Next(64) | (uint)r.Next(4) << 13 | (uint)r.Next(2) * 0x40 | (uint)r.Next(2) * 0x8000,
        };
        return s;
    }

    /// <summary>Each tier against the host (VmRunner runs the interpreter's two handler sets and the compiled tier
    /// and requires them to agree) on states that mix the special operands with the common case an inline fast path
    /// for these forms would take (default control bits with PE, both low lanes normal or zero; the compiled tier
    /// calls its precompiled operations for them today, an inline version was measured and not kept): at least a
    /// quarter of the cases must be that common case for their first instruction.</summary>
    [Theory]
    [MemberData(nameof(InlineFormNames))]
    public void InlineDoubleArithmeticMatchesHostCpu(string name)
    {
        Assert.True(NativeRunner.IsSupported);
        Form form = InlineForms.First(f => f.Name == name);
        var r = new Random(StableSeed("inline " + name));
        int failures = 0, inline = 0, cases = SoakSwitch.On ? 800 : 200;
        var report = new System.Text.StringBuilder();
        for (int n = 0; n < cases; n++)
        {
            var input = InlineState(r);
            if ((input.Mxcsr & 0xFFE0) == 0x1FA0 && NormalOrZero((ulong)input.Xmm[1]) && NormalOrZero((ulong)input.Xmm[2])) inline++;
            byte[] code = NativeRunner.Asm(form.Build(r));
            var expected = NativeRunner.Run(code, input);
            var actual = VmRunner.Run(code, input, out string? fault);
            string diff = fault ?? CpuSnapshot.Diff(expected, actual, CpuSnapshot.ArithFlags, compareMxcsr: true);
            if (diff.Length != 0 && ++failures <= 3)
                report.Append($"case {n}: {diff}\ninput:\n{input}\n");
        }
        Assert.True(failures == 0, $"{name}: {failures}/{cases} cases differ\n{report}");
        Assert.True(inline * 4 >= cases, $"{name}: only {inline}/{cases} cases on the fast path");
    }

    static bool NormalOrZero(ulong x) => ((x >> 52) & 0x7FF) - 1 < 0x7FE || (x << 1) == 0;

    static int StableSeed(string s)
    {
        int h = 17;
        foreach (char ch in s) h = h * 31 + ch;
        return h;
    }

    // ---------------------------------------------------------------- semantic spot checks

    [Fact]
    public void FxsaveReportsSse2MxcsrMask()
    {
        var s = CpuSnapshot.Create();
        s.Gpr[CpuSnapshot.RSI] = Data + 0x200;
        var o = VmRunner.Run(NativeRunner.Asm(a => a.fxsave(__[rsi])), s, out string? f);
        Assert.Null(f);
        Assert.Equal(0xFFFFu, BitConverter.ToUInt32(o.Memory, 0x200 + 28));
        Assert.Equal(0x1F80u, BitConverter.ToUInt32(o.Memory, 0x200 + 24));
    }

    [Fact]
    public void MisalignedMovapsFaultsButMovupsDoesNot()
    {
        var s = CpuSnapshot.Create();
        s.Gpr[CpuSnapshot.RSI] = Data + 8;
        VmRunner.Run(NativeRunner.Asm(a => a.movups(xmm0, X)), s, out string? f1);
        Assert.Null(f1);
        VmRunner.Run(NativeRunner.Asm(a => a.movaps(xmm0, X)), s, out string? f2);
        Assert.NotNull(f2);
        Assert.Contains("general protection", f2);
        VmRunner.Run(NativeRunner.Asm(a => a.addps(xmm0, X)), s, out string? f3);
        Assert.NotNull(f3);
    }

    [Fact]
    public void UnmaskedDivideByZeroRaisesSigfpe()
    {
        var s = CpuSnapshot.Create();
        s.Mxcsr = 0x1F80 & ~0x200u; // ZM clear
        s.Xmm[1] = BitConverter.DoubleToUInt64Bits(1.0);
        s.Xmm[2] = 0;
        VmRunner.Run(NativeRunner.Asm(a => a.divsd(xmm1, xmm2)), s, out string? f);
        Assert.NotNull(f);
        Assert.Contains("SIMD floating-point exception", f);
    }

    [Fact]
    public void MmxAndVexFormsAreNotImplemented()
    {
        foreach (var bytes in new[] { new byte[] { 0x0F, 0xFC, 0xC1 } /* paddb mm0,mm1 */, new byte[] { 0xC5, 0xF8, 0x58, 0xC1 } /* vaddps */ })
        {
            var d = Decoder.Create(64, new ByteArrayCodeReader(bytes));
            d.Decode(out var ins);
            Assert.False(ReVirt.Cpu.Isa.Implements(ref ins));
        }
    }
}
