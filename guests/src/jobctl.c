// jobctl: zombies in /proc and job control between processes, as a shell without a terminal uses them.
// A child that ended shows state Z in /proc/PID/stat and "Z (zombie)" in /proc/PID/status until it is reaped;
// SIGSTOP/SIGTSTP stop a child (wait with WUNTRACED / waitid with WSTOPPED report it, /proc says T, the parent
// gets SIGCHLD with CLD_STOPPED unless SA_NOCLDSTOP), SIGCONT continues it (WCONTINUED, CLD_CONTINUED), a read
// the child was blocked in goes on after it is continued, SIGKILL ends a stopped child, a caught SIGTSTP does
// not stop. Deterministic output; exit 1 on an unexpected result.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
static void check(int ok, const char *what) { printf("%s: %s\n", what, ok ? "ok" : "WRONG"); if (!ok) failures++; }

static volatile sig_atomic_t chld_count, chld_code;
static void on_chld(int s, siginfo_t *si, void *u) { (void)s; (void)u; chld_count++; chld_code = si->si_code; }

static void chld_handler(int nocldstop)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | (nocldstop ? SA_NOCLDSTOP : 0);
    sigaction(SIGCHLD, &sa, NULL);
}

/* the state letter of /proc/PID/stat ('?' when it cannot be read) and the ppid field */
static char proc_state(pid_t pid, int *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return '?';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return '?';
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return '?';
    char st;
    int pp;
    if (sscanf(p + 2, "%c %d", &st, &pp) != 2) return '?';
    if (ppid) *ppid = pp;
    return st;
}

static int status_says(pid_t pid, const char *line)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    return strstr(buf, line) != NULL;
}

/* waits until the child sleeps (it is blocked in pause or read) */
static void until_sleeping(pid_t c)
{
    for (int i = 0; i < 2000 && proc_state(c, NULL) != 'S'; i++) usleep(1000);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);

    /* a zombie */
    pid_t z = fork();
    if (z == 0) _exit(3);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, z, &si, WEXITED | WNOWAIT) == 0 && si.si_pid == z && si.si_status == 3, "waitid WNOWAIT saw the exit");
    int ppid = 0;
    check(proc_state(z, &ppid) == 'Z', "/proc/PID/stat of a zombie says Z");
    check(ppid == getpid(), "the zombie's ppid is its parent");
    check(status_says(z, "State:\tZ (zombie)"), "/proc/PID/status of a zombie says Z (zombie)");
    int st;
    check(waitpid(z, &st, 0) == z && WIFEXITED(st) && WEXITSTATUS(st) == 3, "reaped with its status");
    check(proc_state(z, NULL) == '?', "/proc/PID of a reaped child is gone");

    /* SIGSTOP, SIGCONT, waitpid WUNTRACED/WCONTINUED, SIGCHLD codes */
    chld_handler(0);
    pid_t c = fork();
    if (c == 0) { for (;;) pause(); }
    until_sleeping(c);
    chld_count = 0;
    kill(c, SIGSTOP);
    check(waitpid(c, &st, WUNTRACED) == c && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP, "waitpid WUNTRACED: stopped by SIGSTOP");
    check(proc_state(c, NULL) == 'T', "/proc/PID/stat of a stopped child says T");
    check(status_says(c, "State:\tT (stopped)"), "/proc/PID/status says T (stopped)");
    for (int i = 0; i < 1000 && chld_count == 0; i++) usleep(1000);
    check(chld_count == 1 && chld_code == CLD_STOPPED, "SIGCHLD with CLD_STOPPED");
    check(waitpid(c, &st, WUNTRACED | WNOHANG) == 0, "a stop is reported once");
    kill(c, SIGCONT);
    check(waitpid(c, &st, WCONTINUED) == c && WIFCONTINUED(st), "waitpid WCONTINUED: continued");
    for (int i = 0; i < 1000 && chld_count < 2; i++) usleep(1000);
    check(chld_count == 2 && chld_code == CLD_CONTINUED, "SIGCHLD with CLD_CONTINUED");
    until_sleeping(c);
    check(proc_state(c, NULL) == 'S', "the continued child sleeps in pause again");

    /* waitid WSTOPPED / WCONTINUED with SIGTSTP */
    kill(c, SIGTSTP);
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, c, &si, WSTOPPED) == 0 && si.si_code == CLD_STOPPED && si.si_status == SIGTSTP && si.si_pid == c,
          "waitid WSTOPPED: CLD_STOPPED by SIGTSTP");
    kill(c, SIGCONT);
    memset(&si, 0, sizeof si);
    check(waitid(P_PID, c, &si, WCONTINUED) == 0 && si.si_code == CLD_CONTINUED && si.si_status == SIGCONT,
          "waitid WCONTINUED: CLD_CONTINUED");

    /* SA_NOCLDSTOP: no SIGCHLD for a stop, wait still reports it; SIGKILL ends a stopped child */
    chld_handler(1);
    int before = chld_count;
    kill(c, SIGSTOP);
    check(waitpid(c, &st, WUNTRACED) == c && WIFSTOPPED(st), "stopped again");
    usleep(50000);
    check(chld_count == before, "SA_NOCLDSTOP: no SIGCHLD for the stop");
    kill(c, SIGKILL);
    check(waitpid(c, &st, 0) == c && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "SIGKILL ends a stopped child");

    /* a read goes on after a stop and a continue; a caught SIGTSTP does not stop */
    chld_handler(0);
    int p[2], q[2];
    if (pipe(p) || pipe(q)) return 1;
    pid_t r = fork();
    if (r == 0) {
        close(p[1]);
        close(q[0]);
        char b[16];
        ssize_t n;
        while ((n = read(p[0], b, sizeof b)) < 0 && errno == EINTR) { }
        if (write(q[1], n == 5 && memcmp(b, "hello", 5) == 0 ? "R" : "r", 1) != 1) _exit(2);
        _exit(0);
    }
    close(p[0]);
    close(q[1]);
    until_sleeping(r);
    kill(r, SIGSTOP);
    check(waitpid(r, &st, WUNTRACED) == r && WIFSTOPPED(st), "a reader stopped in its read");
    kill(r, SIGCONT);
    check(waitpid(r, &st, WCONTINUED) == r && WIFCONTINUED(st), "and continued");
    if (write(p[1], "hello", 5) != 5) return 1;
    char got = 0;
    check(read(q[0], &got, 1) == 1 && got == 'R', "its read went on and got the bytes");
    check(waitpid(r, &st, 0) == r && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the reader exited 0");

    pid_t h = fork();
    if (h == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_IGN;
        sigaction(SIGTSTP, &sa, NULL);
        for (;;) pause();
    }
    until_sleeping(h);
    kill(h, SIGTSTP);
    usleep(50000);
    check(waitpid(h, &st, WUNTRACED | WNOHANG) == 0, "an ignored SIGTSTP does not stop");
    kill(h, SIGTERM);
    check(waitpid(h, &st, 0) == h && WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "SIGTERM ends it");
    printf("failures: %d\n", failures);
    return failures != 0;
}
