// LDFLAGS: -pthread
// hostwrites: host calls that block on the host for another thread of the same program, which must run meanwhile.
//   usage: hostwrites DIR     (DIR: an existing directory to make a FIFO in)
// 1. A writer thread sends 1 MiB in one blocking write(2) on a host socket (socketpair) whose reader is another
//    thread that starts reading only after it computed; a third thread computes all along.
// 2. A FIFO made with mkfifo: the reader thread blocks in open(O_RDONLY) until the writer thread opens it
//    (O_WRONLY, after computing), then the writer writes 1 MiB in one blocking write(2) while the reader drains it.
// 3. A blocking connect(2) to an AF_UNIX listener with a full backlog (listen(fd, 0) and one connection already
//    queued) waits until the main thread accepts.
// 4. A blocking write to a full socket interrupted by a signal: EINTR without SA_RESTART; with it, the write goes
//    on after the handler and moves everything.
// On a VM whose host calls block every thread, each of these hangs. Output is deterministic; exit 1 on failure.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define BIG (1 << 20)

static void fail(const char *what) { perror(what); exit(1); }

static uint64_t compute(int rounds)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < rounds; i++) { h ^= (uint64_t)i; h *= 1099511628211ULL; }
    return h;
}

static uint64_t fnv(const unsigned char *p, size_t n, uint64_t h)
{
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}

static unsigned char *pattern(void)
{
    unsigned char *b = malloc(BIG);
    for (int i = 0; i < BIG; i++) b[i] = (unsigned char)(i * 7 + (i >> 9));
    return b;
}

/* reads to the end of fd; returns the byte count, the digest in *digest */
static size_t drain(int fd, uint64_t *digest)
{
    unsigned char *buf = malloc(65536);
    size_t total = 0;
    uint64_t h = 1469598103934665603ULL;
    for (;;) {
        ssize_t n = read(fd, buf, 65536);
        if (n < 0) { if (errno == EINTR) continue; fail("drain read"); }
        if (n == 0) break;
        h = fnv(buf, (size_t)n, h);
        total += (size_t)n;
    }
    free(buf);
    *digest = h;
    return total;
}

static int sv[2];
static char out_sock_writer[128], out_sock_reader[128], out_fifo_writer[128], out_fifo_reader[128], out_connect[128];
static volatile uint64_t computed;
static const char *fifo_path;

static void *computer(void *arg) { (void)arg; computed = compute(4000000); return NULL; }

static void *sock_writer(void *arg)
{
    (void)arg;
    unsigned char *b = pattern();
    ssize_t n = write(sv[1], b, BIG);
    snprintf(out_sock_writer, sizeof out_sock_writer, "socket writer: one write moved %zd bytes\n", n);
    close(sv[1]);
    free(b);
    return NULL;
}

static void *sock_reader(void *arg)
{
    (void)arg;
    uint64_t c = compute(1000000), d;
    size_t n = drain(sv[0], &d);
    snprintf(out_sock_reader, sizeof out_sock_reader, "socket reader: %zu bytes, digest %016llx (computed %d)\n", n, (unsigned long long)d, c != 0);
    return NULL;
}

static void *fifo_reader(void *arg)
{
    (void)arg;
    int fd = open(fifo_path, O_RDONLY);
    if (fd < 0) fail("fifo open for reading");
    uint64_t d;
    size_t n = drain(fd, &d);
    close(fd);
    snprintf(out_fifo_reader, sizeof out_fifo_reader, "fifo reader: %zu bytes, digest %016llx\n", n, (unsigned long long)d);
    return NULL;
}

static void *fifo_writer(void *arg)
{
    (void)arg;
    compute(1000000);
    int fd = open(fifo_path, O_WRONLY);
    if (fd < 0) fail("fifo open for writing");
    unsigned char *b = pattern();
    ssize_t n = write(fd, b, BIG);
    snprintf(out_fifo_writer, sizeof out_fifo_writer, "fifo writer: one write moved %zd bytes\n", n);
    close(fd);
    free(b);
    return NULL;
}

static struct sockaddr_un listen_addr;

static void *connector(void *arg)
{
    (void)arg;
    int ok = 0;
    for (int i = 0; i < 3; i++) {
        int c = socket(AF_UNIX, SOCK_STREAM, 0);
        if (c < 0) fail("socket");
        if (connect(c, (struct sockaddr *)&listen_addr, sizeof listen_addr) == 0) ok++;
        else perror("connect");
        char tag = (char)('a' + i);
        if (write(c, &tag, 1) != 1) fail("connector write");
        close(c);
    }
    snprintf(out_connect, sizeof out_connect, "connector: %d of 3 connects succeeded\n", ok);
    return NULL;
}

