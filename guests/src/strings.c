// strings: libc string/memory functions over many sizes (0..300) and
// alignments (offsets 0..15), checked against byte-at-a-time reference code.
// Also strings ending exactly at a page boundary followed by an inaccessible
// page (catches over-reads of vectorised strlen/strchr/memchr in the VM).
// Prints a checksum per function; exit 1 if any check fails.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAXN 300
#define BUFSZ (MAXN + 64)

static uint64_t lcg = 42;
static uint32_t rnd(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg >> 33);
}

enum { H_MEMCPY, H_MEMMOVE, H_MEMSET, H_MEMCMP, H_STRLEN, H_STRCMP, H_STRNCMP, H_STRCHR,
       H_STRRCHR, H_MEMCHR, H_STRSTR, H_STRCPY, H_STRCAT, H_STRTOK, H_SNPRINTF, H_PAGE, NH };
static const char *hnames[NH] = { "memcpy", "memmove", "memset", "memcmp", "strlen", "strcmp",
    "strncmp", "strchr", "strrchr", "memchr", "strstr", "strcpy", "strcat", "strtok", "snprintf",
    "pageedge" };
static uint64_t h[NH];
static long failures;

static void mix(int k, uint64_t v)
{
    h[k] = (h[k] ^ v) * 0x100000001b3ULL;
    h[k] ^= h[k] >> 32;
}
static void mixbuf(int k, const unsigned char *p, size_t n)
{
    uint64_t x = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++)
        x = (x ^ p[i]) * 0x100000001b3ULL;
    mix(k, x);
}
static void fail(const char *what, size_t n, int o1, int o2)
{
    if (failures < 30)
        printf("FAIL %s n=%zu off=%d,%d\n", what, n, o1, o2);
    failures++;
}
static int sgn(int x) { return (x > 0) - (x < 0); }

static unsigned char A[BUFSZ] __attribute__((aligned(64)));
static unsigned char B[BUFSZ] __attribute__((aligned(64)));
static unsigned char R[BUFSZ] __attribute__((aligned(64)));

static void fill_random(unsigned char *p, size_t n, int nonzero)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)rnd();
        if (nonzero && c == 0) c = 0x80 | (unsigned char)i;
        if (nonzero && c == 0) c = 1;
        p[i] = c;
    }
}

/* offset pairs to try for length n: all 256 for small n, a sample for large */
static int pair_count(size_t n) { return n < 24 ? 256 : (n % 7 == 0 ? 64 : 12); }
static void pair_get(size_t n, int i, int *o1, int *o2)
{
    if (n < 24 || n % 7 == 0) {
        int step = n < 24 ? 1 : 4;
        *o1 = (i * step) % 16;
        *o2 = ((i * step) / 16) % 16;
        if (n >= 24) *o2 = (*o2 + i) % 16;
    } else {
        *o1 = (int)((i * 5 + n) % 16);
        *o2 = (int)((i * 11 + n * 3) % 16);
    }
}

