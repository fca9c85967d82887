// LDFLAGS: -lm
// floatarith: double / float / long double (x87) arithmetic, libm basics,
// rounding modes, int<->float conversions, NaN/inf comparisons, printf
// formatting (%f %e %g %a %Lf %Le) and strtod/strtof/strtold parsing.
//
// Output is deterministic for a given binary.  glibc and musl builds differ in
// a few places, all libc formatting/parsing choices rather than arithmetic:
//   * %a / %La: glibc prints subnormals as 0x0.xxxp-1022 and long doubles as
//     0xc.ccp-3 (explicit integer bit); musl normalises to 0x1.xxxp-N.
//   * strto*("nan(123)"): glibc keeps the payload, musl returns a plain NaN.
//   * strto* errno on subnormal (not zero) results may differ.
//   * transcendental functions (exp/log/sin/pow...) may differ in the last
//     ulp between libms; they are printed with %.10g to hide that (glibc also
//     picks FMA/AVX2 variants at run time depending on CPUID).  The long
//     double ones (x87 f2xm1/fyl2x/fsin/fpatan in glibc) are printed with
//     %.12Lg so an emulator computing them in double precision still matches.
// Bit-exact results (IEEE basic ops, sqrt, conversions, rounding) are folded
// into a hash that must agree between the two builds.
// Exit status: 1 if a self-check (IEEE identity) fails, else 0.
#include <errno.h>
#include <fenv.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash;
static uint64_t total_hash;
#define HASH_INIT 0xcbf29ce484222325ULL
static void section_begin(void) { hash = HASH_INIT; }
static uint64_t section_end(void) { total_hash = total_hash * 31 + hash; return hash; }
static int failures;

static void mixu(uint64_t v)
{
    hash ^= v;
    hash *= 0x100000001b3ULL;
    hash ^= hash >> 31;
}
static uint64_t dbits(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static double bitsd(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
static void mixd(double d) { mixu(dbits(d)); }
static void mixf(float f) { mixu(fbits(f)); }
static void mixld(long double x)
{
    unsigned char b[16] = {0};
    uint64_t m; uint16_t e;
    memcpy(b, &x, 10);  /* only 10 bytes are significant; rest is padding */
    memcpy(&m, b, 8);
    memcpy(&e, b + 8, 2);
    mixu(m);
    mixu(e);
}
/* libm results: NaN payload/sign is a libm implementation choice, canonicalise */
static void mixmd(double d) { if (isnan(d)) mixu(0x7ff8deadULL); else mixd(d); }
static void mixmf(float f) { if (isnan(f)) mixu(0x7fc0deadULL); else mixf(f); }
static void mixmld(long double x) { if (isnan(x)) mixu(0x7fffdeadULL); else mixld(x); }
static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL %s\n", what);
        failures++;
    }
}

#define NI __attribute__((noinline))

static const double dvals[] = {
    0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 1.0 / 3.0, 2.0 / 3.0, 0.5, 1.5, 2.5, -2.5, 3.5, -0.5,
    1e300, -1e300, 1e-300, 4.9406564584124654e-324, 2.2250738585072014e-308,
    2.2250738585072009e-308, DBL_MAX, -DBL_MAX, DBL_EPSILON,
    9007199254740992.0, 9007199254740993.0, 4503599627370495.5, 123456.789, -98765.4321,
    3.141592653589793, 2.718281828459045, 1e15, 1e16, 1e22, 1e23, 0.3, 100.0, 1024.0,
    2147483647.0, 2147483648.0, -2147483648.0, -2147483649.0, 4294967296.0,
    9223372036854775807.0, -9223372036854775808.0, 18446744073709551615.0, 1e19, 1e20,
    HUGE_VAL, -HUGE_VAL, NAN, -NAN,
};
#define NDV (sizeof dvals / sizeof dvals[0])

/* volatile load so values are not constant-folded at compile time */
static double vd(int i) { volatile double x = dvals[i]; return x; }

