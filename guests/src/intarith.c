// intarith: integer arithmetic over 8/16/32/64/128-bit widths.
// Inputs come from a fixed-seed LCG.  Results are folded into one hash per
// category (so a mismatch points at the broken instruction family) and a
// total.  A few algebraic identities are self-checked; exit status 1 if any
// identity fails, else 0.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t lcg_state = 0x0123456789abcdefULL;
static uint64_t rnd64(void)
{
    uint64_t hi, lo;
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    hi = lcg_state >> 32;
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    lo = lcg_state >> 32;
    return (hi << 32) | lo;
}

/* Pick "interesting" operands often: small values, extremes, powers of two. */
static uint64_t operand(void)
{
    uint64_t r = rnd64();
    switch (r & 15) {
    case 0: return 0;
    case 1: return 1;
    case 2: return (uint64_t)-1;
    case 3: return 1ULL << ((r >> 8) & 63);
    case 4: return 0x8000000000000000ULL;
    case 5: return 0x7fffffffffffffffULL;
    case 6: return (r >> 8) & 0xff;
    case 7: return 0x80000000ULL | ((r >> 8) & 1 ? 0xffffffff00000000ULL : 0);
    case 8: return (uint64_t)(int64_t)(int8_t)(r >> 8);
    case 9: return (uint64_t)(int64_t)(int16_t)(r >> 8);
    default: return rnd64();
    }
}

enum { C_ADDSUB, C_MUL, C_DIV, C_SHIFT, C_ROT, C_BITS, C_BSWAP, C_I128, C_OVF, C_CONV, C_MISC, NCAT };
static const char *cat_names[NCAT] = {
    "addsub", "mul", "divmod", "shift", "rotate", "bitcount", "bswap", "int128", "overflow", "convert", "misc"
};
static uint64_t cat_hash[NCAT];
static int failures;

static void mix(int cat, uint64_t v)
{
    uint64_t h = cat_hash[cat];
    h ^= v;
    h *= 0x100000001b3ULL;
    h ^= h >> 29;
    cat_hash[cat] = h;
}

static void check(int ok, const char *what, uint64_t a, uint64_t b)
{
    if (!ok) {
        if (failures < 20)
            printf("FAIL %s a=%016llx b=%016llx\n", what, (unsigned long long)a, (unsigned long long)b);
        failures++;
    }
}

/* noinline so the compiler must emit real instructions for variable inputs */
#define NI __attribute__((noinline))

NI static void do_addsub(uint64_t a, uint64_t b)
{
    mix(C_ADDSUB, (uint8_t)((uint8_t)a + (uint8_t)b));
    mix(C_ADDSUB, (uint8_t)((uint8_t)a - (uint8_t)b));
    mix(C_ADDSUB, (uint16_t)((uint16_t)a + (uint16_t)b));
    mix(C_ADDSUB, (uint16_t)((uint16_t)a - (uint16_t)b));
    mix(C_ADDSUB, (uint32_t)a + (uint32_t)b);
    mix(C_ADDSUB, (uint32_t)a - (uint32_t)b);
    mix(C_ADDSUB, a + b);
    mix(C_ADDSUB, a - b);
    mix(C_ADDSUB, -a);
    mix(C_ADDSUB, (uint32_t)-(uint32_t)a);
    mix(C_ADDSUB, ~a);
    /* signed comparisons of each width */
    mix(C_ADDSUB, ((int8_t)a < (int8_t)b) | (((int16_t)a < (int16_t)b) << 1) |
                  (((int32_t)a < (int32_t)b) << 2) | (((int64_t)a < (int64_t)b) << 3) |
                  (((uint8_t)a < (uint8_t)b) << 4) | (((uint16_t)a < (uint16_t)b) << 5) |
                  (((uint32_t)a < (uint32_t)b) << 6) | ((a < b) << 7) |
                  (((int64_t)a <= (int64_t)b) << 8) | ((a >= b) << 9) | ((a == b) << 10));
    check((a + b) - b == a, "add-sub identity", a, b);
}

