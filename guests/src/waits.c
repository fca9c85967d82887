// LDFLAGS: -pthread
// waits: how blocked calls end and how processes are waited for, as Linux does it. A timer signal interrupts a
// blocked read (host socket and pipe) without SA_RESTART (EINTR) and with it (the read goes on), a nanosleep
// (EINTR, time left) and a poll (EINTR even with SA_RESTART); waitid (P_PID, P_PGID, P_ALL, WNOHANG, WNOWAIT,
// the siginfo of an exit and of a kill); a child's rusage; PR_SET_PDEATHSIG; a pipe write larger than the pipe
// (blocking: all of it; non-blocking: what fits); /proc/PID of another process. Deterministic output; exit 1 on
// an unexpected result.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;
static void on_alarm(int s) { (void)s; alarms++; }
static int failures;
static void check(int ok, const char *what) { printf("%s: %s\n", what, ok ? "ok" : "WRONG"); if (!ok) failures++; }

static void handler(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
}

static void timer_ms(int ms)
{
    struct itimerval it = { { 0, 0 }, { ms / 1000, (ms % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

static int late_fd;
static void *late_writer(void *arg)
{
    (void)arg;
    struct timespec d = { 0, 300 * 1000 * 1000 };
    nanosleep(&d, NULL);
    if (write(late_fd, "x", 1) != 1) exit(1);
    return NULL;
}

static void interruptions(void)
{
    int sv[2], pp[2];
    char c;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(pp)) exit(1);

    handler(0);
    alarms = 0;
    timer_ms(50);
    ssize_t n = read(sv[0], &c, 1);
    check(n == -1 && errno == EINTR && alarms == 1, "socket read without SA_RESTART ends with EINTR");

    alarms = 0;
    timer_ms(50);
    n = read(pp[0], &c, 1);
    check(n == -1 && errno == EINTR && alarms == 1, "pipe read without SA_RESTART ends with EINTR");

    handler(1);
    alarms = 0;
    late_fd = sv[1];
    pthread_t th;
    pthread_create(&th, NULL, late_writer, NULL);
    timer_ms(50);
    n = read(sv[0], &c, 1);
    pthread_join(th, NULL);
    check(n == 1 && c == 'x' && alarms == 1, "socket read with SA_RESTART goes on after the handler");

    alarms = 0;
    late_fd = pp[1];
    pthread_create(&th, NULL, late_writer, NULL);
    timer_ms(50);
    n = read(pp[0], &c, 1);
    pthread_join(th, NULL);
    check(n == 1 && c == 'x' && alarms == 1, "pipe read with SA_RESTART goes on after the handler");

    alarms = 0;
    timer_ms(50);
    struct pollfd pf = { sv[0], POLLIN, 0 };
    int pr = poll(&pf, 1, 5000);
    check(pr == -1 && errno == EINTR, "poll ends with EINTR even with SA_RESTART");

    alarms = 0;
    timer_ms(50);
    struct timespec req = { 10, 0 }, rem = { 0, 0 };
    int r = nanosleep(&req, &rem);
    check(r == -1 && errno == EINTR && rem.tv_sec >= 5 && rem.tv_sec <= 10, "nanosleep ends with EINTR and the time left");
    close(sv[0]); close(sv[1]); close(pp[0]); close(pp[1]);
}

static long spin(long n)
{
    volatile long x = 0;
    for (long i = 0; i < n; i++) x += i ^ (x >> 3);
    return x;
}

static void waiting(void)
{
    pid_t child = fork();
    if (child == 0) { spin(20 * 1000 * 1000); _exit(7); }
    siginfo_t si;
    memset(&si, 0xff, sizeof si);
    int r = waitid(P_PID, child, &si, WEXITED | WNOWAIT);
    check(r == 0 && si.si_signo == SIGCHLD && si.si_code == CLD_EXITED && si.si_status == 7 && si.si_pid == child,
          "waitid WNOWAIT sees the exit");
    struct rusage ru;
    int status;
    r = wait4(child, &status, 0, &ru);
    check(r == child && WIFEXITED(status) && WEXITSTATUS(status) == 7, "wait4 still reaps it after WNOWAIT");
    check(ru.ru_utime.tv_sec > 0 || ru.ru_utime.tv_usec > 0, "the child's rusage has user time");
    struct rusage all;
    getrusage(RUSAGE_CHILDREN, &all);
    check(all.ru_utime.tv_sec > 0 || all.ru_utime.tv_usec > 0, "getrusage(RUSAGE_CHILDREN) has the reaped child's time");

    int sync[2];
    if (pipe(sync)) exit(1);
    child = fork();
    if (child == 0) { close(sync[0]); setpgid(0, 0); if (write(sync[1], "r", 1) != 1) _exit(2); pause(); _exit(0); }
    close(sync[1]);
    char c;
    if (read(sync[0], &c, 1) != 1) exit(1);
    close(sync[0]);
    memset(&si, 0xff, sizeof si);
    r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG);
    check(r == 0 && si.si_pid == 0, "waitid WNOHANG with a running child gives 0 and an empty siginfo");
    kill(child, SIGTERM);
    memset(&si, 0, sizeof si);
    r = waitid(P_PGID, child, &si, WEXITED);
    check(r == 0 && si.si_code == CLD_KILLED && si.si_status == SIGTERM && si.si_pid == child, "waitid P_PGID sees the kill");
    r = waitid(P_ALL, 0, &si, WEXITED | WNOHANG);
    check(r == -1 && errno == ECHILD, "waitid without children is ECHILD");
    r = waitid(P_ALL, 0, &si, WNOHANG);
    check(r == -1 && errno == EINVAL, "waitid without WEXITED/WSTOPPED/WCONTINUED is EINVAL");
}

static int result_fd;
static void on_usr1(int s) { (void)s; if (write(result_fd, "d", 1) != 1) _exit(3); }

static void deathsig(void)
{
    int res[2], sync[2];
    if (pipe(res) || pipe(sync)) exit(1);
    pid_t mid = fork();
    if (mid == 0) {
        pid_t grand = fork();
        if (grand == 0) {
            close(res[0]); close(sync[0]);
            result_fd = res[1];
            signal(SIGUSR1, on_usr1);
            prctl(PR_SET_PDEATHSIG, SIGUSR1);
            int got = -1;
            prctl(PR_GET_PDEATHSIG, &got);
            if (got != SIGUSR1 || write(sync[1], "r", 1) != 1) _exit(2);
            close(sync[1]);
            pause();
            _exit(0);
        }
        char c;
        close(sync[1]);
        if (read(sync[0], &c, 1) != 1) _exit(2);
        _exit(0); /* the grandchild's parent dies: it gets SIGUSR1 */
    }
    close(res[1]); close(sync[0]); close(sync[1]);
    waitpid(mid, NULL, 0);
    char c = 0;
    ssize_t n = read(res[0], &c, 1);
    check(n == 1 && c == 'd', "PR_SET_PDEATHSIG signals the child when its parent dies");
    close(res[0]);
}

static void bigwrite(void)
{
    enum { SIZE = 200 * 1000 };
    static char data[SIZE];
    memset(data, 'a', sizeof data);
    int p[2];
    if (pipe(p)) exit(1);
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        static char buf[4096];
        long total = 0;
        ssize_t n;
        struct timespec d = { 0, 1000 * 1000 };
        while ((n = read(p[0], buf, sizeof buf)) > 0) { total += n; if (total < 100000) nanosleep(&d, NULL); }
        _exit(total == SIZE ? 0 : 1);
    }
    close(p[0]);
    ssize_t w = write(p[1], data, sizeof data);
    close(p[1]);
    int status;
    waitpid(child, &status, 0);
    check(w == SIZE && WIFEXITED(status) && WEXITSTATUS(status) == 0, "a blocking pipe write larger than the pipe writes it all");

    if (pipe(p)) exit(1);
    fcntl(p[1], F_SETFL, O_NONBLOCK);
    w = write(p[1], data, 100 * 1000);
    check(w == 65536, "a non-blocking write writes what fits");
    w = write(p[1], data, 10);
    check(w == -1 && errno == EAGAIN, "a full non-blocking pipe is EAGAIN");
    close(p[0]); close(p[1]);
}

static void procfs(const char *argv0)
{
    int sync[2];
    if (pipe(sync)) exit(1);
    pid_t child = fork();
    if (child == 0) { close(sync[0]); if (write(sync[1], "r", 1) != 1) _exit(2); for (;;) pause(); }
    close(sync[1]);
    char c;
    if (read(sync[0], &c, 1) != 1) exit(1);
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
    FILE *f = fopen(path, "r");
    int pid = 0, ppid = 0;
    char comm[64] = "", state = '?';
    if (f) { if (fscanf(f, "%d (%63[^)]) %c %d", &pid, comm, &state, &ppid) != 4) pid = -1; fclose(f); }
    const char *base = strrchr(argv0, '/') ? strrchr(argv0, '/') + 1 : argv0;
    check(pid == child && ppid == getpid() && strncmp(comm, base, 15) == 0 && strchr("RS", state), "/proc/PID/stat of a child");
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)child);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf) : -1;
    if (fd >= 0) close(fd);
    check(n == (ssize_t)strlen(argv0) + 1 && strcmp(buf, argv0) == 0, "/proc/PID/cmdline of a child");
    snprintf(path, sizeof path, "/proc/%d/status", (int)child);
    f = fopen(path, "r");
    int spid = 0, sppid = 0;
    while (f && fgets(buf, sizeof buf, f)) { sscanf(buf, "Pid: %d", &spid); sscanf(buf, "PPid: %d", &sppid); }
    if (f) fclose(f);
    check(spid == child && sppid == getpid(), "/proc/PID/status of a child");
    snprintf(path, sizeof path, "/proc/%d/exe", (int)child);
    char self[4096], other[4096];
    ssize_t a = readlink("/proc/self/exe", self, sizeof self - 1), b = readlink(path, other, sizeof other - 1);
    check(a > 0 && a == b && memcmp(self, other, a) == 0, "/proc/PID/exe of a child");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)child);
    check(access(path, F_OK) != 0, "a reaped child has no /proc entry");
}

int main(int argc, char **argv)
{
    (void)argc;
    setvbuf(stdout, NULL, _IONBF, 0);
    interruptions();
    waiting();
    deathsig();
    bigwrite();
    procfs(argv[0]);
    return failures ? 1 : 0;
}
