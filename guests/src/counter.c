// counter: prints numbered lines with a running checksum, doing some work between them.
// Usage: counter LINES [WORK]   (WORK: inner-loop iterations per line, default 200000)
// Each line: "line N acc HEX t SECONDS" — acc depends on all previous work and on the time read,
// so a replica that resumes with the wrong state prints a different checksum. Used by the
// replication tests: the concatenated stdout of primary and backup must be exactly lines 0..LINES-1.
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>

int main(int argc, char **argv)
{
    long lines = argc > 1 ? atol(argv[1]) : 100;
    long work = argc > 2 ? atol(argv[2]) : 200000;
    uint64_t acc = 0x9e3779b97f4a7c15ULL;
    setvbuf(stdout, NULL, _IONBF, 0);
    for (long i = 0; i < lines; i++) {
        for (long k = 0; k < work; k++) acc = (acc ^ (uint64_t)k) * 0x100000001b3ULL + (acc >> 29);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        acc ^= (uint64_t)ts.tv_nsec;
        printf("line %ld acc %016llx\n", i, (unsigned long long)acc);
    }
    return 0;
}
