// itimer: setitimer(ITIMER_REAL) with a 2 ms interval; the SIGALRM handler
// counts ticks and records the main loop's iteration number at each tick.
// The main loop computes until 100 ticks have arrived (about 200 ms of wall
// time, however slow the CPU is) and then prints the tick count, the
// recorded iteration numbers and a checksum of the computation.
// Output is nondeterministic (signal timing); a replay must reproduce it.
// Exit 0; exit 1 if the ticks stop arriving (10 s wall-clock safety limit).
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define TARGET_TICKS 100
#define MAX_RECORD 1000

static volatile uint64_t iteration;
static volatile int ticks;
static uint64_t seen[MAX_RECORD];

static void on_alarm(int sig)
{
    (void)sig;
    int t = ticks;
    if (t < MAX_RECORD) seen[t] = iteration;
    ticks = t + 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGALRM, &sa, NULL) != 0) { perror("sigaction"); return 1; }

    struct itimerval it = { { 0, 2000 }, { 0, 2000 } };
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) { perror("setitimer"); return 1; }

    double start = now();
    uint64_t x = 88172645463325252ULL, acc = 0;
    int timed_out = 0;
    while (ticks < TARGET_TICKS) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc += x >> 40;
        iteration = iteration + 1;
        if ((iteration & 0xfffff) == 0 && now() - start > 10.0) { timed_out = 1; break; }
    }
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    setitimer(ITIMER_REAL, &off, NULL);

    int n = ticks;
    printf("ticks %d\n", n);
    printf("iterations %llu\n", (unsigned long long)iteration);
    printf("checksum %016llx\n", (unsigned long long)acc);
    printf("seen:");
    for (int i = 0; i < n && i < MAX_RECORD; i++) printf(" %llu", (unsigned long long)seen[i]);
    printf("\n");
    int monotone = 1;
    for (int i = 1; i < n && i < MAX_RECORD; i++) if (seen[i] < seen[i - 1]) monotone = 0;
    printf("iteration numbers non-decreasing: %s\n", monotone ? "yes" : "NO");
    if (timed_out) printf("timed out waiting for SIGALRM\n");
    return timed_out || !monotone ? 1 : 0;
}