NI static void do_mul(uint64_t a, uint64_t b)
{
    mix(C_MUL, (uint8_t)((uint8_t)a * (uint8_t)b));
    mix(C_MUL, (uint16_t)((int16_t)a * (int16_t)b));
    mix(C_MUL, (uint32_t)((uint32_t)a * (uint32_t)b));
    mix(C_MUL, (uint64_t)((int64_t)(int32_t)a * (int64_t)(int32_t)b));   /* imul 32x32->64 */
    mix(C_MUL, (uint64_t)(uint32_t)a * (uint32_t)b);                     /* mul 32x32->64 */
    mix(C_MUL, a * b);
    mix(C_MUL, (uint64_t)(((unsigned __int128)a * b) >> 64));            /* mul high */
    mix(C_MUL, (uint64_t)(((__int128)(int64_t)a * (int64_t)b) >> 64));  /* imul high */
    mix(C_MUL, a * 3);
    mix(C_MUL, a * 5);
    mix(C_MUL, a * 9);
    mix(C_MUL, a * 10);
    mix(C_MUL, a * 0x123456789ULL);
    mix(C_MUL, (uint32_t)a * 1000003u);
}

NI static void do_div(uint64_t a, uint64_t b)
{
    uint8_t a8 = a, b8 = b ? b : 1;
    uint16_t a16 = a, b16 = b ? b : 1;
    uint32_t a32 = a, b32 = b ? b : 1;
    uint64_t b64 = b ? b : 1;
    int8_t sa8 = a, sb8 = b ? b : 1;
    int16_t sa16 = a, sb16 = b ? b : 1;
    int32_t sa32 = a, sb32 = b ? b : 1;
    int64_t sa64 = a, sb64 = b ? b : 1;

    if (b8 == 0) b8 = 3;
    if (b16 == 0) b16 = 3;
    if (b32 == 0) b32 = 3;
    if (sb8 == 0) sb8 = 3;
    if (sb16 == 0) sb16 = 3;
    if (sb32 == 0) sb32 = 3;
    /* avoid INT_MIN / -1 which traps */
    if (sb32 == -1 && sa32 == INT32_MIN) sb32 = 7;
    if (sb64 == -1 && sa64 == INT64_MIN) sb64 = 7;

    mix(C_DIV, (uint8_t)(a8 / b8));
    mix(C_DIV, (uint8_t)(a8 % b8));
    mix(C_DIV, (uint8_t)(sa8 / sb8));
    mix(C_DIV, (uint8_t)(sa8 % sb8));
    mix(C_DIV, (uint16_t)(a16 / b16));
    mix(C_DIV, (uint16_t)(a16 % b16));
    mix(C_DIV, (uint16_t)(sa16 / sb16));
    mix(C_DIV, (uint16_t)(sa16 % sb16));
    mix(C_DIV, a32 / b32);
    mix(C_DIV, a32 % b32);
    mix(C_DIV, (uint32_t)(sa32 / sb32));
    mix(C_DIV, (uint32_t)(sa32 % sb32));
    mix(C_DIV, a / b64);
    mix(C_DIV, a % b64);
    mix(C_DIV, (uint64_t)(sa64 / sb64));
    mix(C_DIV, (uint64_t)(sa64 % sb64));
    /* division by constants (compiled to multiply-by-reciprocal) */
    mix(C_DIV, a / 7);
    mix(C_DIV, a % 10);
    mix(C_DIV, (uint64_t)(sa64 / 3));
    mix(C_DIV, (uint64_t)(sa64 % 1000));
    mix(C_DIV, a32 / 13);
    mix(C_DIV, (uint32_t)(sa32 / -9));
    mix(C_DIV, (uint64_t)(sa64 / 16));  /* signed shift-divide */
    check(a / b64 * b64 + a % b64 == a, "udiv64 identity", a, b64);
    check((uint64_t)(sa64 / sb64 * sb64 + sa64 % sb64) == (uint64_t)sa64, "sdiv64 identity", a, (uint64_t)sb64);
    check(a32 / b32 * b32 + a32 % b32 == a32, "udiv32 identity", a, b);
    check((a / 7) * 7 + a % 7 == a, "div7 identity", a, 7);
}

