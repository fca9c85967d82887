// LDFLAGS: -pthread
// blockers: threads that block in host calls while others run. A reader thread blocks in read(2) on a host
// socket (socketpair) that a feeder thread fills slowly (nanosleep between messages); another reader blocks in
// poll(2) on a socket and an in-VM pipe together and is woken by the pipe; a sleeper thread sleeps to an absolute
// deadline (clock_nanosleep TIMER_ABSTIME); a third thread computes meanwhile. After the threads are joined,
// alarm(1) + pause() must still deliver SIGALRM to the main thread.
// With an argument "stdin": the main thread computes, prints "computed" and then reads stdin to its end while a
// thread reads a socket fed by another and prints what it got (the test feeds stdin only after that line).
// Output is deterministic; exit 1 on any failure.
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int sv[2];
static int pp[2];
static int sv2[2];
static volatile uint64_t compute_result;
static int reader_prints;

static char out_reader[512], out_mixed[128], out_sleeper[128];

static void fail(const char *what) { perror(what); exit(1); }

static void *feeder(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        struct timespec d = { 0, 20 * 1000 * 1000 };
        nanosleep(&d, NULL);
        char msg[32];
        int n = snprintf(msg, sizeof msg, "message %d;", i);
        if (write(sv[1], msg, n) != n) fail("feeder write");
    }
    close(sv[1]);
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    char buf[256];
    size_t total = 0;
    for (;;) {
        ssize_t n = read(sv[0], buf + total, sizeof buf - 1 - total);
        if (n < 0) fail("reader read");
        if (n == 0) break;
        total += n;
    }
    buf[total] = 0;
    snprintf(out_reader, sizeof out_reader, "reader got %zu bytes: %s\n", total, buf);
    if (reader_prints) fputs(out_reader, stdout); /* stdin mode: the test feeds stdin only after this line */
    return NULL;
}

static void *mixed(void *arg)
{
    (void)arg;
    struct pollfd p[2] = { { sv2[0], POLLIN, 0 }, { pp[0], POLLIN, 0 } };
    int r = poll(p, 2, -1);
    if (r != 1 || !(p[1].revents & POLLIN) || p[0].revents) { fprintf(stderr, "poll: %d %x %x\n", r, p[0].revents, p[1].revents); exit(1); }
    char c;
    if (read(pp[0], &c, 1) != 1) fail("pipe read");
    snprintf(out_mixed, sizeof out_mixed, "mixed poll woken by the pipe: %c\n", c);
    return NULL;
}

static void *sleeper(void *arg)
{
    (void)arg;
    struct timespec start, deadline, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    deadline = start;
    deadline.tv_nsec += 150 * 1000 * 1000;
    if (deadline.tv_nsec >= 1000000000) { deadline.tv_sec++; deadline.tv_nsec -= 1000000000; }
    int r;
    while ((r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL)) == EINTR) { }
    if (r != 0) { fprintf(stderr, "clock_nanosleep: %d\n", r); exit(1); }
    clock_gettime(CLOCK_MONOTONIC, &end);
    long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
    snprintf(out_sleeper, sizeof out_sleeper, "sleeper woke at its deadline: %s\n", ms >= 150 && ms < 5000 ? "yes" : "no");
    return NULL;
}

static uint64_t compute(int rounds)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < rounds; i++) { h ^= (uint64_t)i; h *= 1099511628211ULL; }
    return h;
}

static void *computer(void *arg)
{
    (void)arg;
    compute_result = compute(3000000);
    if (write(pp[1], "P", 1) != 1) fail("pipe write");
    return NULL;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int s) { (void)s; alarms++; }

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || socketpair(AF_UNIX, SOCK_STREAM, 0, sv2) || pipe(pp)) fail("setup");
    int with_stdin = argc > 1 && strcmp(argv[1], "stdin") == 0;
    reader_prints = with_stdin;
    pthread_t th[5];
    if (with_stdin) printf("computed %016llx\n", (unsigned long long)compute(2000000));
    if (pthread_create(&th[0], NULL, reader, NULL) || pthread_create(&th[1], NULL, feeder, NULL)) fail("create");
    if (with_stdin) {
        char buf[4096];
        size_t total = 0;
        ssize_t n;
        while ((n = read(0, buf, sizeof buf)) > 0) total += n;
        if (n < 0) fail("stdin");
        printf("stdin: %zu bytes\n", total);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        return 0;
    }
    if (pthread_create(&th[2], NULL, mixed, NULL) || pthread_create(&th[3], NULL, sleeper, NULL)
        || pthread_create(&th[4], NULL, computer, NULL)) fail("create");
    for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
    fputs(out_reader, stdout);
    fputs(out_mixed, stdout);
    fputs(out_sleeper, stdout);
    printf("computer: %016llx\n", (unsigned long long)compute_result);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
    pause();
    printf("alarm after join: %d\n", alarms);
    return alarms == 1 ? 0 : 1;
}
