// alarmtick: only timers wake it. An interval timer (ITIMER_REAL, every PERIOD_MS) and a POSIX timer (CLOCK_MONOTONIC,
// SIGUSR1, every 3 x PERIOD_MS) post signals; the loop waits for them in sigsuspend and prints a line per SIGALRM:
// "alarm N usr1 M". Usage: alarmtick STOPFILE [PERIOD_MS]   (PERIOD_MS default 20); stops when STOPFILE exists.
// A replica that goes live without arming the timers again leaves it waiting forever: the replication tests' oracle
// for timers carried across a takeover.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, usr1s;

static void on_alarm(int sig) { (void)sig; alarms++; }
static void on_usr1(int sig) { (void)sig; usr1s++; }

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: alarmtick STOPFILE [PERIOD_MS]\n"); return 2; }
    const char *stop = argv[1];
    long period = argc > 2 ? atol(argv[2]) : 20;
    setvbuf(stdout, NULL, _IONBF, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t block, wait;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &wait); // `wait`: the mask before, with both unblocked

    struct itimerval it = { { period / 1000, (period % 1000) * 1000 }, { period / 1000, (period % 1000) * 1000 } };
    if (setitimer(ITIMER_REAL, &it, NULL) != 0) { perror("setitimer"); return 1; }
    timer_t pt;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = SIGUSR1;
    if (timer_create(CLOCK_MONOTONIC, &sev, &pt) != 0) { perror("timer_create"); return 1; }
    long p3 = 3 * period;
    struct itimerspec pts = { { p3 / 1000, (p3 % 1000) * 1000000L }, { p3 / 1000, (p3 % 1000) * 1000000L } };
    if (timer_settime(pt, 0, &pts, NULL) != 0) { perror("timer_settime"); return 1; }

    long printed = 0;
    while (access(stop, F_OK) != 0) {
        sigsuspend(&wait);
        while (printed < alarms) printf("alarm %ld usr1 %ld\n", printed++, (long)usr1s);
    }
    printf("done: %ld alarms, %ld usr1\n", printed, (long)usr1s);
    return 0;
}
