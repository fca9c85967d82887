// qsort: qsort of ints, doubles, strings and structs (many sizes, including
// 0, 1, sorted, reversed, all-equal inputs), bsearch for present and absent
// keys.  The comparators are total orders, so the sorted output is the same
// whatever algorithm the libc uses (glibc: mergesort/introsort, musl:
// smoothsort).  Prints a checksum; exit 1 if a result is wrong.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t lcg = 7;
static uint32_t rnd(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(lcg >> 32);
}

static uint64_t sum = 0x84222325cbf29ce4ULL;
static long failures, ncompares;
static void mix(uint64_t v)
{
    sum = (sum ^ v) * 0x100000001b3ULL;
    sum ^= sum >> 27;
}
static void fail(const char *what, long a, long b)
{
    if (failures < 20) printf("FAIL %s %ld %ld\n", what, a, b);
    failures++;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    ncompares++;
    return (x > y) - (x < y);
}
static int cmp_int_desc(const void *a, const void *b) { return cmp_int(b, a); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    ncompares++;
    if (x < y) return -1;
    if (x > y) return 1;
    /* equal values: order -0.0 before +0.0 so the order is total */
    int sx = __builtin_signbit(x) != 0, sy = __builtin_signbit(y) != 0;
    return sy - sx;
}

static int cmp_str(const void *a, const void *b)
{
    ncompares++;
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct rec { uint32_t key; uint32_t id; char name[12]; };
static int cmp_rec(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    ncompares++;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void test_ints(int n, int kind)
{
    int *v = malloc(sizeof(int) * (n ? n : 1));
    uint64_t before = 0, after = 0;
    for (int i = 0; i < n; i++) {
        switch (kind) {
        case 0: v[i] = (int)rnd(); break;                /* random incl. negatives */
        case 1: v[i] = i; break;                         /* sorted */
        case 2: v[i] = n - i; break;                     /* reversed */
        case 3: v[i] = 5; break;                         /* all equal */
        case 4: v[i] = (int)(rnd() % 10); break;         /* many duplicates */
        default: v[i] = (i & 1) ? i : n - i; break;      /* organ pipe-ish */
        }
        before += (uint64_t)(uint32_t)v[i] * 2654435761u;
    }
    qsort(v, (size_t)n, sizeof(int), cmp_int);
    for (int i = 0; i < n; i++) {
        after += (uint64_t)(uint32_t)v[i] * 2654435761u;
        if (i && v[i - 1] > v[i]) { fail("int order", n, i); break; }
        mix((uint32_t)v[i]);
    }
    if (before != after) fail("int permutation", n, kind);

    /* bsearch every 7th element, plus values that are absent */
    for (int i = 0; i < n; i += 7) {
        int *p = bsearch(&v[i], v, (size_t)n, sizeof(int), cmp_int);
        if (!p || *p != v[i]) fail("bsearch present", n, i);
    }
    for (int t = 0; t < 20; t++) {
        int key = (int)rnd();
        int *p = bsearch(&key, v, (size_t)n, sizeof(int), cmp_int);
        int present = 0;
        for (int i = 0; i < n; i++) if (v[i] == key) { present = 1; break; }
        if ((p != NULL) != present || (p && *p != key)) fail("bsearch absent", n, key);
        mix((uint64_t)present);
    }
    /* and back to descending order */
    qsort(v, (size_t)n, sizeof(int), cmp_int_desc);
    for (int i = 1; i < n; i++)
        if (v[i - 1] < v[i]) { fail("int desc order", n, i); break; }
    free(v);
}

static void test_doubles(int n)
{
    double *v = malloc(sizeof(double) * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        uint32_t r = rnd();
        switch (r % 8) {
        case 0: v[i] = 0.0; break;
        case 1: v[i] = -0.0; break;
        case 2: v[i] = (double)(int)(rnd() % 100) - 50; break;
        case 3: v[i] = 1.0 / ((double)(rnd() % 1000) + 0.5); break;
        case 4: v[i] = __builtin_inf() * ((r & 16) ? 1 : -1); break;
        default: v[i] = ((double)rnd() - 2147483648.0) * 1e-3; break;
        }
    }
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    for (int i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &v[i], 8);
        mix(bits);
        if (i && cmp_double(&v[i - 1], &v[i]) > 0) { fail("double order", n, i); break; }
    }
    if (n > 0) {
        double key = v[n / 2];
        double *p = bsearch(&key, v, (size_t)n, sizeof(double), cmp_double);
        if (!p || cmp_double(p, &key) != 0) fail("bsearch double", n, 0);
    }
    if (n == 2000)
        printf("doubles: min=%g max=%g median=%.6f\n", v[0], v[n - 1], v[n / 2]);
    free(v);
}

static void test_strings(int n)
{
    char **v = malloc(sizeof(char *) * (n ? n : 1));
    char *pool = malloc((size_t)n * 16 + 1);
    for (int i = 0; i < n; i++) {
        char *s = pool + (size_t)i * 16;
        int len = (int)(rnd() % 12);
        for (int j = 0; j < len; j++) s[j] = (char)('a' + rnd() % 4);  /* lots of shared prefixes */
        s[len] = 0;
        v[i] = s;
    }
    qsort(v, (size_t)n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        for (const char *c = v[i]; *c; c++) mix((unsigned char)*c);
        mix(0x100);
        if (i && strcmp(v[i - 1], v[i]) > 0) { fail("string order", n, i); break; }
    }
    for (int i = 0; i < n; i += 13) {
        char **p = bsearch(&v[i], v, (size_t)n, sizeof(char *), cmp_str);
        if (!p || strcmp(*p, v[i]) != 0) fail("bsearch string", n, i);
    }
    if (n == 3000) {
        printf("strings: first=\"%s\" last=\"%s\" middle:", v[0], v[n - 1]);
        for (int i = n / 2; i < n / 2 + 5; i++) printf(" \"%s\"", v[i]);
        printf("\n");
    }
    free(v);
    free(pool);
}

static void test_records(int n)
{
    struct rec *v = malloc(sizeof(struct rec) * (n ? n : 1));
    for (int i = 0; i < n; i++) {
        v[i].key = rnd() % 50;
        v[i].id = (uint32_t)i;
        snprintf(v[i].name, sizeof v[i].name, "r%u", (unsigned)(rnd() % 100000));
    }
    qsort(v, (size_t)n, sizeof(struct rec), cmp_rec);
    for (int i = 0; i < n; i++) {
        mix(v[i].key * 100000ULL + v[i].id);
        mix(strlen(v[i].name));
        if (i && cmp_rec(&v[i - 1], &v[i]) >= 0) { fail("record order", n, i); break; }
    }
    if (n == 1000)
        printf("records: first=(%u,%u,%s) last=(%u,%u,%s)\n", v[0].key, v[0].id, v[0].name,
               v[n - 1].key, v[n - 1].id, v[n - 1].name);
    free(v);
}

int main(void)
{
    for (int n = 0; n <= 64; n++)
        for (int kind = 0; kind < 6; kind++) test_ints(n, kind);
    for (int kind = 0; kind < 6; kind++) test_ints(8000, kind);
    for (int n = 0; n < 40; n++) test_doubles(n);
    test_doubles(2000);
    for (int n = 0; n < 30; n++) test_strings(n);
    test_strings(3000);
    test_records(1000);
    test_records(17);
    printf("checksum %016llx\n", (unsigned long long)sum);
    printf("failures %ld\n", failures);
    /* the number of comparisons depends on the libc's algorithm: not printed */
    (void)ncompares;
    return failures ? 1 : 0;
}