NI static void do_shift(uint64_t a, uint64_t b)
{
    unsigned n64 = b & 63, n32 = b & 31, n16 = b & 15, n8 = b & 7;
    mix(C_SHIFT, a << n64);
    mix(C_SHIFT, a >> n64);
    mix(C_SHIFT, (uint64_t)((int64_t)a >> n64));
    mix(C_SHIFT, (uint32_t)a << n32);
    mix(C_SHIFT, (uint32_t)a >> n32);
    mix(C_SHIFT, (uint32_t)((int32_t)a >> n32));
    mix(C_SHIFT, (uint16_t)((uint16_t)a << n16));
    mix(C_SHIFT, (uint16_t)((uint16_t)a >> n16));
    mix(C_SHIFT, (uint16_t)((int16_t)a >> n16));
    mix(C_SHIFT, (uint8_t)((uint8_t)a << n8));
    mix(C_SHIFT, (uint8_t)((uint8_t)a >> n8));
    mix(C_SHIFT, (uint8_t)((int8_t)a >> n8));
    mix(C_SHIFT, a << 13);
    mix(C_SHIFT, (uint64_t)((int64_t)a >> 47));
    mix(C_SHIFT, (uint32_t)a >> 31);
    /* double-width shift idioms (shld/shrd) */
    if (n64)
        mix(C_SHIFT, (a << n64) | (b >> (64 - n64)));
    mix(C_SHIFT, (uint64_t)(((unsigned __int128)a << 64 | b) >> n64));
}

static inline uint64_t rol64(uint64_t x, unsigned n) { return (x << (n & 63)) | (x >> ((-n) & 63)); }
static inline uint64_t ror64(uint64_t x, unsigned n) { return (x >> (n & 63)) | (x << ((-n) & 63)); }
static inline uint32_t rol32(uint32_t x, unsigned n) { return (x << (n & 31)) | (x >> ((-n) & 31)); }
static inline uint32_t ror32(uint32_t x, unsigned n) { return (x >> (n & 31)) | (x << ((-n) & 31)); }
static inline uint16_t rol16(uint16_t x, unsigned n) { return (uint16_t)((x << (n & 15)) | (x >> ((-n) & 15))); }
static inline uint8_t rol8(uint8_t x, unsigned n) { return (uint8_t)((x << (n & 7)) | (x >> ((-n) & 7))); }

NI static void do_rot(uint64_t a, uint64_t b)
{
    unsigned n = (unsigned)b;
    mix(C_ROT, rol64(a, n));
    mix(C_ROT, ror64(a, n));
    mix(C_ROT, rol32((uint32_t)a, n));
    mix(C_ROT, ror32((uint32_t)a, n));
    mix(C_ROT, rol16((uint16_t)a, n));
    mix(C_ROT, rol8((uint8_t)a, n));
    mix(C_ROT, rol64(a, 17));
    mix(C_ROT, ror32((uint32_t)a, 7));
    mix(C_ROT, rol16((uint16_t)a, 8));  /* often becomes rol $8 / xchg */
    check(ror64(rol64(a, n), n) == a, "rotate identity", a, n);
}

NI static void do_bits(uint64_t a, uint64_t b)
{
    uint32_t a32 = (uint32_t)a;
    (void)b;
    mix(C_BITS, a ? (uint64_t)__builtin_clzll(a) : 64);
    mix(C_BITS, a ? (uint64_t)__builtin_ctzll(a) : 64);
    mix(C_BITS, a32 ? (uint64_t)__builtin_clz(a32) : 32);
    mix(C_BITS, a32 ? (uint64_t)__builtin_ctz(a32) : 32);
    mix(C_BITS, (uint64_t)__builtin_popcountll(a));
    mix(C_BITS, (uint64_t)__builtin_popcount(a32));
    mix(C_BITS, (uint64_t)__builtin_parityll(a));
    mix(C_BITS, (uint64_t)__builtin_ffsll((long long)a));
    mix(C_BITS, a & (a - 1));   /* clear lowest set bit */
    mix(C_BITS, a & -a);        /* isolate lowest set bit */
    mix(C_BITS, a ^ (a >> 1));  /* gray code */
    {
        /* portable popcount must agree with builtin */
        uint64_t x = a;
        int c = 0;
        while (x) { c += x & 1; x >>= 1; }
        check(c == __builtin_popcountll(a), "popcount", a, (uint64_t)c);
    }
    /* bit test idioms (bt) */
    mix(C_BITS, (a >> (b & 63)) & 1);
    mix(C_BITS, a | (1ULL << (b & 63)));
    mix(C_BITS, a & ~(1ULL << (b & 63)));
    mix(C_BITS, a ^ (1ULL << (b & 63)));
}

NI static void do_bswap(uint64_t a, uint64_t b)
{
    (void)b;
    mix(C_BSWAP, __builtin_bswap64(a));
    mix(C_BSWAP, __builtin_bswap32((uint32_t)a));
    mix(C_BSWAP, __builtin_bswap16((uint16_t)a));
    check(__builtin_bswap64(__builtin_bswap64(a)) == a, "bswap64 twice", a, 0);
    {
        uint64_t m = 0;
        for (int i = 0; i < 8; i++)
            m |= ((a >> (8 * i)) & 0xff) << (56 - 8 * i);
        check(m == __builtin_bswap64(a), "bswap64 manual", a, m);
    }
}

