// POSIX timer (timer_create with SIGEV_SIGNAL, 2 ms period) interrupting a compute loop.
// Prints how many ticks arrived and at which loop iterations: different from run to run, identical on replay.
// LDFLAGS: -lrt
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TICKS 50
static volatile long iter;
static volatile int ticks;
static long seen[TICKS];

static void on_tick(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    if (ticks < TICKS) seen[ticks] = iter;
    ticks++;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGRTMIN;
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0) { perror("timer_create"); return 1; }
    struct itimerspec its = { { 0, 2000000 }, { 0, 2000000 } };
    if (timer_settime(t, 0, &its, NULL) != 0) { perror("timer_settime"); return 1; }
    unsigned long h = 1469598103934665603UL;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (ticks < TICKS) {
        h = (h ^ (unsigned long)iter) * 1099511628211UL;
        iter++;
        if ((iter & 0xFFFFF) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - start.tv_sec > 20) { printf("timer never fired enough\n"); return 1; }
        }
    }
    struct itimerspec off = { { 0, 0 }, { 0, 0 } };
    timer_settime(t, 0, &off, NULL);
    timer_delete(t);
    printf("ticks %d, hash %016lx\nseen:", ticks, h);
    for (int i = 0; i < TICKS; i++) printf(" %ld", seen[i]);
    printf("\n");
    return 0;
}
