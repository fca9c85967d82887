// waitall: blocking receives whose peer is another process or thread of the same program, compared with a
// native run. Each receive waits while its peer, which has to run to send the rest, sends in parts:
//   - recv(MSG_WAITALL) on a socketpair, the sender a forked child sending three parts with pauses between;
//   - recvmsg(MSG_WAITALL) over three iovecs, then the same at end of file (fewer bytes), then recv gives 0;
//   - recv(MSG_WAITALL) on a TCP loopback connection whose sender is a thread of the same process;
//   - a signal whose handler has no SA_RESTART ends a MSG_WAITALL receive with the bytes it had;
//   - a signal with SA_RESTART while nothing was received: the receive goes on and gets everything (when the signal
//     came before the receive began, as on a loaded VM that took over 50 ms to get there, the case runs again);
//   - SO_RCVTIMEO: a MSG_WAITALL receive returns the part it had when the time-out ends, then EAGAIN with
//     nothing; a plain blocking recv ends with EAGAIN too.
// Prints one line per case and "done". Guards so that a machine that cannot run the peer while a receive
// waits fails in bounded time instead of hanging: SO_RCVTIMEO of 20 s on every receiving socket, alarm(60).
// LDFLAGS: -pthread
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GUARD_S 20

static void pause_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

// byte i of a stream is pattern(i): a receive that got bytes out of order or lost some shows it
static unsigned char pattern(long i) { return (unsigned char)(i * 7 + i / 251); }

static void fill(unsigned char *b, long from, long n)
{
    for (long i = 0; i < n; i++) b[i] = pattern(from + i);
}

static void send_all(int fd, long from, long n)
{
    unsigned char *b = malloc(n);
    fill(b, from, n);
    long off = 0;
    while (off < n) {
        ssize_t w = send(fd, b + off, n - off, MSG_NOSIGNAL);
        if (w < 0) { if (errno == EINTR) continue; perror("send"); exit(3); }
        off += w;
    }
    free(b);
}

// the stream's bytes in parts with a pause of 20 ms before each but the first
static void send_parts(int fd, const long *parts, int n)
{
    long at = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0) pause_ms(20);
        send_all(fd, at, parts[i]);
        at += parts[i];
    }
}

// "ok" or where the bytes first differ from the stream's pattern
static const char *check(const unsigned char *b, long from, long n)
{
    static char why[64];
    for (long i = 0; i < n; i++)
        if (b[i] != pattern(from + i)) { snprintf(why, sizeof why, "mismatch at %ld", i); return why; }
    return "ok";
}

static void guard(int fd)
{
    struct timeval tv = { GUARD_S, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static void wait_readable(int fd)
{
    struct pollfd p = { fd, POLLIN, 0 };
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {}
}

static void result(const char *what, ssize_t r, const unsigned char *b, long from)
{
    if (r < 0) printf("%s: -1 %s\n", what, strerror(errno));
    else printf("%s: %zd %s\n", what, r, check(b, from, r));
    fflush(stdout);
}

static void reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) printf("child status %d\n", st);
}

// 1 and 2: a forked child sends in parts over a socketpair
static void forked_peer(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) { perror("socketpair"); exit(2); }
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        // 4100 bytes in three parts; then the recvmsg case: 1000 bytes in two parts, then end of file after 50 more
        static const long parts[] = { 100, 3000, 1000, 600, 400, 50 };
        send_parts(sv[1], parts, 6);
        _exit(0);
    }
    close(sv[1]);
    guard(sv[0]);
    unsigned char *b = calloc(1, 8192);
    result("socketpair recv waitall 4100", recv(sv[0], b, 4100, MSG_WAITALL), b, 0);

    memset(b, 0, 8192);
    struct iovec iov[3] = { { b, 10 }, { b + 10, 700 }, { b + 710, 290 } };
    struct msghdr m = { 0 };
    m.msg_iov = iov;
    m.msg_iovlen = 3;
    result("socketpair recvmsg waitall 1000", recvmsg(sv[0], &m, MSG_WAITALL), b, 4100);
    memset(b, 0, 8192);
    iov[0].iov_len = 40; iov[1].iov_base = b + 40; iov[1].iov_len = 40; iov[2].iov_base = b + 80; iov[2].iov_len = 20;
    result("recvmsg waitall 100 at end of file", recvmsg(sv[0], &m, MSG_WAITALL), b, 5100);
    result("recv after end of file", recv(sv[0], b, 100, MSG_WAITALL), b, 0);
    reap(pid);
    close(sv[0]);
    free(b);
}