static volatile sig_atomic_t alarms;
static void on_alarm(int s) { (void)s; alarms++; }

static int isv[2];

/* drains the socket once the signal came (SIGALRM blocked here, so the writer is the thread that takes it) */
static void *late_drain(void *arg)
{
    (void)arg;
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    while (alarms == 0) { struct timespec d = { 0, 5 * 1000 * 1000 }; nanosleep(&d, NULL); }
    uint64_t dg;
    return (void *)drain(isv[0], &dg);
}

/* a blocking write of 1 MiB into a socket already full, interrupted by SIGALRM after 100 ms: without SA_RESTART it
   moved nothing and fails with EINTR; with SA_RESTART it goes on after the handler and moves everything once a
   thread drains the socket */
static void interrupted_write(int restart)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, isv)) fail("socketpair");
    unsigned char *b = pattern();
    /* fill it */
    int fl = fcntl(isv[1], F_GETFL);
    fcntl(isv[1], F_SETFL, fl | O_NONBLOCK);
    size_t filled = 0;
    for (;;) {
        ssize_t n = write(isv[1], b, 4096);
        if (n < 0) { if (errno == EAGAIN) break; fail("fill"); }
        filled += (size_t)n;
    }
    fcntl(isv[1], F_SETFL, fl);
    alarms = 0;
    pthread_t th;
    if (restart && pthread_create(&th, NULL, late_drain, NULL)) fail("create");
    struct itimerval it = { { 0, 0 }, { 0, 100 * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
    ssize_t n = write(isv[1], b, BIG);
    int e = errno;
    close(isv[1]);
    if (restart) {
        void *got;
        pthread_join(th, &got);
        printf("SA_RESTART: the write returned %s, alarms %d, the reader got the filled bytes and 1 MiB: %s\n",
               n == BIG ? "the whole count" : n < 0 ? strerror(e) : "a short count", alarms, (size_t)got == filled + BIG ? "yes" : "no");
    } else {
        printf("no SA_RESTART: the write returned %s, alarms %d\n", n < 0 ? strerror(e) : "a count", alarms);
    }
    close(isv[0]);
    free(b);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: hostwrites DIR\n"); return 2; }
    static char fp[512], sp[512];
    snprintf(fp, sizeof fp, "%s/fifo", argv[1]);
    snprintf(sp, sizeof sp, "%s/sock", argv[1]);
    fifo_path = fp;
    unlink(fp);
    unlink(sp);
    if (mkfifo(fp, 0600)) fail("mkfifo");
    struct stat st;
    if (stat(fp, &st) || !S_ISFIFO(st.st_mode)) fail("stat fifo");
    printf("mkfifo made a FIFO\n");

    /* 1 and 2 together, with a thread computing */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) fail("socketpair");
    pthread_t th[5];
    if (pthread_create(&th[0], NULL, computer, NULL) || pthread_create(&th[1], NULL, sock_writer, NULL)
        || pthread_create(&th[2], NULL, sock_reader, NULL) || pthread_create(&th[3], NULL, fifo_reader, NULL)
        || pthread_create(&th[4], NULL, fifo_writer, NULL)) fail("create");
    for (int i = 0; i < 5; i++) pthread_join(th[i], NULL);
    fputs(out_sock_writer, stdout);
    fputs(out_sock_reader, stdout);
    fputs(out_fifo_writer, stdout);
    fputs(out_fifo_reader, stdout);
    printf("computer: %016llx\n", (unsigned long long)computed);

    /* 3: a blocking connect to a listener with a full backlog */
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    memset(&listen_addr, 0, sizeof listen_addr);
    listen_addr.sun_family = AF_UNIX;
    strncpy(listen_addr.sun_path, sp, sizeof listen_addr.sun_path - 1);
    if (l < 0 || bind(l, (struct sockaddr *)&listen_addr, sizeof listen_addr) || listen(l, 0)) fail("listen");
    pthread_t ct;
    if (pthread_create(&ct, NULL, connector, NULL)) fail("create");
    compute(2000000);
    char got[4] = { 0 };
    for (int i = 0; i < 3; i++) {
        int a = accept(l, NULL, NULL);
        if (a < 0) fail("accept");
        if (read(a, &got[i], 1) != 1) fail("accepted read");
        close(a);
    }
    pthread_join(ct, NULL);
    fputs(out_connect, stdout);
    printf("accepted in order: %s\n", got);
    close(l);
    unlink(sp);

    /* 4 */
    interrupted_write(0);
    interrupted_write(1);
    unlink(fp);
    return 0;
}