static void test_mem(void)
{
    for (size_t n = 0; n <= MAXN; n++) {
        int pc = pair_count(n);
        for (int pi = 0; pi < pc; pi++) {
            int so, d;
            pair_get(n, pi, &so, &d);

            /* memcpy */
            fill_random(A, BUFSZ, 0);
            fill_random(B, BUFSZ, 0);
            memcpy(R, B, BUFSZ);
            void *ret = memcpy(B + d, A + so, n);
            for (size_t i = 0; i < n; i++) R[d + i] = A[so + i];
            if (ret != B + d || memcmp(R, B, BUFSZ) != 0) fail("memcpy", n, so, d);
            mixbuf(H_MEMCPY, B, (size_t)d + n + 1);

            /* memset */
            int c = (int)(rnd() & 0xff);
            memcpy(R, B, BUFSZ);
            ret = memset(B + d, c, n);
            for (size_t i = 0; i < n; i++) R[d + i] = (unsigned char)c;
            if (ret != B + d || memcmp(R, B, BUFSZ) != 0) fail("memset", n, c, d);
            mix(H_MEMSET, (uint64_t)c * 1000 + n);

            /* memmove (overlapping both directions) */
            int delta = (int)(rnd() % 41) - 20;
            int s = 24 + so, t = 24 + so + delta;
            memcpy(R, A, BUFSZ);
            ret = memmove(A + t, A + s, n);
            {
                unsigned char tmp[BUFSZ];
                for (size_t i = 0; i < n; i++) tmp[i] = R[s + i];
                for (size_t i = 0; i < n; i++) R[t + i] = tmp[i];
            }
            if (ret != A + t || memcmp(R, A, BUFSZ) != 0) fail("memmove", n, s, t);
            mixbuf(H_MEMMOVE, A, (size_t)t + n + 1);

            /* memcmp: equal, then one differing byte */
            fill_random(A, BUFSZ, 0);
            memcpy(B + d, A + so, n);
            if (memcmp(A + so, B + d, n) != 0) fail("memcmp-eq", n, so, d);
            if (n > 0) {
                size_t k = rnd() % n;
                B[d + k] = (unsigned char)(B[d + k] + 1 + rnd() % 255);
                int ref = A[so + k] < B[d + k] ? -1 : 1;
                int got = sgn(memcmp(A + so, B + d, n));
                if (got != ref) fail("memcmp-ne", n, so, d);
                mix(H_MEMCMP, (uint64_t)(got + 1) + k * 4);
                /* bytes after the difference must not matter */
                if (sgn(memcmp(A + so, B + d, k)) != 0) fail("memcmp-prefix", k, so, d);
            }

            /* memchr */
            fill_random(A, BUFSZ, 0);
            {
                int ch = A[so + (n ? rnd() % n : 0)];
                const unsigned char *p = memchr(A + so, ch, n);
                const unsigned char *q = NULL;
                for (size_t i = 0; i < n; i++) if (A[so + i] == ch) { q = A + so + i; break; }
                if (p != q) fail("memchr", n, so, ch);
                mix(H_MEMCHR, p ? (uint64_t)(p - A) : 999);
            }
        }
    }
}

/* make a NUL-terminated string of length n at p with non-zero random bytes, garbage after */
static void make_str(unsigned char *p, size_t n)
{
    fill_random(p, n, 1);
    p[n] = 0;
    p[n + 1] = 'x';
    p[n + 2] = 0x80;
}

static size_t ref_strlen(const unsigned char *p) { size_t n = 0; while (p[n]) n++; return n; }
static int ref_strcmp(const unsigned char *a, const unsigned char *b, size_t lim)
{
    for (size_t i = 0; i < lim; i++) {
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
        if (!a[i]) return 0;
    }
    return 0;
}

static void test_str(void)
{
    for (size_t n = 0; n <= MAXN; n++) {
        int pc = pair_count(n);
        for (int pi = 0; pi < pc; pi++) {
            int so, d;
            pair_get(n, pi, &so, &d);
            char *a = (char *)A + so, *b = (char *)B + d;

            /* strlen */
            make_str(A + so, n);
            size_t len = strlen(a);
            if (len != n || len != ref_strlen(A + so)) fail("strlen", n, so, 0);
            mix(H_STRLEN, len);

            /* strcmp / strncmp: identical, then differ at k, then prefix */
            memcpy(b, a, n + 1);
            if (strcmp(a, b) != 0) fail("strcmp-eq", n, so, d);
            if (strncmp(a, b, n + 5) != 0) fail("strncmp-eq", n, so, d);
            if (n > 0) {
                size_t k = rnd() % n;
                unsigned char nb = (unsigned char)(B[d + k] + 1 + rnd() % 254);
                if (nb == 0) nb = 1;
                B[d + k] = nb;
                int ref = ref_strcmp((unsigned char *)a, (unsigned char *)b, (size_t)-1);
                int got = sgn(strcmp(a, b));
                if (got != ref) fail("strcmp-ne", n, so, d);
                mix(H_STRCMP, (uint64_t)(got + 1) + 4 * k);
                size_t lim = rnd() % (n + 2);
                ref = ref_strcmp((unsigned char *)a, (unsigned char *)b, lim);
                got = sgn(strncmp(a, b, lim));
                if (got != ref) fail("strncmp-ne", n, so, (int)lim);
                mix(H_STRNCMP, (uint64_t)(got + 1) + 4 * lim);
                /* b shorter than a */
                B[d + k] = 0;
                got = sgn(strcmp(a, b));
                if (got != 1) fail("strcmp-short", n, so, d);
                mix(H_STRCMP, (uint64_t)(got + 1));
            }

            /* strchr / strrchr: search for a byte present (maybe several times) and absent */
            make_str(A + so, n);
            {
                int ch = n ? A[so + rnd() % n] : 'q';
                char *p = strchr(a, ch), *q = strrchr(a, ch);
                char *rp = NULL, *rq = NULL;
                for (size_t i = 0; i < n; i++)
                    if ((unsigned char)a[i] == ch) { if (!rp) rp = a + i; rq = a + i; }
                if (p != rp) fail("strchr", n, so, ch);
                if (q != rq) fail("strrchr", n, so, ch);
                mix(H_STRCHR, p ? (uint64_t)(p - a) : 999);
                mix(H_STRRCHR, q ? (uint64_t)(q - a) : 999);
                if (strchr(a, 0) != a + n) fail("strchr-nul", n, so, 0);
                if (strrchr(a, 0) != a + n) fail("strrchr-nul", n, so, 0);
            }

            /* strcpy / strcat */
            make_str(A + so, n);
            memset(B, 0x55, BUFSZ);
            if (strcpy(b, a) != b || memcmp(b, a, n + 1) != 0 || B[d + n + 1] != 0x55)
                fail("strcpy", n, so, d);
            mixbuf(H_STRCPY, B, (size_t)d + n + 2);
            if (n + n / 3 + 1 + d < BUFSZ) {
                size_t m = n / 3;
                memset(R, 0, BUFSZ);
                fill_random(R, m, 1);
                if (strcat(b, (char *)R) != b || strlen(b) != n + m ||
                    memcmp(b + n, R, m + 1) != 0)
                    fail("strcat", n, so, d);
                mixbuf(H_STRCAT, B, (size_t)d + n + m + 2);
            }
        }
    }
}