// 3: a thread of this process sends over TCP loopback
static int tcp_port;

static void *tcp_sender(void *arg)
{
    (void)arg;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(tcp_port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) { perror("connect"); exit(2); }
    static const long parts[] = { 1000, 4000, 1000 };
    send_parts(c, parts, 3);
    close(c);
    return NULL;
}

static void thread_peer(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 || getsockname(l, (struct sockaddr *)&a, &al) < 0) {
        perror("listen");
        exit(2);
    }
    tcp_port = ntohs(a.sin_port);
    pthread_t th;
    pthread_create(&th, NULL, tcp_sender, NULL);
    int s = accept(l, NULL, NULL);
    guard(s);
    unsigned char *b = calloc(1, 8192);
    result("tcp thread recv waitall 6000", recv(s, b, 6000, MSG_WAITALL), b, 0);
    pthread_join(th, NULL);
    result("tcp recv after close", recv(s, b, 10, MSG_WAITALL), b, 0);
    close(s);
    close(l);
    free(b);
}

// 4 and 5: signals
static volatile sig_atomic_t handled;
static void on_alarm(int sig) { (void)sig; handled++; }

static void arm(int ms, int flags)
{
    struct sigaction sa = { 0 };
    sa.sa_handler = on_alarm;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = { { 0, 0 }, { ms / 1000, (ms % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

// a forked peer on a socketpair that sends 10 bytes and waits for the parent's "go"; then, when `rest` is set, sends
// the next 90 bytes 400 ms later. Returns the parent's end once the 10 bytes are there to read.
static int ten_then_go(pid_t *pid, int rest)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    *pid = fork();
    if (*pid == 0) {
        close(sv[0]);
        char go;
        send_all(sv[1], 0, 10);
        if (read(sv[1], &go, 1) != 1) _exit(4);
        if (rest) {
            pause_ms(400);
            send_all(sv[1], 10, 90);
        }
        _exit(0);
    }
    close(sv[1]);
    wait_readable(sv[0]);
    return sv[0];
}

static void signalled(void)
{
    pid_t pid;
    int s = ten_then_go(&pid, 1);
    guard(s);
    unsigned char b[128] = { 0 };
    handled = 0;
    arm(100, 0);
    ssize_t r = recv(s, b, 100, MSG_WAITALL);
    result("signal without SA_RESTART ends recv waitall 100", r, b, 0);
    printf("handler ran %d\n", (int)handled);
    // SA_RESTART with nothing received: Linux restarts a receive after the handler only when the socket has no
    // receive time-out; this one has (the guard), so it ends with EINTR (the rest comes 400 ms after "go", the
    // timer is armed before "go" and ends after 50 ms)
    for (int try = 1;; try++) {
        handled = 0;
        arm(50, SA_RESTART);
        if (write(s, "g", 1) != 1) perror("write");
        memset(b, 0, sizeof b);
        if (handled == 0 || try == 5) break;
        // the signal came before the receive began (a loaded VM took more than the 50 ms from arming to the call):
        // that is not what this case tests; again with a new peer whose first 10 bytes are read first
        fprintf(stderr, "waitall: the 50 ms signal came before the receive (try %d)\n", try);
        reap(pid);
        close(s);
        s = ten_then_go(&pid, 1);
        guard(s);
        if (recv(s, b, 10, MSG_WAITALL) != 10) { perror("recv"); exit(2); }
    }
    r = recv(s, b, 90, MSG_WAITALL);
    result("SA_RESTART recv waitall 90", r, b, 10);
    printf("handler ran %d\n", (int)handled);
    reap(pid);
    close(s);
    signal(SIGALRM, SIG_DFL);
}

static void timeouts(void)
{
    pid_t pid;
    int s = ten_then_go(&pid, 0);
    unsigned char b[128] = { 0 };
    struct timeval tv = { 0, 100000 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    result("SO_RCVTIMEO recv waitall 100 with 10 there", recv(s, b, 100, MSG_WAITALL), b, 0);
    result("SO_RCVTIMEO recv waitall 100 with nothing", recv(s, b, 100, MSG_WAITALL), b, 0);
    result("SO_RCVTIMEO recv 100 with nothing", recv(s, b, 100, 0), b, 0);
    result("SO_RCVTIMEO read 100 with nothing", read(s, b, 100), b, 0);
    if (write(s, "g", 1) != 1) perror("write");
    reap(pid);
    close(s);
}

int main(void)
{
    alarm(60);
    forked_peer();
    thread_peer();
    signalled();
    alarm(60);
    timeouts();
    printf("done\n");
    return 0;
}
