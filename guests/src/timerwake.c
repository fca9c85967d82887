// timerwake: a timer's signal interrupts a blocking call at the timer's expiry, before a peer process of the same
// program (a forked child that sleeps, then writes) could complete the call. Each case arms one kind of timer for
// 50 ms (alarm: 1 s), forks a child that writes one byte after 400 ms (alarm: 1,300 ms) and blocks until one of the
// two happens; Linux ends the call with EINTR at the timer's expiry (the handler has no SA_RESTART):
//   - setitimer(ITIMER_REAL) and a read of a pipe;
//   - timer_create(CLOCK_MONOTONIC, SIGEV_SIGNAL with SIGUSR1) and a recv on a socketpair;
//   - setitimer(ITIMER_REAL) and a nanosleep of 400 ms with no peer (EINTR with time left);
//   - alarm(1) and a poll of a pipe without a time-out;
//   - a timerfd in a poll beside a pipe: the poll ends with the timerfd readable and the pipe not.
// A case whose signal came before its call began (the handler had run already: a machine that took more than the
// timer's 50 ms from arming the timer to making the call, as a loaded VM can) did not test the expiry during the call:
// it is run again, up to 5 times in all (on stderr: a line for each such try). Prints one line per case and "done".
// Every case ends by itself at the latest when its child writes.
// LDFLAGS: -lrt
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void on_signal(int sig) { (void)sig; handled++; }

static void handle(int sig)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL); // no SA_RESTART: a blocking call ends with EINTR
}

static void pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// a child that writes one byte to fd after ms (a peer that would complete the parent's call)
static pid_t late_writer(int fd, int ms)
{
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        pause_ms(ms);
        if (write(fd, "x", 1) != 1) _exit(4);
        _exit(0);
    }
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) printf("child status %d\n", st);
}

static void itimer_ms(int ms)
{
    struct itimerval it = { { 0, 0 }, { ms / 1000, (ms % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

#define TRIES 5

// the call of a case begins: whether the timer's signal came before it (then the case is run again)
static int early(const char *what, int try)
{
    if (handled == 0) return 0;
    fprintf(stderr, "timerwake: %s: the signal came before the call (try %d)\n", what, try + 1);
    return try + 1 < TRIES;
}

static void result(const char *what, long r)
{
    if (r < 0) printf("%s: -1 %s, handler ran %d\n", what, strerror(errno), (int)handled);
    else printf("%s: %ld, handler ran %d\n", what, r, (int)handled);
    fflush(stdout);
}

// one case: a child writes one byte after `ms` to a pipe (or, with `socket`, a socketpair); `arm` arms the timer and
// `call` blocks on the reading end; `disarm` (if any) removes the timer
static void late_peer_case(const char *what, int socket, int ms, void (*arm)(void), long (*call)(int fd), void (*disarm)(void))
{
    for (int try = 0;; try++) {
        int p[2];
        if ((socket ? socketpair(AF_UNIX, SOCK_STREAM, 0, p) : pipe(p)) < 0) { perror("pipe"); exit(2); }
        pid_t pid = late_writer(p[1], ms);
        handled = 0;
        arm();
        int again = early(what, try);
        long r = again ? 0 : call(p[0]);
        if (!again) result(what, r);
        if (disarm) disarm();
        reap(pid);
        close(p[0]);
        close(p[1]);
        if (!again) return;
    }
}

static void itimer_50ms(void) { itimer_ms(50); }
static long read_one(int fd) { char b; return read(fd, &b, 1); }
static long recv_one(int fd) { char b; return recv(fd, &b, 1, 0); }
static long poll_in(int fd) { struct pollfd pf = { fd, POLLIN, 0 }; return poll(&pf, 1, -1); }
static void alarm_1s(void) { alarm(1); }

static timer_t posix_timer;

static void posix_timer_50ms(void)
{
    struct sigevent ev = { 0 };
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    if (timer_create(CLOCK_MONOTONIC, &ev, &posix_timer) < 0) { perror("timer_create"); exit(2); }
    struct itimerspec its = { { 0, 0 }, { 0, 50 * 1000000L } };
    timer_settime(posix_timer, 0, &its, NULL);
}

static void posix_timer_delete(void) { timer_delete(posix_timer); }

static void itimer_nanosleep(void)
{
    struct timespec ts = { 0, 400 * 1000000L }, rem = { 0, 0 };
    int r, e;
    for (int try = 0;; try++) {
        handled = 0;
        itimer_ms(50);
        if (early("setitimer ITIMER_REAL 50 ms, nanosleep 400 ms", try)) continue;
        r = nanosleep(&ts, &rem);
        e = errno;
        break;
    }
    long left_ms = rem.tv_sec * 1000 + rem.tv_nsec / 1000000;
    if (r < 0)
        printf("setitimer ITIMER_REAL 50 ms, nanosleep 400 ms: -1 %s, time left %s, handler ran %d\n", strerror(e),
               left_ms > 0 && left_ms < 400 ? "between 0 and 400 ms" : "wrong", (int)handled);
    else printf("setitimer ITIMER_REAL 50 ms, nanosleep 400 ms: %d, handler ran %d\n", r, (int)handled);
    fflush(stdout);
}

static void timerfd_poll(void)
{
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); exit(2); }
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    if (tfd < 0) { perror("timerfd_create"); exit(2); }
    pid_t pid = late_writer(p[1], 400);
    struct itimerspec its = { { 0, 0 }, { 0, 50 * 1000000L } };
    timerfd_settime(tfd, 0, &its, NULL);
    struct pollfd pf[2] = { { tfd, POLLIN, 0 }, { p[0], POLLIN, 0 } };
    int r = poll(pf, 2, -1);
    printf("timerfd 50 ms and a pipe written after 400 ms, poll: %d, timerfd %s, pipe %s\n", r,
           (pf[0].revents & POLLIN) ? "readable" : "not readable", (pf[1].revents & POLLIN) ? "readable" : "not readable");
    fflush(stdout);
    reap(pid);
    close(tfd);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    handle(SIGALRM);
    handle(SIGUSR1);
    late_peer_case("setitimer ITIMER_REAL 50 ms, read of a pipe written after 400 ms", 0, 400, itimer_50ms, read_one, NULL);
    late_peer_case("timer_create SIGUSR1 50 ms, recv of a socketpair written after 400 ms", 1, 400, posix_timer_50ms,
                   recv_one, posix_timer_delete);
    itimer_nanosleep();
    late_peer_case("alarm 1 s, poll of a pipe written after 1300 ms", 0, 1300, alarm_1s, poll_in, NULL);
    timerfd_poll();
    printf("done\n");
    return 0;
}
