#define _GNU_SOURCE
// callmask: ppoll, pselect and epoll_pwait replace the thread's signal mask for the duration of the call.  With
// SIGUSR1 blocked, a SIGUSR1 sent by a child (before the call or while it waits) must end the call with EINTR,
// its handler must run under the call's mask (here: SIGUSR2 blocked), and afterwards the thread's own mask holds
// again.  A call that finds a descriptor ready returns it and leaves the signal pending; a call whose mask blocks
// a pending signal returns on its timeout without the handler.  Every line is deterministic.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int handled, usr2_blocked_in_handler;

static void on_usr(int sig)
{
    sigset_t cur;
    sigprocmask(SIG_BLOCK, 0, &cur);
    handled++;
    usr2_blocked_in_handler = sigismember(&cur, SIGUSR2);
    (void)sig;
}

// a child sends sig to this process, and is reaped (first: the signal is pending before the call; else: the
// child runs while the call waits, as the scheduler has it)
static pid_t send_from_child(int sig, int first)
{
    pid_t c = fork();
    if (c == 0) { kill(getppid(), sig); _exit(0); }
    if (first) waitpid(c, 0, 0);
    return c;
}

static void report(const char *what, int r, int err, pid_t child)
{
    if (child > 0) waitpid(child, 0, 0);
    sigset_t cur, pend;
    sigprocmask(SIG_BLOCK, 0, &cur);
    sigpending(&pend);
    printf("%s: r=%d %s handled=%d usr2-blocked-in-handler=%d after: usr1-blocked=%d usr2-blocked=%d usr1-pending=%d\n",
           what, r, r < 0 ? strerror(err) : "-", handled, usr2_blocked_in_handler,
           sigismember(&cur, SIGUSR1), sigismember(&cur, SIGUSR2), sigismember(&pend, SIGUSR1));
    fflush(stdout);
    handled = 0;
    usr2_blocked_in_handler = -1;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr;
    sigaction(SIGUSR1, &sa, 0);
    sigaction(SIGUSR2, &sa, 0);
    sigset_t own, callmask;
    sigemptyset(&own);
    sigaddset(&own, SIGUSR1);
    sigprocmask(SIG_SETMASK, &own, 0);
    sigemptyset(&callmask);
    sigaddset(&callmask, SIGUSR2); // the call's mask lets SIGUSR1 through and blocks SIGUSR2

    int p[2];
    if (pipe(p) != 0) return 1;
    struct pollfd pfd = { .fd = p[0], .events = POLLIN };
    fd_set rd;
    int ep = epoll_create1(0);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = p[0] }, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);

    for (int first = 1; first >= 0; first--) {
        pid_t c = send_from_child(SIGUSR1, first);
        int r = ppoll(&pfd, 1, 0, &callmask);
        report(first ? "ppoll, signal pending before" : "ppoll, signal while waiting", r, errno, c);

        c = send_from_child(SIGUSR1, first);
        FD_ZERO(&rd); FD_SET(p[0], &rd);
        r = pselect(p[0] + 1, &rd, 0, 0, 0, &callmask);
        report(first ? "pselect, signal pending before" : "pselect, signal while waiting", r, errno, c);

        c = send_from_child(SIGUSR1, first);
        r = epoll_pwait(ep, &out, 1, -1, &callmask);
        report(first ? "epoll_pwait, signal pending before" : "epoll_pwait, signal while waiting", r, errno, c);
    }

    // a descriptor is ready: the call returns it, the signal stays pending under the thread's own mask
    if (write(p[1], "x", 1) != 1) return 1;
    send_from_child(SIGUSR1, 1);
    int r = ppoll(&pfd, 1, 0, &callmask);
    report("ppoll, ready and signal pending", r, errno, 0);
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &unblock, 0);
    report("after unblocking", 0, 0, 0);
    sigprocmask(SIG_SETMASK, &own, 0);
    char b;
    if (read(p[0], &b, 1) != 1) return 1;

    // the call's mask blocks a signal the thread's own does not: the call times out, the signal is taken after it
    sigaddset(&own, SIGUSR2);
    sigprocmask(SIG_SETMASK, &own, 0);
    send_from_child(SIGUSR2, 1);
    struct timespec ts = { 0, 20 * 1000 * 1000 };
    r = ppoll(&pfd, 1, &ts, &callmask);
    report("ppoll, timeout with the signal blocked by the call", r, errno, 0);
    sigdelset(&own, SIGUSR2);
    sigprocmask(SIG_SETMASK, &own, 0);
    report("after unblocking SIGUSR2", 0, 0, 0);

    // no mask: the thread's own mask holds during the call (SIGUSR1 stays pending, the call times out)
    send_from_child(SIGUSR1, 1);
    r = ppoll(&pfd, 1, &ts, 0);
    report("ppoll without a mask", r, errno, 0);
    return 0;
}