NI static void test_double_ops(void)
{
    int lt = 0, cmpbits = 0;
    section_begin();
    for (unsigned i = 0; i < NDV; i++) {
        double a = vd(i);
        for (unsigned j = 0; j < NDV; j++) {
            double b = vd(j);
            mixd(a + b);
            mixd(a - b);
            mixd(a * b);
            mixd(a / b);
            if (!(a == 0 && b == 0)) {  /* fmin(0,-0) sign is unspecified */
                mixmd(fmin(a, b));
                mixmd(fmax(a, b));
            }
            mixd(a < b ? a : b);   /* minsd semantics */
            mixd(copysign(a, b));
            mixmd(fma(a, b, 1.0));
            int c = (a < b) | (a <= b) << 1 | (a > b) << 2 | (a >= b) << 3 | (a == b) << 4 |
                    (a != b) << 5 | isunordered(a, b) << 6 | isless(a, b) << 7 |
                    islessgreater(a, b) << 8;
            mixu((uint64_t)c);
            lt += a < b;
            cmpbits += __builtin_popcount(c);
        }
        mixmd(sqrt(a));
        mixmd(fabs(a));
        mixd(-a);
        mixmd(floor(a));
        mixmd(ceil(a));
        mixmd(round(a));
        mixmd(trunc(a));
        mixmd(rint(a));
        mixmd(nearbyint(a));
        mixmd(fmod(a, 7.25));
        mixmd(fmod(a, -0.1));
        mixmd(remainder(a, 3.0));
        mixmd(nextafter(a, 0.0));
        mixmd(ldexp(a, 7));
        mixmd(ldexp(a, -1070));
        {
            int e;
            double m = frexp(a, &e);
            mixd(m);
            if (isfinite(a)) mixu((uint64_t)e);
            double ip;
            mixmd(modf(a, &ip));
            mixmd(ip);
        }
        /* isinf() may return the sign (glibc) or 1 (musl): normalise with !! */
        mixu((uint64_t)((!!isnan(a)) | (!!isinf(a)) << 1 | (!!isfinite(a)) << 2 | (!!isnormal(a)) << 3 |
                        (!!signbit(a)) << 4 | (fpclassify(a) == FP_SUBNORMAL) << 5));
    }
    printf("double ops: lt=%d cmpbits=%d hash=%016llx\n", lt, cmpbits, (unsigned long long)section_end());

    /* exact identities */
    volatile double x = 0.1, y = 0.2;
    check(dbits(x + y) == 0x3fd3333333333334ULL, "0.1+0.2");
    check(sqrt(x * 0 + 2.0) * sqrt(2.0) != 2.0, "sqrt2^2 != 2");
    check(dbits(sqrt((double)x * 0 + 2.0)) == 0x3ff6a09e667f3bcdULL, "sqrt(2) bits");
    check(1.0 / (x * 0) == HUGE_VAL, "1/0 = inf");
    check(isnan((x * 0 + HUGE_VAL) - HUGE_VAL), "inf-inf = nan");
    volatile double n = NAN;
    check(!(n == n) && n != n && !(n < 1) && !(n > 1) && !(n <= n), "nan comparisons");
    check(-0.0 == 0.0 && signbit(-(x * 0)), "negative zero");
    printf("0.1+0.2=%.17g (bits %016llx)  1/3=%.17g  sqrt(2)=%.17g\n", x + y,
           (unsigned long long)dbits(x + y), 1.0 / (x * 10 * 3), sqrt(x * 20));
}

NI static void test_float_ops(void)
{
    static const float fv[] = { 0.0f, -0.0f, 1.0f, -1.0f, 0.1f, 1.0f / 3.0f, 3.5f, -2.5f,
                                FLT_MAX, FLT_MIN, 1e-45f, 16777216.0f, 16777217.0f, 1e10f,
                                INFINITY, -INFINITY, NAN };
    unsigned nf = sizeof fv / sizeof fv[0];
    section_begin();
    for (unsigned i = 0; i < nf; i++) {
        volatile float a = fv[i];
        for (unsigned j = 0; j < nf; j++) {
            volatile float b = fv[j];
            mixf(a + b);
            mixf(a - b);
            mixf(a * b);
            mixf(a / b);
            mixu((uint64_t)((a < b) | (a == b) << 1 | (a > b) << 2));
        }
        mixmf(sqrtf(a));
        mixmf(floorf(a));
        mixmf(ceilf(a));
        mixmf(roundf(a));
        mixmf(truncf(a));
        mixmf(fmodf(a, 0.75f));
        mixd((double)a);            /* cvtss2sd */
        mixf((float)(double)a);
        mixf((float)((double)a * 1.0000001));  /* cvtsd2ss rounding */
    }
    volatile float t = 0.1f;
    printf("float ops: hash=%016llx 0.1f=%.10g 0.1f*3=%.10g sqrtf(2)=%.10g\n",
           (unsigned long long)section_end(), (double)t, (double)(t * 3), (double)sqrtf(t * 20));
}