NI static void do_i128(uint64_t a, uint64_t b, uint64_t c, uint64_t d)
{
    unsigned __int128 x = ((unsigned __int128)a << 64) | b;
    unsigned __int128 y = ((unsigned __int128)c << 64) | d;
    __int128 sx = (__int128)x, sy = (__int128)y;
    unsigned __int128 r;

    r = x + y;  mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    r = x - y;  mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    r = x * y;  mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    r = x << (d & 127); mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    r = x >> (d & 127); mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    r = (unsigned __int128)(sx >> (d & 127)); mix(C_I128, (uint64_t)r); mix(C_I128, (uint64_t)(r >> 64));
    if (y != 0) {
        unsigned __int128 q = x / y, m = x % y;
        mix(C_I128, (uint64_t)q); mix(C_I128, (uint64_t)(q >> 64));
        mix(C_I128, (uint64_t)m); mix(C_I128, (uint64_t)(m >> 64));
        check(q * y + m == x && m < y, "u128 div identity", a, c);
        if (!(sy == -1 && sx == (__int128)((unsigned __int128)1 << 127))) {
            __int128 sq = sx / sy, sm = sx % sy;
            mix(C_I128, (uint64_t)sq); mix(C_I128, (uint64_t)((unsigned __int128)sq >> 64));
            mix(C_I128, (uint64_t)sm); mix(C_I128, (uint64_t)((unsigned __int128)sm >> 64));
            check(sq * sy + sm == sx, "s128 div identity", a, c);
        }
    }
    /* 128 / 64 style division with small divisor */
    if (d != 0) {
        unsigned __int128 q = x / d;
        mix(C_I128, (uint64_t)q); mix(C_I128, (uint64_t)(q >> 64));
        mix(C_I128, (uint64_t)(x % d));
    }
    mix(C_I128, (x < y) | ((sx < sy) << 1) | ((x == y) << 2));
}

NI static void do_ovf(uint64_t a, uint64_t b)
{
    int32_t r32; int64_t r64; uint32_t u32; uint64_t u64; int8_t r8; uint16_t u16;
    uint64_t flags = 0;
    int bit = 0;
#define OV(expr, res) do { flags |= (uint64_t)(expr) << bit++; mix(C_OVF, (uint64_t)(res)); } while (0)
    OV(__builtin_add_overflow((int32_t)a, (int32_t)b, &r32), (uint32_t)r32);
    OV(__builtin_sub_overflow((int32_t)a, (int32_t)b, &r32), (uint32_t)r32);
    OV(__builtin_mul_overflow((int32_t)a, (int32_t)b, &r32), (uint32_t)r32);
    OV(__builtin_add_overflow((int64_t)a, (int64_t)b, &r64), r64);
    OV(__builtin_sub_overflow((int64_t)a, (int64_t)b, &r64), r64);
    OV(__builtin_mul_overflow((int64_t)a, (int64_t)b, &r64), r64);
    OV(__builtin_add_overflow((uint32_t)a, (uint32_t)b, &u32), u32);
    OV(__builtin_sub_overflow((uint32_t)a, (uint32_t)b, &u32), u32);
    OV(__builtin_mul_overflow((uint32_t)a, (uint32_t)b, &u32), u32);
    OV(__builtin_add_overflow(a, b, &u64), u64);
    OV(__builtin_sub_overflow(a, b, &u64), u64);
    OV(__builtin_mul_overflow(a, b, &u64), u64);
    OV(__builtin_add_overflow((int8_t)a, (int8_t)b, &r8), (uint8_t)r8);
    OV(__builtin_mul_overflow((uint16_t)a, (uint16_t)b, &u16), u16);
    OV(__builtin_mul_overflow((int64_t)a, b, &r64), r64);  /* mixed sign */
    OV(__builtin_add_overflow((int64_t)a, (int32_t)b, &r32), (uint32_t)r32);
#undef OV
    mix(C_OVF, flags);
    {
        /* cross-check 64-bit unsigned multiply overflow against 128-bit product */
        unsigned __int128 p = (unsigned __int128)a * b;
        check(__builtin_mul_overflow(a, b, &u64) == ((p >> 64) != 0), "umul64 overflow", a, b);
    }
}

