// clockreads: clock reads in the patterns servers make them (two reads around a short piece of work, as redis
// times each command with gettimeofday), and across what takes time: a sleep, a wait for another thread, a
// signal, a long computation. Prints facts that hold on any Linux (comparable with a native run):
//   - each clock read twice in a row never goes back (CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME and
//     gettimeofday compared with each other's order only where Linux orders them);
//   - a sleep of 20 ms between two reads shows at least 20 ms on MONOTONIC and on gettimeofday;
//   - a thread that waits 20 ms for another thread sees at least 20 ms;
//   - a read after an interval timer's signal, 20 ms after the read before, shows at least 20 ms.
//   clockreads values   also prints every value read (for comparing a recording with its replay, not natively).
// LDFLAGS: -pthread
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int show_values;
static int64_t values_digest = 1469598103;

static int64_t ns_of(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t us_tod(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec;
}

static void seen(int64_t v)
{
    values_digest = values_digest * 1099511628211LL + v;
    if (show_values) printf("value %lld\n", (long long)v);
}

static volatile uint64_t sink;
static void work(int n)
{
    for (int i = 0; i < n; i++) sink += (uint64_t)i * 2654435761u;
}

static void pairs(void)
{
    int back = 0;
    for (int i = 0; i < 200; i++) {
        int64_t a = us_tod();
        work(50);
        int64_t b = us_tod();
        int64_t m = ns_of(CLOCK_MONOTONIC);
        work(20);
        int64_t n = ns_of(CLOCK_MONOTONIC);
        int64_t o = ns_of(CLOCK_BOOTTIME);
        int64_t p = ns_of(CLOCK_BOOTTIME);
        int64_t q = ns_of(CLOCK_REALTIME);
        int64_t r = ns_of(CLOCK_REALTIME);
        seen(a); seen(b); seen(m); seen(n); seen(o); seen(p); seen(q); seen(r);
        if (b < a || n < m || p < o || r < q) back++;
    }
    printf("pairs: 200 rounds, %d went back\n", back);
}

static void across_sleep(void)
{
    int64_t a = ns_of(CLOCK_MONOTONIC), ta = us_tod();
    struct timespec d = { 0, 20000000 };
    nanosleep(&d, NULL);
    int64_t b = ns_of(CLOCK_MONOTONIC), tb = us_tod();
    seen(a); seen(b); seen(ta); seen(tb);
    printf("sleep 20 ms: monotonic %s, gettimeofday %s\n", b - a >= 20000000 ? "at least 20 ms" : "less",
           tb - ta >= 20000 ? "at least 20 ms" : "less");
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready;

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec d = { 0, 20000000 };
    nanosleep(&d, NULL);
    pthread_mutex_lock(&mu);
    ready = 1;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void across_thread_wait(void)
{
    pthread_t th;
    int64_t a = ns_of(CLOCK_MONOTONIC);
    pthread_create(&th, NULL, sleeper, NULL);
    pthread_mutex_lock(&mu);
    while (!ready) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    int64_t b = ns_of(CLOCK_MONOTONIC);
    pthread_join(th, NULL);
    seen(a); seen(b);
    printf("wait for a thread that sleeps 20 ms: %s\n", b - a >= 20000000 ? "at least 20 ms" : "less");
}

static volatile sig_atomic_t fired;
static void on_alarm(int sig) { (void)sig; fired = 1; }

static void across_signal(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    int64_t a = ns_of(CLOCK_MONOTONIC);
    struct itimerval it = { { 0, 0 }, { 0, 20000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    while (!fired) pause();
    int64_t b = ns_of(CLOCK_MONOTONIC);
    seen(a); seen(b);
    printf("read after a timer's signal 20 ms on: %s\n", b - a >= 20000000 ? "at least 20 ms" : "less");
}

int main(int argc, char **argv)
{
    show_values = argc > 1 && strcmp(argv[1], "values") == 0;
    pairs();
    across_sleep();
    across_thread_wait();
    across_signal();
    if (show_values) printf("digest %lld\n", (long long)values_digest);
    printf("done\n");
    return 0;
}