/* Explicit cvttsd2si so out-of-range behaviour is defined (integer indefinite). */
static int32_t cvtt32(double d) { int32_t r; __asm__("cvttsd2si %1, %0" : "=r"(r) : "x"(d)); return r; }
static int64_t cvtt64(double d) { int64_t r; __asm__("cvttsd2siq %1, %0" : "=r"(r) : "x"(d)); return r; }
static int64_t cvt64(double d) { int64_t r; __asm__("cvtsd2siq %1, %0" : "=r"(r) : "x"(d)); return r; }

NI static void test_conversions(void)
{
    section_begin();
    for (unsigned i = 0; i < NDV; i++) {
        double a = vd(i);
        mixu((uint32_t)cvtt32(a));
        mixu((uint64_t)cvtt64(a));
        mixu((uint64_t)cvt64(a));
        if (a > -2147483649.0 && a < 2147483648.0) mixu((uint32_t)(int32_t)a);
        if (a > -9223372036854775809.0 && a < 9223372036854775808.0) mixu((uint64_t)(int64_t)a);
        if (a > -1.0 && a < 18446744073709551616.0) mixu((uint64_t)a);  /* unsigned: compare+sub */
        if (a > -1.0 && a < 4294967296.0) mixu((uint32_t)a);
        mixf((float)a);
    }
    static const uint64_t ivals[] = { 0, 1, 2, 3, 0x7fffffff, 0x80000000, 0xffffffff,
        (1ULL << 53) + 1, (1ULL << 53) + 3, (1ULL << 63) - 1, 1ULL << 63, (1ULL << 63) + 1025,
        0xffffffffffffffffULL, 0xfffffffffffff800ULL, 0xfffffffffffffc00ULL, 12345678901234567ULL };
    for (unsigned i = 0; i < sizeof ivals / sizeof ivals[0]; i++) {
        volatile uint64_t u = ivals[i];
        mixd((double)u);              /* uint64 -> double */
        mixd((double)(int64_t)u);     /* cvtsi2sdq */
        mixd((double)(int32_t)u);     /* cvtsi2sd */
        mixd((double)(uint32_t)u);
        mixf((float)u);
        mixf((float)(int64_t)u);
        mixld((long double)u);
        mixld((long double)(int64_t)u);
    }
    volatile double d3e9 = 3e9, d1e19 = 1e19, dnan = NAN, dm25 = -2.5;
    volatile uint64_t umax = 0xffffffffffffffffULL;
    printf("conversions: hash=%016llx cvtt32(3e9)=%d cvtt64(1e19)=%lld cvtt64(nan)=%lld cvt64(-2.5)=%lld "
           "cvtt64(-2.5)=%lld (double)UINT64_MAX=%.17g\n",
           (unsigned long long)section_end(), cvtt32(d3e9), (long long)cvtt64(d1e19),
           (long long)cvtt64(dnan), (long long)cvt64(dm25), (long long)cvtt64(dm25), (double)umax);
}

NI static void test_rounding_modes(void)
{
    static const int modes[] = { FE_TONEAREST, FE_UPWARD, FE_DOWNWARD, FE_TOWARDZERO };
    static const char *names[] = { "nearest", "upward", "downward", "towardzero" };
    volatile double one = 1.0, three = 3.0, big = 1e308, h = 2.5, nh = -2.5;
    for (int m = 0; m < 4; m++) {
        if (fesetround(modes[m]) != 0) {
            printf("fesetround %s failed\n", names[m]);
            failures++;
            continue;
        }
        double q = one / three, nq = -one / three, s = sqrt(three);
        double r1 = rint(h), r2 = rint(nh), n1 = nearbyint(h);
        long l1 = lrint(h), l2 = lrint(nh);
        float fq = (float)one / (float)three;
        double ov = big * 10;
        long double lq = (long double)one / three;
        printf("%-10s 1/3=%016llx -1/3=%016llx sqrt3=%016llx rint(2.5)=%g rint(-2.5)=%g nearbyint(2.5)=%g "
               "lrint=%ld,%ld 1f/3f=%08x 1e308*10=%g getround_ok=%d 1/3L=%.21Lg\n",
               names[m], (unsigned long long)dbits(q), (unsigned long long)dbits(nq),
               (unsigned long long)dbits(s), r1, r2, n1, l1, l2, fbits(fq), ov,
               fegetround() == modes[m], lq);
        mixd(q); mixd(nq); mixd(s); mixf(fq); mixd(ov); mixld(lq);
    }
    fesetround(FE_TONEAREST);

    /* exception flags */
    volatile double z = 0.0;
    feclearexcept(FE_ALL_EXCEPT);
    volatile double r = one / z;
    int f1 = fetestexcept(FE_DIVBYZERO) != 0;
    feclearexcept(FE_ALL_EXCEPT);
    r = z / z;
    int f2 = fetestexcept(FE_INVALID) != 0;
    feclearexcept(FE_ALL_EXCEPT);
    r = one / three;
    int f3 = fetestexcept(FE_INEXACT) != 0;
    feclearexcept(FE_ALL_EXCEPT);
    r = big * big;
    int f4 = fetestexcept(FE_OVERFLOW) != 0;
    feclearexcept(FE_ALL_EXCEPT);
    r = one + one;
    int f5 = fetestexcept(FE_ALL_EXCEPT) != 0;
    (void)r;
    printf("fenv flags: divbyzero=%d invalid=%d inexact=%d overflow=%d exact_add_raised=%d\n",
           f1, f2, f3, f4, f5);
}

