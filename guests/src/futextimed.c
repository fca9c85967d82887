// futextimed: futex waits with a timeout wait for real time (they neither spin nor expire early) and only their
// own thread waits: a timed condition wait nobody signals times out after its deadline while another thread
// computes; one that is signalled returns at once; raw FUTEX_WAIT (relative) and FUTEX_WAIT_BITSET (absolute,
// CLOCK_REALTIME) time out after their time, and a word that differs gives EAGAIN.  Every line is deterministic.
// LDFLAGS: -pthread
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// the futex ABI (musl ships no linux/futex.h)
#define FUTEX_WAIT_PRIVATE (0 | 128)
#define FUTEX_WAIT_BITSET_PRIVATE (9 | 128)
#define FUTEX_CLOCK_REALTIME 256
#define FUTEX_BITSET_MATCH_ANY 0xffffffffu

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile int stop, ready;
static volatile unsigned long spins;

static long ms_since(const struct timespec *a)
{
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return (b.tv_sec - a->tv_sec) * 1000 + (b.tv_nsec - a->tv_nsec) / 1000000;
}

static void *compute(void *arg)
{
    while (!stop) spins++;
    return arg;
}

static void *signaller(void *arg)
{
    struct timespec d = { 0, 100 * 1000 * 1000 };
    nanosleep(&d, 0);
    pthread_mutex_lock(&mu);
    ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return arg;
}

static const char *name(int e) { return e == 0 ? "0" : e == ETIMEDOUT ? "ETIMEDOUT" : e == EAGAIN ? "EAGAIN" : strerror(e); }

int main(void)
{
    struct timespec t0, abs;
    pthread_t c, s;
    pthread_create(&c, 0, compute, 0);

    // nobody signals: the wait ends at its deadline, and the other thread ran meanwhile
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_nsec += 300 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) { abs.tv_sec++; abs.tv_nsec -= 1000000000; }
    pthread_mutex_lock(&mu);
    int r = pthread_cond_timedwait(&cv, &mu, &abs);
    pthread_mutex_unlock(&mu);
    long el = ms_since(&t0);
    stop = 1;
    pthread_join(c, 0);
    printf("cond timedwait unsignalled: %s, waited >= 290 ms: %s, other thread ran: %s\n", name(r), el >= 290 ? "yes" : "no", spins > 0 ? "yes" : "no");

    // signalled after 100 ms, long before its deadline of 20 s
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_sec += 20;
    pthread_create(&s, 0, signaller, 0);
    pthread_mutex_lock(&mu);
    r = 0;
    while (!ready && r == 0) r = pthread_cond_timedwait(&cv, &mu, &abs);
    pthread_mutex_unlock(&mu);
    el = ms_since(&t0);
    pthread_join(s, 0);
    printf("cond timedwait signalled: %s, ready %d, waited >= 90 ms: %s, returned before the deadline: %s\n", name(r), ready, el >= 90 ? "yes" : "no", el < 15000 ? "yes" : "no");

    // raw futex waits on a private word
    static int word = 7;
    struct timespec rel = { 0, 150 * 1000 * 1000 };
    long x = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 8, &rel, 0, 0);
    printf("FUTEX_WAIT on a word that differs: %s\n", x == 0 ? "0" : name(errno));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    x = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 7, &rel, 0, 0);
    el = ms_since(&t0);
    printf("FUTEX_WAIT 150 ms: %s, waited >= 140 ms: %s\n", x == 0 ? "0" : name(errno), el >= 140 ? "yes" : "no");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_REALTIME, &abs);
    abs.tv_nsec += 100 * 1000 * 1000;
    if (abs.tv_nsec >= 1000000000) { abs.tv_sec++; abs.tv_nsec -= 1000000000; }
    x = syscall(SYS_futex, &word, FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 7, &abs, 0, FUTEX_BITSET_MATCH_ANY);
    el = ms_since(&t0);
    printf("FUTEX_WAIT_BITSET absolute realtime 100 ms: %s, waited >= 90 ms: %s\n", x == 0 ? "0" : name(errno), el >= 90 ? "yes" : "no");
    return 0;
}
