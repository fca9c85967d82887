// ticker: prints numbered lines with a running checksum until a stop file appears, sleeping between lines.
// Usage: ticker STOPFILE [SLEEP_MS] [WORK]   (defaults: 20 ms, 20000 inner-loop iterations per line)
// Each line: "tick N acc HEX" — acc depends on all previous work and on the time read, so a replica that resumes
// with the wrong state prints a different checksum. The chaos drill's --cycles runs it: a guest that lives as long
// as the drill needs (the drill creates STOPFILE after its last cycle) and that mostly sleeps, so a standby that
// joins replays its log much faster than it was recorded. At most 10,000,000 lines.
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: ticker STOPFILE [SLEEP_MS] [WORK]\n"); return 2; }
    long sleep_ms = argc > 2 ? atol(argv[2]) : 20;
    long work = argc > 3 ? atol(argv[3]) : 20000;
    uint64_t acc = 0x9e3779b97f4a7c15ULL;
    setvbuf(stdout, NULL, _IONBF, 0);
    for (long i = 0; i < 10000000; i++) {
        if (access(argv[1], F_OK) == 0) break;
        for (long k = 0; k < work; k++) acc = (acc ^ (uint64_t)k) * 0x100000001b3ULL + (acc >> 29);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        acc ^= (uint64_t)ts.tv_nsec;
        printf("tick %ld acc %016llx\n", i, (unsigned long long)acc);
        struct timespec d = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };
        nanosleep(&d, NULL);
    }
    return 0;
}
