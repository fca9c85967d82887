// memtouch: touches MIB mebibytes of memory, then prints numbered lines with a checksum of that memory until a stop
// file appears, rewriting a few pages between lines (so a snapshot's copy-on-write has stores to absorb).
// Usage: memtouch STOPFILE MIB [SLEEP_MS [LINES]]   (defaults: 20 ms, 10,000,000 lines)
// Each line: "mem N sum HEX". A replica that resumes with a page missing or wrong prints a different sum. Used by
// the snapshot tests and the snapshot benchmark (docs/PERFORMANCE-replication.md). At most LINES lines.
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: memtouch STOPFILE MIB [SLEEP_MS [LINES]]\n"); return 2; }
    size_t bytes = (size_t)atol(argv[2]) << 20;
    long sleep_ms = argc > 3 ? atol(argv[3]) : 20;
    long lines = argc > 4 ? atol(argv[4]) : 10000000;
    uint64_t *mem = malloc(bytes);
    if (!mem) { fprintf(stderr, "memtouch: cannot allocate %s MiB\n", argv[2]); return 1; }
    size_t words = bytes / 8, page_words = 4096 / 8, pages = words / page_words;
    for (size_t i = 0; i < words; i++) mem[i] = i * 0x9e3779b97f4a7c15ULL;
    setvbuf(stdout, NULL, _IONBF, 0);
    uint64_t x = 88172645463325252ULL;
    for (long n = 0; n < lines; n++) {
        if (access(argv[1], F_OK) == 0) break;
        for (int k = 0; k < 16 && pages > 0; k++) {      // rewrite 16 pseudo-random pages
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            size_t p = (size_t)(x % pages);
            for (size_t w = 0; w < page_words; w += 64) mem[p * page_words + w] += x;
        }
        uint64_t sum = 0;
        for (size_t p = 0; p < pages; p += 1 + pages / 64) sum = sum * 31 + mem[p * page_words + (n % page_words)];
        printf("mem %ld sum %016llx\n", n, (unsigned long long)sum);
        struct timespec d = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    return 0;
}