NI static void test_libm(void)
{
    static const double xs[] = { 0.5, 1.0, 2.0, 10.0, -3.25, 0.001, 100.5 };
    for (unsigned i = 0; i < sizeof xs / sizeof xs[0]; i++) {
        volatile double x = xs[i];
        printf("x=%g exp=%.10g log=%.10g sin=%.10g cos=%.10g tan=%.10g atan=%.10g pow(x,1.5)=%.10g "
               "cbrt=%.10g hypot(x,3)=%.10g atan2(x,-1)=%.10g\n",
               x, exp(x), log(fabs(x)), sin(x), cos(x), tan(x), atan(x), pow(fabs(x), 1.5),
               cbrt(x), hypot(x, 3.0), atan2(x, -1.0));
    }
}

NI static void test_long_double(void)
{
    static const long double lv[] = { 0.0L, 1.0L, -1.0L, 0.1L, 1.0L / 3.0L, 3.141592653589793238462643L,
                                      1e4000L, 1e-4000L, LDBL_MAX, LDBL_MIN, LDBL_EPSILON,
                                      18446744073709551615.0L, -2.5L, 123456789.125L };
    unsigned n = sizeof lv / sizeof lv[0];
    section_begin();
    for (unsigned i = 0; i < n; i++) {
        volatile long double a = lv[i];
        for (unsigned j = 0; j < n; j++) {
            volatile long double b = lv[j];
            mixld(a + b);
            mixld(a - b);
            mixld(a * b);
            mixld(a / b);
            mixu((uint64_t)((a < b) | (a == b) << 1 | (a > b) << 2));
        }
        mixmld(sqrtl(a));
        mixmld(fabsl(a));
        mixmld(floorl(a));
        mixmld(ceill(a));
        mixmld(rintl(a));
        mixmld(truncl(a));
        mixmld(fmodl(a, 0.7L));
        mixd((double)a);      /* fstpl rounding to double */
        mixf((float)a);
        if (a > -9e18L && a < 9e18L) mixu((uint64_t)(int64_t)a);  /* fisttp / fistp */
    }
    printf("long double ops: hash=%016llx\n", (unsigned long long)section_end());

    volatile long double third = 1.0L / 3.0L, pi = 3.141592653589793238462643L;
    volatile long double big = 1e4000L, tiny = 1e-4000L;
    printf("1/3L: %%.25Lf=%.25Lf %%.20Le=%.20Le %%Lg=%Lg\n", third, third, third);
    printf("piL: %%.25Lf=%.25Lf %%.20Le=%.20Le sqrtl=%.20Le\n", pi, pi, sqrtl(pi));
    printf("1e4000L=%.10Le 1e-4000L=%.10Le LDBL_MAX=%Le LDBL_MIN=%Le LDBL_EPS=%Le\n",
           big, tiny, (long double)LDBL_MAX, (long double)LDBL_MIN, (long double)LDBL_EPSILON);
    printf("2^64-1 as long double: %.0Lf  (long double)0.1=%.30Lf\n",
           (long double)(volatile uint64_t){0xffffffffffffffffULL}, (long double)(volatile double){0.1});
    printf("expl(1)=%.12Lg logl(10)=%.12Lg sinl(1)=%.12Lg cosl(1)=%.12Lg atanl(1)*4=%.12Lg powl(2,0.5)=%.12Lg\n",
           expl(1.0L + third * 0), logl(10.0L + third * 0), sinl(1.0L + third * 0),
           cosl(1.0L + third * 0), atanl(1.0L + third * 0) * 4, powl(2.0L, 0.5L + third * 0));
    printf("%%La of 1/3L: %La\n", third);
    check(third * 3 == 1.0L, "(1/3L)*3 == 1");
    check(sqrtl(4.0L + third * 0) == 2.0L, "sqrtl(4)");
}