static void test_strstr(void)
{
    /* small alphabet so needles are found in interesting places */
    for (int iter = 0; iter < 3000; iter++) {
        char hay[200], nee[12];
        int hn = (int)(rnd() % 190), nn = (int)(rnd() % 10);
        int alpha = 2 + (int)(rnd() % 3);
        for (int i = 0; i < hn; i++) hay[i] = (char)('a' + rnd() % alpha);
        hay[hn] = 0;
        for (int i = 0; i < nn; i++) nee[i] = (char)('a' + rnd() % alpha);
        nee[nn] = 0;
        if ((iter & 3) == 0 && hn > nn) {
            int at = (int)(rnd() % (hn - nn + 1));
            memcpy(hay + at, nee, nn);
        }
        char *p = strstr(hay, nee), *ref = NULL;
        for (int i = 0; i + nn <= hn; i++)
            if (memcmp(hay + i, nee, nn) == 0) { ref = hay + i; break; }
        if (p != ref) fail("strstr", (size_t)hn, nn, iter);
        mix(H_STRSTR, p ? (uint64_t)(p - hay) : 999);
    }
    /* long needle (glibc switches to two-way algorithm) */
    {
        static char hay[4096], nee[300];
        for (int i = 0; i < 4095; i++) hay[i] = (char)('a' + (i % 1000 == 999));
        hay[4095] = 0;
        memset(nee, 'a', 299);
        nee[299] = 0;
        nee[150] = 'b';
        char *p = strstr(hay, nee);
        mix(H_STRSTR, p ? (uint64_t)(p - hay) : 999);
        printf("strstr long needle: %ld\n", p ? (long)(p - hay) : -1L);
    }
}

static void test_strtok(void)
{
    static const char *inputs[] = { "hello world  foo", ",,a,b;;c,", "", ";;;", "single",
                                    "  leading and trailing  ", "x=1;y=22 ,z=333" };
    for (unsigned i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        char buf[64];
        strcpy(buf, inputs[i]);
        printf("strtok \"%s\":", inputs[i]);
        int cnt = 0;
        for (char *t = strtok(buf, " ,;="); t; t = strtok(NULL, " ,;=")) {
            printf(" [%s]", t);
            mix(H_STRTOK, strlen(t) * 131 + (unsigned char)t[0]);
            cnt++;
        }
        printf(" (%d)\n", cnt);
        mix(H_STRTOK, (uint64_t)cnt);
    }
    /* strtok_r with nested tokenisation */
    char line[] = "a=1,b=2,c=3";
    char *s1, *s2;
    printf("strtok_r:");
    for (char *kv = strtok_r(line, ",", &s1); kv; kv = strtok_r(NULL, ",", &s1)) {
        char *k = strtok_r(kv, "=", &s2), *v = strtok_r(NULL, "=", &s2);
        printf(" %s->%s", k, v);
        mix(H_STRTOK, (unsigned char)k[0] * 256u + (unsigned char)v[0]);
    }
    printf("\n");
}

