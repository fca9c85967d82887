// bench: CPU-bound benchmark.  Usage: bench [SCALE]  (default 150, about
// 0.2 s natively).  Each unit of SCALE runs an integer hash loop, a 48x48
// double matrix multiply and a sieve of Eratosthenes; work grows linearly with
// SCALE.  Prints a result checksum (deterministic for a given SCALE) and the
// per-kernel results; no timing is printed (time it from outside).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MN 48
#define SIEVE_N 200000

static uint64_t hash_loop(uint64_t seed, int iters)
{
    uint64_t h = seed, x = seed | 1;
    for (int i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        h = (h ^ (x >> 3)) * 0x9e3779b97f4a7c15ULL;
        h = (h << 31) | (h >> 33);
        h += (uint64_t)i * (x & 0xff);
    }
    return h;
}

static double A[MN][MN], B[MN][MN], C[MN][MN];

static double matmul(int unit)
{
    for (int i = 0; i < MN; i++)
        for (int j = 0; j < MN; j++) {
            A[i][j] = (double)((i * 7 + j * 3 + unit) % 17) / 8.0 - 1.0;
            B[i][j] = (double)((i * 5 + j * 11 + unit * 3) % 13) / 6.0 - 1.0;
        }
    for (int i = 0; i < MN; i++)
        for (int j = 0; j < MN; j++) {
            double s = 0;
            for (int k = 0; k < MN; k++) s += A[i][k] * B[k][j];
            C[i][j] = s;
        }
    /* C = C * A again to make it a little longer */
    double tr = 0;
    for (int i = 0; i < MN; i++) {
        double s = 0;
        for (int k = 0; k < MN; k++) s += C[i][k] * A[k][i];
        tr += s;
    }
    return tr;
}

static unsigned char sieve_buf[SIEVE_N + 1];
static int sieve(int n)
{
    memset(sieve_buf, 1, (size_t)n + 1);
    sieve_buf[0] = sieve_buf[1] = 0;
    for (int i = 2; (long)i * i <= n; i++)
        if (sieve_buf[i])
            for (int j = i * i; j <= n; j += i) sieve_buf[j] = 0;
    int count = 0;
    for (int i = 0; i <= n; i++) count += sieve_buf[i];
    return count;
}

int main(int argc, char **argv)
{
    int scale = argc > 1 ? atoi(argv[1]) : 150;
    uint64_t hsum = 0, csum = 0;
    double trsum = 0;
    long primes = 0;
    for (int u = 0; u < scale; u++) {
        uint64_t h = hash_loop(0x1234567ULL + (uint64_t)u, 400000);
        double tr = matmul(u);
        int p = sieve(SIEVE_N - (u % 1000) * 100);
        hsum ^= h;
        trsum += tr;
        primes += p;
        uint64_t trbits;
        memcpy(&trbits, &tr, 8);
        csum = (csum ^ h ^ trbits ^ (uint64_t)p) * 0x100000001b3ULL;
    }
    printf("scale %d\n", scale);
    printf("hash   %016llx\n", (unsigned long long)hsum);
    printf("matmul %.6f\n", trsum);
    printf("primes %ld\n", primes);
    printf("checksum %016llx\n", (unsigned long long)csum);
    return 0;
}