NI static void test_printf(void)
{
    static const char *fmts[] = { "%f", "%.0f", "%.3f", "%.17f", "%e", "%.0e", "%.15e", "%g",
                                  "%.17g", "%#g", "%+.4g", "%12.4f", "%-12.3e|", "%a", "%.3a", "%A" };
    for (unsigned i = 0; i < NDV; i++) {
        double a = vd(i);
        printf("v%02u", i);
        for (unsigned f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
            char buf[400];
            snprintf(buf, sizeof buf, fmts[f], a);
            printf(" %s", buf);
        }
        printf("\n");
    }
    /* a couple of huge %f expansions */
    printf("DBL_MAX %%f: %f\n", DBL_MAX);
    printf("DBL_TRUE_MIN %%.1100f tail: %s\n", ({
        static char b[1200];
        snprintf(b, sizeof b, "%.1080f", 4.9406564584124654e-324);
        b + 1000; }));
    printf("float %%f: %f %f %e\n", (double)0.1f, (double)FLT_MAX, (double)FLT_MIN);
}

NI static void test_strtod(void)
{
    static const char *strs[] = {
        "0", "-0", "0.1", "1e-400", "1e400", "-1e400", "4.9406564584124654e-324", "2.4703282292062327e-324",
        "2.4703282292062328e-324", "2.2250738585072011e-308", "2.2250738585072012e-308",
        "0x1.fffffffffffffp1023", "0x1p-1074", "0X1.8P+1", "inf", "-Infinity", "nan", "-NAN",
        "nan(123)", "  +1.5e+3xyz", "1.00000000000000011102230246251565404236316680908203125",
        "1.000000000000000111022302462515654042363166809082031251",
        "9007199254740993", "9007199254740993.0000000000000000001", ".5", "5.", "1e", "1e+", "0x",
        "-.e5", "1_000", "123456789012345678901234567890", "0.000000000000000000000000000001234",
        "3.4028235677973366e38", "3.4028236e38", "1.17549435e-38", "1.4e-45", "7e-46",
        "1.18973149535723176502e+4932", "1.18973149535723176509e+4933", "3.64519953188247460253e-4951",
        "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587"
        "207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711"
        "531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093"
        "042880177904174497791.9999999999999999999999999999999999999999999999999999999999999999999999",
        "",
    };
    for (unsigned i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        const char *s = strs[i];
        char *e1, *e2, *e3;
        errno = 0;
        double d = strtod(s, &e1);
        int err1 = errno;
        errno = 0;
        float f = strtof(s, &e2);
        int err2 = errno;
        errno = 0;
        long double ld = strtold(s, &e3);
        int err3 = errno;
        char show[48];
        snprintf(show, sizeof show, "%.40s", s);
        printf("strto* \"%s\": d=%016llx end=%d erange=%d | f=%08x end=%d erange=%d | ld=%.21Lg end=%d erange=%d\n",
               show, (unsigned long long)dbits(d), (int)(e1 - s), err1 == ERANGE,
               fbits(f), (int)(e2 - s), err2 == ERANGE, ld, (int)(e3 - s), err3 == ERANGE);
        if (!isnan(d)) {
            mixd(d);
            mixf(f);
        }
    }
    /* round trip: printing with %.17g and parsing back must be exact */
    int bad = 0;
    uint64_t st = 12345;
    for (int i = 0; i < 2000; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        double d = bitsd(st & 0x7fefffffffffffffULL);
        char buf[64];
        snprintf(buf, sizeof buf, "%.17g", d);
        if (dbits(strtod(buf, NULL)) != dbits(d)) bad++;
        snprintf(buf, sizeof buf, "%a", d);
        if (dbits(strtod(buf, NULL)) != dbits(d)) bad++;
        float f = (float)bitsd((st >> 11) | 0x3000000000000000ULL);
        snprintf(buf, sizeof buf, "%.9g", (double)f);
        if (fbits(strtof(buf, NULL)) != fbits(f)) bad++;
    }
    printf("round trip mismatches: %d\n", bad);
    check(bad == 0, "round trip");
}

int main(void)
{
    test_double_ops();
    test_float_ops();
    test_conversions();
    test_rounding_modes();
    test_libm();
    test_long_double();
    test_printf();
    test_strtod();
    printf("total hash %016llx\n", (unsigned long long)total_hash);
    printf("failures %d\n", failures);
    return failures ? 1 : 0;
}
