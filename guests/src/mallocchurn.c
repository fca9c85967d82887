// mallocchurn: malloc/calloc/realloc/free/posix_memalign/aligned_alloc churn
// driven by a fixed LCG.  Every block is filled with a pattern derived from
// its tag and verified before free/realloc (full check for blocks <= 64 KiB,
// sampled check for bigger ones).  Sizes are mostly small, sometimes up to
// 32 KiB and occasionally up to 1 MiB (mmap-backed in both libcs).
// Usage: mallocchurn [ops]   (default 20000)
// Prints a checksum (independent of addresses); exit 1 on any corruption.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NSLOTS 1024
#define FULLCHECK_MAX 65536

static uint64_t lcg = 0xdeadbeefcafef00dULL;
static uint32_t rnd(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg >> 32);
}

struct slot { unsigned char *p; size_t n; uint32_t tag; };
static struct slot slots[NSLOTS];
static uint64_t sum;
static long failures;
static long counts[8];
static const char *count_names[8] = { "malloc", "calloc", "memalign", "realloc", "free", "realloc0", "bigalloc", "checkbytes" };

static void mix(uint64_t v)
{
    sum = (sum ^ v) * 0x100000001b3ULL;
    sum ^= sum >> 29;
}

static inline unsigned char pat(uint32_t tag, size_t i)
{
    return (unsigned char)(tag + (i * 0x9d) + (i >> 8) * 3);
}

static void fill(unsigned char *p, size_t n, uint32_t tag)
{
    unsigned char row[256];
    for (size_t i = 0; i < 256; i++) row[i] = pat(tag, i);
    /* pat depends on i>>8 too, so adjust each 256-byte row by +3 */
    size_t off = 0;
    while (off < n) {
        size_t k = n - off < 256 ? n - off : 256;
        memcpy(p + off, row, k);
        for (size_t i = 0; i < 256; i++) row[i] = (unsigned char)(row[i] + 3);
        off += k;
    }
}

static void fail(const char *what, size_t n, size_t at)
{
    if (failures < 20)
        printf("FAIL %s size=%zu at=%zu\n", what, n, at);
    failures++;
}

/* verify the first `n` bytes of a block filled with tag */
static void verify(const unsigned char *p, size_t n, uint32_t tag, const char *what)
{
    uint64_t s = 0;
    if (n <= FULLCHECK_MAX) {
        for (size_t i = 0; i < n; i++) {
            if (p[i] != pat(tag, i)) { fail(what, n, i); return; }
            s += p[i];
        }
        counts[7] += n;
    } else {
        for (size_t i = 0; i < 512; i++) {
            if (p[i] != pat(tag, i)) { fail(what, n, i); return; }
            if (p[n - 1 - i] != pat(tag, n - 1 - i)) { fail(what, n, n - 1 - i); return; }
            s += p[i] + p[n - 1 - i];
        }
        for (size_t i = 0; i < n; i += 509) {
            if (p[i] != pat(tag, i)) { fail(what, n, i); return; }
            s += p[i];
        }
        counts[7] += 1024 + n / 509;
    }
    mix(s);
}

static void verify_zero(const unsigned char *p, size_t n)
{
    size_t step = n <= FULLCHECK_MAX ? 1 : 251;
    for (size_t i = 0; i < n; i += step)
        if (p[i]) { fail("calloc-nonzero", n, i); return; }
    if (n && p[n - 1]) fail("calloc-nonzero-end", n, n - 1);
}

static size_t pick_size(void)
{
    uint32_t r = rnd();
    uint32_t k = r % 1000;
    if (k < 2) { counts[6]++; return 65536 + rnd() % (1u << 20); }  /* up to ~1 MiB */
    if (k < 80) return rnd() % 32768 + 1;
    if (k < 300) return rnd() % 4096 + 1;
    if (k < 310) return 0;
    return rnd() % 256 + 1;
}

int main(int argc, char **argv)
{
    long ops = argc > 1 ? atol(argv[1]) : 20000;
    uint32_t next_tag = 1;

    for (long op = 0; op < ops; op++) {
        struct slot *s = &slots[rnd() % NSLOTS];
        uint32_t r = rnd() % 100;
        if (!s->p) {
            size_t n = pick_size();
            uint32_t tag = next_tag++;
            unsigned char *p;
            if (r < 70) {
                p = malloc(n);
                counts[0]++;
            } else if (r < 85) {
                size_t cnt = (n % 7) + 1, each = n / cnt + 1;
                n = cnt * each;
                p = calloc(cnt, each);
                counts[1]++;
                if (p) verify_zero(p, n);
            } else {
                size_t align = (size_t)16 << (rnd() % 9);  /* 16 .. 4096 */
                void *q = NULL;
                if (r < 93) {
                    if (posix_memalign(&q, align, n) != 0) q = NULL;
                } else {
                    n = (n + align - 1) / align * align;  /* aligned_alloc wants a multiple */
                    if (n == 0) n = align;
                    q = aligned_alloc(align, n);
                }
                p = q;
                counts[2]++;
                if (p && ((uintptr_t)p & (align - 1))) fail("alignment", n, align);
                mix(align);
            }
            if (!p && n) { fail("alloc-null", n, 0); continue; }
            fill(p, n, tag);
            s->p = p; s->n = n; s->tag = tag;
            mix(n * 3 + 1);
        } else if (r < 60) {
            verify(s->p, s->n, s->tag, "before-free");
            free(s->p);
            counts[4]++;
            mix(s->n * 3 + 2);
            s->p = NULL;
        } else {
            size_t n = pick_size();
            if (n == 0) n = 1;  /* realloc(p, 0) semantics differ between libcs */
            unsigned char *p = realloc(s->p, n);
            counts[3]++;
            if (!p) { fail("realloc-null", n, 0); continue; }
            verify(p, n < s->n ? n : s->n, s->tag, "realloc-prefix");
            uint32_t tag = next_tag++;
            fill(p, n, tag);
            s->p = p; s->n = n; s->tag = tag;
            mix(n * 3);
        }
    }
    /* realloc(NULL, n) acts like malloc; free(NULL) is a no-op */
    {
        unsigned char *p = realloc(NULL, 100);
        counts[5]++;
        if (!p) fail("realloc-null-ptr", 100, 0);
        else { fill(p, 100, 7); verify(p, 100, 7, "realloc-null-ptr"); free(p); }
        free(NULL);
    }
    size_t live = 0, live_bytes = 0;
    for (int i = 0; i < NSLOTS; i++) {
        if (slots[i].p) {
            verify(slots[i].p, slots[i].n, slots[i].tag, "final");
            live++;
            live_bytes += slots[i].n;
            free(slots[i].p);
        }
    }
    for (int i = 0; i < 8; i++) printf("%-10s %ld\n", count_names[i], counts[i]);
    printf("live at end: %zu blocks, %zu bytes\n", live, live_bytes);
    printf("checksum %016llx\n", (unsigned long long)sum);
    printf("failures %ld\n", failures);
    return failures ? 1 : 0;
}