NI static void do_conv(uint64_t a, uint64_t b)
{
    (void)b;
    mix(C_CONV, (uint64_t)(int64_t)(int8_t)a);    /* movsbq */
    mix(C_CONV, (uint64_t)(int64_t)(int16_t)a);   /* movswq */
    mix(C_CONV, (uint64_t)(int64_t)(int32_t)a);   /* movslq / cltq */
    mix(C_CONV, (uint64_t)(uint8_t)a);            /* movzbl */
    mix(C_CONV, (uint64_t)(uint16_t)a);           /* movzwl */
    mix(C_CONV, (uint64_t)(uint32_t)a);           /* mov r32 */
    mix(C_CONV, (uint64_t)(uint32_t)(int32_t)(int16_t)a);
    mix(C_CONV, (uint64_t)(uint16_t)(int16_t)(int8_t)a);
    mix(C_CONV, (uint64_t)((int64_t)a < 0 ? -1 : 0)); /* cqo-like */
}

NI static void do_misc(uint64_t a, uint64_t b)
{
    int64_t sa = (int64_t)a, sb = (int64_t)b;
    int32_t sa32 = (int32_t)a;
    mix(C_MISC, (uint64_t)(sa < sb ? sa : sb));           /* cmov */
    mix(C_MISC, a > b ? a : b);
    mix(C_MISC, (uint64_t)(sa == INT64_MIN ? sa : (sa < 0 ? -sa : sa)));  /* abs */
    mix(C_MISC, (uint32_t)(sa32 == INT32_MIN ? sa32 : (sa32 < 0 ? -sa32 : sa32)));
    mix(C_MISC, (uint64_t)((sa > 0) - (sa < 0)));         /* sign */
    mix(C_MISC, (a & b) | (~a & (b >> 3)));
    mix(C_MISC, (a | b) ^ (a & 0xf0f0f0f0f0f0f0f0ULL));
    /* carry chain via add-with-carry idiom */
    {
        uint64_t lo = a + b;
        uint64_t carry = lo < a;
        mix(C_MISC, lo);
        mix(C_MISC, carry + (a >> 1) + (b >> 1));
    }
    /* switch (jump table) */
    switch (a % 11) {
    case 0: mix(C_MISC, 100); break;
    case 1: mix(C_MISC, b + 1); break;
    case 2: mix(C_MISC, b * 2); break;
    case 3: mix(C_MISC, b ^ 3); break;
    case 4: mix(C_MISC, b >> 4); break;
    case 5: mix(C_MISC, ~b); break;
    case 6: mix(C_MISC, b - 6); break;
    case 7: mix(C_MISC, b | 7); break;
    case 8: mix(C_MISC, b & 8); break;
    case 9: mix(C_MISC, b * 9); break;
    default: mix(C_MISC, 42); break;
    }
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 20000;
    for (int i = 0; i < iters; i++) {
        uint64_t a = operand(), b = operand(), c = operand(), d = operand();
        do_addsub(a, b);
        do_mul(a, b);
        do_div(a, b);
        do_shift(a, b);
        do_rot(a, b);
        do_bits(a, b);
        do_bswap(a, b);
        do_i128(a, b, c, d);
        do_ovf(a, b);
        do_conv(a, b);
        do_misc(a, b);
        if (i < 6) {
            printf("sample %d: a=%016llx b=%016llx a*b=%016llx a/b=%016llx a%%b=%016llx "
                   "rol(a,b)=%016llx clz=%d pop=%d bswap=%016llx\n",
                   i, (unsigned long long)a, (unsigned long long)b,
                   (unsigned long long)(a * b),
                   (unsigned long long)(b ? a / b : 0), (unsigned long long)(b ? a % b : 0),
                   (unsigned long long)rol64(a, (unsigned)b),
                   a ? __builtin_clzll(a) : 64, __builtin_popcountll(a),
                   (unsigned long long)__builtin_bswap64(a));
            printf("          (int64)a=%lld (int32)a=%d (int16)a=%d (int8)a=%d (uint8)a=%u\n",
                   (long long)a, (int)(int32_t)a, (int)(int16_t)a, (int)(int8_t)a, (unsigned)(uint8_t)a);
        }
    }
    uint64_t total = 0;
    for (int c = 0; c < NCAT; c++) {
        printf("%-9s %016llx\n", cat_names[c], (unsigned long long)cat_hash[c]);
        total = total * 31 + cat_hash[c];
    }
    printf("checksum  %016llx\n", (unsigned long long)total);
    printf("failures  %d\n", failures);
    return failures ? 1 : 0;
}
