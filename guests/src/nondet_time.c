// nondet_time: prints the current time from clock_gettime(CLOCK_REALTIME),
// clock_gettime(CLOCK_MONOTONIC), gettimeofday() and time().  Output differs
// run to run (record/replay test input).  Also sanity-checks that the clocks
// agree with each other; exit 1 if they do not.
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

int main(void)
{
    struct timespec rt, mono, mono2;
    struct timeval tv;
    int ok = 1;
    ok &= clock_gettime(CLOCK_REALTIME, &rt) == 0;
    ok &= clock_gettime(CLOCK_MONOTONIC, &mono) == 0;
    ok &= gettimeofday(&tv, NULL) == 0;
    time_t t = time(NULL);
    ok &= clock_gettime(CLOCK_MONOTONIC, &mono2) == 0;

    printf("realtime  %lld.%09ld\n", (long long)rt.tv_sec, rt.tv_nsec);
    printf("monotonic %lld.%09ld\n", (long long)mono.tv_sec, mono.tv_nsec);
    printf("timeofday %lld.%06ld\n", (long long)tv.tv_sec, (long)tv.tv_usec);
    printf("time      %lld\n", (long long)t);

    /* consistency: realtime <= gettimeofday <= time (to the second), monotonic non-decreasing */
    long long rt_us = (long long)rt.tv_sec * 1000000 + rt.tv_nsec / 1000;
    long long tv_us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
    if (tv_us < rt_us || tv_us - rt_us > 5000000) { printf("gettimeofday inconsistent with realtime\n"); ok = 0; }
    if ((long long)t < rt.tv_sec || (long long)t > tv.tv_sec + 5) { printf("time() inconsistent\n"); ok = 0; }
    if (mono2.tv_sec < mono.tv_sec || (mono2.tv_sec == mono.tv_sec && mono2.tv_nsec < mono.tv_nsec)) {
        printf("monotonic went backwards\n");
        ok = 0;
    }
    if (rt.tv_nsec < 0 || rt.tv_nsec >= 1000000000 || tv.tv_usec < 0 || tv.tv_usec >= 1000000) {
        printf("field out of range\n");
        ok = 0;
    }
    return ok ? 0 : 1;
}
