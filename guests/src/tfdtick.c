// tfdtick: an event loop on epoll over a periodic timerfd, an eventfd another thread signals, and a listening
// socket nobody connects to; also holds an armed interval timer and a POSIX timer that never fire during the run.
// Usage: tfdtick LINES [STOPFILE [PERIOD_MS]]   (PERIOD_MS default 5)
// Each line: "tick N timer T event E left L": N the line, T the timer's expirations so far, E the eventfd's
// counter total so far, L whether timerfd_gettime reported a pending expiry. Stops after LINES lines or when
// STOPFILE exists. Its state (timerfd expiry, eventfd counter, epoll set, listener) is what a machine snapshot
// must carry; used by the snapshot tests.
// LDFLAGS: -pthread
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int efd;
static volatile int done;

static void die(const char *what) { perror(what); exit(1); }

static void *signaller(void *arg)
{
    (void)arg;
    for (uint64_t i = 1; !done; i++) {
        if (write(efd, &i, 8) != 8) die("eventfd write");
        struct timespec d = { 0, 3 * 1000000L };
        nanosleep(&d, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: tfdtick LINES [STOPFILE [PERIOD_MS]]\n"); return 2; }
    long lines = atol(argv[1]);
    const char *stop = argc > 2 ? argv[2] : NULL;
    long period = argc > 3 ? atol(argv[3]) : 5;
    setvbuf(stdout, NULL, _IONBF, 0);

    // an armed interval timer and a POSIX timer that will not fire while the guest runs
    struct itimerval it = { { 3600, 0 }, { 3600, 0 } };
    signal(SIGALRM, SIG_IGN);
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) die("setitimer");
    timer_t pt;
    struct sigevent sev = { .sigev_notify = SIGEV_NONE };
    if (timer_create(CLOCK_MONOTONIC, &sev, &pt) != 0) die("timer_create");
    struct itimerspec pts = { { 0, 0 }, { 7200, 0 } };
    if (timer_settime(pt, 0, &pts, NULL) != 0) die("timer_settime");

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    struct itimerspec ts = { { period / 1000, (period % 1000) * 1000000L }, { period / 1000, (period % 1000) * 1000000L } };
    if (timerfd_settime(tfd, 0, &ts, NULL) != 0) die("timerfd_settime");
    efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) die("eventfd");

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 8) != 0) die("listener");

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) != 0) die("epoll_ctl timerfd");
    ev.data.u64 = 2;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0) die("epoll_ctl eventfd");
    ev.data.u64 = 3;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) != 0) die("epoll_ctl listener");

    pthread_t th;
    if (pthread_create(&th, NULL, signaller, NULL) != 0) die("pthread_create");
    uint64_t timer_total = 0, event_total = 0;
    for (long n = 0; n < lines; ) {
        if (stop && access(stop, F_OK) == 0) break;
        struct epoll_event got[4];
        int k = epoll_wait(ep, got, 4, 1000);
        if (k < 0) die("epoll_wait");
        for (int i = 0; i < k; i++) {
            uint64_t v;
            if (got[i].data.u64 == 1) {
                if (read(tfd, &v, 8) != 8) die("timerfd read");
                timer_total += v;
                struct itimerspec cur;
                if (timerfd_gettime(tfd, &cur) != 0) die("timerfd_gettime");
                int left = cur.it_value.tv_sec != 0 || cur.it_value.tv_nsec != 0;
                printf("tick %ld timer %llu event %llu left %d\n", n++, (unsigned long long)timer_total, (unsigned long long)event_total, left);
            } else if (got[i].data.u64 == 2) {
                if (read(efd, &v, 8) == 8) event_total += v;
            } else {
                printf("unexpected connection\n");
            }
        }
    }
    done = 1;
    pthread_join(th, NULL);
    struct itimerval cur;
    getitimer(ITIMER_REAL, &cur);
    printf("done: timer %llu event %llu itimer %d\n", (unsigned long long)timer_total, (unsigned long long)event_total, cur.it_value.tv_sec > 0);
    return 0;
}