static void test_snprintf(void)
{
    char buf[512];
    for (int iter = 0; iter < 400; iter++) {
        int v = (int)rnd() - (int)(rnd() >> 1);
        unsigned long long u = ((unsigned long long)rnd() << 32) | rnd();
        char s[40];
        int sl = (int)(rnd() % 30);
        for (int i = 0; i < sl; i++) s[i] = (char)('A' + rnd() % 26);
        s[sl] = 0;
        size_t lim = rnd() % 120;
        memset(buf, '#', sizeof buf);
        int r = snprintf(buf, lim, "[%d|%5d|%-6d|%+d|%x|%08X|%llu|%llo|%s|%.3s|%10s|%-8s|%c|%%|%p]",
                         v, v % 1000, v % 77, v, (unsigned)v, (unsigned)v, u, u, s, s, s, s,
                         'a' + iter % 26, (void *)(uintptr_t)((u & 0xffffffff) | 0x1000));
        char full[512];
        int r2 = snprintf(full, sizeof full, "[%d|%5d|%-6d|%+d|%x|%08X|%llu|%llo|%s|%.3s|%10s|%-8s|%c|%%|%p]",
                          v, v % 1000, v % 77, v, (unsigned)v, (unsigned)v, u, u, s, s, s, s,
                          'a' + iter % 26, (void *)(uintptr_t)((u & 0xffffffff) | 0x1000));
        if (r != r2 || (size_t)r2 != strlen(full)) fail("snprintf-ret", lim, r, r2);
        if (lim > 0) {
            size_t w = (size_t)r2 < lim - 1 ? (size_t)r2 : lim - 1;
            if (memcmp(buf, full, w) != 0 || buf[w] != 0 || buf[w + 1] != '#')
                fail("snprintf-trunc", lim, r, (int)w);
        } else if (buf[0] != '#') {
            fail("snprintf-zero", lim, r, 0);
        }
        mixbuf(H_SNPRINTF, (unsigned char *)full, (size_t)r2);
        mix(H_SNPRINTF, (uint64_t)r);
        if (iter < 3) printf("snprintf sample: %s\n", full);
    }
}

/* strings/buffers ending exactly at the end of an accessible page */
static void test_page_edge(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    unsigned char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { fail("mmap", 0, 0, 0); return; }
    if (mprotect(m + pg, pg, PROT_NONE) != 0) { fail("mprotect", 0, 0, 0); return; }
    unsigned char *end = m + pg;
    for (size_t n = 0; n < 200; n++) {
        unsigned char *s = end - n - 1;
        fill_random(s, n, 1);
        s[n] = 0;
        size_t l = strlen((char *)s);
        if (l != n) fail("page-strlen", n, 0, 0);
        char *c = strchr((char *)s, 0x100 - 1);  /* probably absent */
        char *rc = NULL;
        for (size_t i = 0; i < n; i++) if (s[i] == 0xff) { rc = (char *)s + i; break; }
        if (c != rc) fail("page-strchr", n, 0, 0);
        if (strrchr((char *)s, 'z') != memrchr(s, 'z', n)) fail("page-strrchr", n, 0, 0);
        /* memchr/memcmp exactly up to the boundary */
        if (memchr(end - n, 0x100 + 7, n) != memchr(end - n, 7, n)) fail("page-memchr", n, 0, 0);
        unsigned char *q = m + 64;
        memcpy(q, end - n, n);
        if (memcmp(q, end - n, n) != 0) fail("page-memcmp", n, 0, 0);
        if (strcmp((char *)s, (char *)s) != 0) fail("page-strcmp", n, 0, 0);
        if (strncmp((char *)s, (char *)s, n + 100) != 0) fail("page-strncmp", n, 0, 0);
        char tmp[256];
        strcpy(tmp, (char *)s);
        if (strlen(tmp) != n) fail("page-strcpy", n, 0, 0);
        mix(H_PAGE, l + (c ? (uint64_t)(c - (char *)s) : 999) * 1000);
    }
    munmap(m, 2 * pg);
}

int main(void)
{
    test_mem();
    test_str();
    test_strstr();
    test_strtok();
    test_snprintf();
    test_page_edge();
    uint64_t total = 0;
    for (int i = 0; i < NH; i++) {
        printf("%-9s %016llx\n", hnames[i], (unsigned long long)h[i]);
        total = total * 1000003 + h[i];
    }
    printf("checksum  %016llx\n", (unsigned long long)total);
    printf("failures  %ld\n", failures);
    return failures ? 1 : 0;
}
