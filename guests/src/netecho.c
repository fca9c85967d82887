// netecho: small TCP/AF_UNIX client exercising the socket syscalls.
//   netecho PORT LINE...   connect to 127.0.0.1:PORT, send each LINE (alternately write() and a two-part
//                          sendmsg()), wait with select(), read the reply line with recvmsg()/recv(), print
//                          "reply: ..."; then shutdown(SHUT_WR), read to EOF and print "eof".
//   netecho sigpipe PORT   the server closes at once: send(MSG_NOSIGNAL) until EPIPE (no signal), then
//                          write() until EPIPE with a SIGPIPE handler installed; prints what happened.
//   netecho local          no network: socketpair (stream and datagram), an abstract AF_UNIX listener,
//                          eventfd, poll and epoll. Deterministic, comparable with a native run.
//   netecho unixpath DIR   AF_UNIX sockets bound to path names in DIR (relative and absolute names, stream and
//                          datagram): getsockname/getpeername/accept/recvfrom show the names as given, a name
//                          already taken is EADDRINUSE, a missing one ENOENT. Comparable with a native run.
//   netecho reads         what receives write into the guest's buffer, as the kernel writes it: only the bytes
//                          received (read, recv, recvfrom with an address, recvmsg, readv on buffers larger than
//                          the message, after a large message went through), a blocking receive that waits for a
//                          forked peer, poll over many descriptors (one closed, one -1) and epoll_wait reporting
//                          several. Deterministic, comparable with a native run.
//   netecho timeouts ADDR PORT   a listener on ADDR:PORT nobody connects to: poll, epoll_wait, select and ppoll
//                          with time-outs end with nothing ready (select clears its set), then the elapsed
//                          milliseconds on CLOCK_MONOTONIC are checked against the time-outs asked for.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { printf("error: %s: %s\n", what, strerror(errno)); exit(1); }

static int connect_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
    return fd;
}

/* reads one line (without '\n') with recvmsg/recv; returns its length or -1 at EOF */
static int read_line(int fd, char *buf, int cap, int use_msg)
{
    int n = 0;
    while (n < cap - 1) {
        char c;
        ssize_t r;
        if (use_msg) {
            struct iovec iov = { &c, 1 };
            struct sockaddr_in from;
            struct msghdr m = { .msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1 };
            r = recvmsg(fd, &m, 0);
            if (r > 0 && (m.msg_controllen != 0 || m.msg_flags != 0)) { printf("bad msghdr\n"); exit(1); }
        } else {
            r = recv(fd, &c, 1, 0);
        }
        if (r < 0) die("recv");
        if (r == 0) return n ? n : -1;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return n;
}

static int client(int port, int nlines, char **lines)
{
    int fd = connect_port(port);
    int one = 1, type = 0;
    socklen_t tl = sizeof type;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("setsockopt");
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0) die("getsockopt");
    printf("type %s, optlen %u\n", type == SOCK_STREAM ? "stream" : "other", (unsigned)tl);
    struct sockaddr_in peer, self;
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0) die("getpeername");
    if (getsockname(fd, (struct sockaddr *)&self, &sl) != 0) die("getsockname");
    printf("peer 127.0.0.1:%s, len %u; local %s, len %u\n",
           ntohs(peer.sin_port) == port ? "PORT" : "?", (unsigned)pl,
           self.sin_addr.s_addr == htonl(INADDR_LOOPBACK) ? "127.0.0.1" : "?", (unsigned)sl);
    char buf[4096];
    for (int i = 0; i < nlines; i++) {
        const char *s = lines[i];
        if (i % 2 == 0) {
            char tmp[4096];
            int k = snprintf(tmp, sizeof tmp, "%s\n", s);
            if (write(fd, tmp, (size_t)k) != k) die("write");
        } else {
            struct iovec iov[2] = { { (void *)s, strlen(s) }, { "\n", 1 } };
            struct msghdr m = { .msg_iov = iov, .msg_iovlen = 2 };
            if (sendmsg(fd, &m, 0) != (ssize_t)strlen(s) + 1) die("sendmsg");
        }
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(fd, &rs);
        struct timeval tv = { 10, 0 };
        int r = select(fd + 1, &rs, NULL, NULL, &tv);
        if (r != 1 || !FD_ISSET(fd, &rs)) die("select");
        if (read_line(fd, buf, sizeof buf, i % 2) < 0) { printf("unexpected eof\n"); return 1; }
        printf("reply: %s\n", buf);
    }
    if (shutdown(fd, SHUT_WR) != 0) die("shutdown");
    while (read_line(fd, buf, sizeof buf, 0) >= 0) printf("extra: %s\n", buf);
    printf("eof\n");
    close(fd);
    return 0;
}

static volatile sig_atomic_t sigpipes;
static void on_sigpipe(int s) { (void)s; sigpipes++; }

static int sigpipe_test(int port)
{
    int fd = connect_port(port);
    char c;
    ssize_t r = read(fd, &c, 1);
    printf("read after server close: %zd\n", r);
    signal(SIGPIPE, on_sigpipe);
    int i;
    for (i = 0; i < 2000; i++) {
        if (send(fd, "x", 1, MSG_NOSIGNAL) < 0) {
            if (errno == EPIPE) break;
            if (errno != ECONNRESET) die("send");
        }
        usleep(1000);
    }
    printf("send(MSG_NOSIGNAL): %s, sigpipes %d\n", i < 2000 ? "EPIPE" : "no error", (int)sigpipes);
    r = write(fd, "y", 1);
    printf("write: %zd %s, sigpipes %d\n", r, r < 0 ? strerror(errno) : "", (int)sigpipes);
    close(fd);
    return 0;
}

static int local_test(void)
{
    int sv[2];
    char buf[256];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    if (write(sv[0], "ping", 4) != 4) die("write");
    ssize_t n = read(sv[1], buf, sizeof buf);
    printf("stream pair: %.*s\n", (int)n, buf);
    struct iovec iov[2] = { { "po", 2 }, { "ng", 2 } };
    if (writev(sv[1], iov, 2) != 4) die("writev");
    n = recv(sv[0], buf, sizeof buf, 0);
    printf("stream pair back: %.*s\n", (int)n, buf);
    struct pollfd pf = { sv[0], POLLIN, 0 };
    printf("poll idle: %d\n", poll(&pf, 1, 0));
    close(sv[1]);
    int pr = poll(&pf, 1, 1000);
    printf("poll after close: %d revents%s%s\n", pr, (pf.revents & POLLIN) ? " IN" : "", (pf.revents & POLLHUP) ? " HUP" : "");
    printf("read at eof: %zd\n", read(sv[0], buf, sizeof buf));
    close(sv[0]);

    int dp[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, dp) != 0) die("socketpair dgram");
    send(dp[0], "one", 3, 0);
    send(dp[0], "three", 5, 0);
    n = recvfrom(dp[1], buf, 2, 0, NULL, NULL);
    printf("dgram truncated: %zd\n", n);
    n = recv(dp[1], buf, sizeof buf, 0);
    printf("dgram: %.*s\n", (int)n, buf);
    n = recv(dp[1], buf, sizeof buf, 0);
    printf("dgram empty: %zd %s\n", n, n < 0 && errno == EAGAIN ? "EAGAIN" : "?");
    close(dp[0]);
    close(dp[1]);

    /* abstract AF_UNIX listener */
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    int nl = snprintf(un.sun_path + 1, sizeof un.sun_path - 1, "revirt-netecho-%d", (int)getpid());
    socklen_t ul = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + nl);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(l, (struct sockaddr *)&un, ul) != 0) die("bind");
    if (listen(l, 4) != 0) die("listen");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&un, ul) != 0) die("connect unix");
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0) die("accept4");
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    getsockname(l, (struct sockaddr *)&got, &gl);
    printf("unix listener name matches: %s\n", gl == ul && memcmp(&got, &un, ul) == 0 ? "yes" : "no");
    send(c, "hello unix", 10, 0);
    n = recv(a, buf, sizeof buf, 0);
    printf("unix: %.*s\n", (int)n, buf);

    /* eventfd + epoll */
    int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ev < 0) die("eventfd");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0x1122334455667788ULL };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) != 0) die("epoll_ctl ev");
    e.events = EPOLLIN;
    e.data.u64 = 42;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, a, &e) != 0) die("epoll_ctl a");
    int cr = epoll_ctl(ep, EPOLL_CTL_ADD, a, &e);
    printf("epoll_ctl add again: %d %s\n", cr, errno == EEXIST ? "EEXIST" : "?");
    struct epoll_event out[4];
    printf("epoll idle: %d\n", epoll_wait(ep, out, 4, 0));
    uint64_t v = 5;
    write(ev, &v, 8);
    int k = epoll_wait(ep, out, 4, 1000);
    printf("epoll: %d events, data %llx, events %x\n", k, (unsigned long long)out[0].data.u64, out[0].events);
    read(ev, &v, 8);
    printf("eventfd value %llu\n", (unsigned long long)v);
    send(c, "x", 1, 0);
    k = epoll_wait(ep, out, 4, 1000);
    printf("epoll: %d events, data %llu\n", k, (unsigned long long)out[0].data.u64);
    recv(a, buf, 1, 0);
    e.events = EPOLLOUT;
    e.data.u64 = 7;
    epoll_ctl(ep, EPOLL_CTL_MOD, a, &e);
    k = epoll_wait(ep, out, 4, 1000);
    printf("epoll mod: %d events, data %llu, out %d\n", k, (unsigned long long)out[0].data.u64, !!(out[0].events & EPOLLOUT));
    epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL);
    printf("epoll after del: %d\n", epoll_wait(ep, out, 4, 0));
    cr = epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL);
    printf("epoll_ctl del again: %d %s\n", cr, errno == ENOENT ? "ENOENT" : "?");
    e.events = EPOLLIN;
    e.data.u64 = 9;
    epoll_ctl(ep, EPOLL_CTL_ADD, a, &e);
    close(a); /* the last reference: gone from the set */
    v = 1;
    write(ev, &v, 8);
    k = epoll_wait(ep, out, 4, 1000);
    printf("epoll after close: %d events, data %llx\n", k, (unsigned long long)out[0].data.u64);
    close(ep); close(ev); close(c); close(l);
    printf("done\n");
    return 0;
}

static void show_name(const char *what, struct sockaddr_un *a, socklen_t l)
{
    if (l <= offsetof(struct sockaddr_un, sun_path)) { printf("%s: unnamed (len %u)\n", what, (unsigned)l); return; }
    printf("%s: \"%s\" (len %u)\n", what, a->sun_path, (unsigned)l);
}

static socklen_t unix_name(struct sockaddr_un *a, const char *path)
{
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    snprintf(a->sun_path, sizeof a->sun_path, "%s", path);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1);
}

static int unixpath_test(const char *dir)
{
    char buf[256], abs[200];
    struct sockaddr_un a, got;
    socklen_t al, gl;
    if (chdir(dir) != 0) die("chdir");
    mkdir("sub", 0755);
    unlink("srv.sock"); unlink("sub/dg.sock"); unlink("cli.sock");
    /* a stream listener under a relative name */
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    al = unix_name(&a, "srv.sock");
    if (bind(l, (struct sockaddr *)&a, al) != 0) die("bind srv.sock");
    if (listen(l, 4) != 0) die("listen");
    gl = sizeof got; getsockname(l, (struct sockaddr *)&got, &gl); show_name("listener", &got, gl);
    int again = socket(AF_UNIX, SOCK_STREAM, 0);
    int r = bind(again, (struct sockaddr *)&a, al);
    printf("bind taken name: %d %s\n", r, errno == EADDRINUSE ? "EADDRINUSE" : strerror(errno));
    close(again);
    /* a client bound to its own name connects by the relative name, and through "./sub/.." */
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un cn;
    socklen_t cl = unix_name(&cn, "cli.sock");
    if (bind(c, (struct sockaddr *)&cn, cl) != 0) die("bind cli.sock");
    al = unix_name(&a, "./sub/../srv.sock");
    if (connect(c, (struct sockaddr *)&a, al) != 0) die("connect");
    gl = sizeof got;
    int s = accept(l, (struct sockaddr *)&got, &gl);
    if (s < 0) die("accept");
    show_name("accepted peer", &got, gl);
    gl = sizeof got; getpeername(c, (struct sockaddr *)&got, &gl); show_name("client's peer", &got, gl);
    gl = sizeof got; getsockname(c, (struct sockaddr *)&got, &gl); show_name("client", &got, gl);
    send(c, "over a path", 11, 0);
    ssize_t n = recv(s, buf, sizeof buf, 0);
    printf("stream: %.*s\n", (int)n, buf);
    close(s); close(c);
    /* a datagram socket under an absolute name in a subdirectory, reached with sendto */
    if (!getcwd(abs, sizeof abs - 20)) die("getcwd");
    strcat(abs, strcmp(abs, "/") == 0 ? "sub/dg.sock" : "/sub/dg.sock");
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    al = unix_name(&a, abs);
    if (bind(d, (struct sockaddr *)&a, al) != 0) die("bind dg.sock");
    gl = sizeof got; getsockname(d, (struct sockaddr *)&got, &gl);
    printf("datagram name as given: %s\n", gl == al && strcmp(got.sun_path, abs) == 0 ? "yes" : "no");
    int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
    al = unix_name(&a, "sub/dg.sock");
    if (sendto(ds, "datagram", 8, 0, (struct sockaddr *)&a, al) != 8) die("sendto");
    gl = sizeof got;
    n = recvfrom(d, buf, sizeof buf, 0, (struct sockaddr *)&got, &gl);
    printf("datagram: %.*s\n", (int)n, buf);
    show_name("unbound sender", &got, gl);
    al = unix_name(&a, "missing.sock");
    r = connect(socket(AF_UNIX, SOCK_STREAM, 0), (struct sockaddr *)&a, al);
    printf("connect missing: %d %s\n", r, errno == ENOENT ? "ENOENT" : strerror(errno));
    al = unix_name(&a, "sub");
    r = connect(socket(AF_UNIX, SOCK_STREAM, 0), (struct sockaddr *)&a, al);
    printf("connect directory: %d %s\n", r, errno == ECONNREFUSED ? "ECONNREFUSED" : strerror(errno));
    close(d); close(ds); close(l);
    unlink("srv.sock"); unlink("sub/dg.sock"); unlink("cli.sock"); rmdir("sub");
    printf("done\n");
    return 0;
}

static double mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int timeouts_test(const char *addr, int port)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) die("address");
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
    if (listen(l, 4) != 0) die("listen");
    double t0 = mono_ms();
    struct pollfd pf = { l, POLLIN, POLLHUP };
    int r = poll(&pf, 1, 150);
    printf("poll: %d revents %d\n", r, pf.revents);
    int ep = epoll_create1(0);
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 1 }, out[2];
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &e);
    printf("epoll_wait: %d\n", epoll_wait(ep, out, 2, 150));
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(l, &rd);
    struct timeval tv = { 0, 150000 };
    r = select(l + 1, &rd, NULL, NULL, &tv);
    printf("select: %d set %s\n", r, FD_ISSET(l, &rd) ? "kept" : "cleared");
    struct timespec ts = { 0, 150000000 };
    pf.revents = POLLHUP;
    r = ppoll(&pf, 1, &ts, NULL);
    printf("ppoll: %d revents %d\n", r, pf.revents);
    double waited = mono_ms() - t0;
    printf("waited at least the time-outs: %s\n", waited >= 590 ? "yes" : "no");
    close(ep);
    close(l);
    return 0;
}

static unsigned fnv(const unsigned char *p, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static int reads_test(void)
{
    static unsigned char big[16384], large[12000];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
    for (int round = 0; round < 5; round++) {
        /* a large message first, so that whatever buffer a receive goes through last held other bytes */
        memset(large, 'A' + round, sizeof large);
        if (write(sv[0], large, sizeof large) != (ssize_t)sizeof large) die("write large");
        size_t got = 0;
        while (got < sizeof large) {
            ssize_t k = read(sv[1], big, sizeof big);
            if (k <= 0) die("read large");
            got += (size_t)k;
        }
        memset(big, 0xA5, sizeof big);
        if (write(sv[0], "short", 5) != 5) die("write short");
        ssize_t n = -1;
        unsigned extra = 0;
        if (round == 0) n = read(sv[1], big, sizeof big);
        if (round == 1) n = recv(sv[1], big, sizeof big, 0);
        if (round == 2) {
            struct sockaddr_un from;
            memset(&from, 0x5A, sizeof from);
            socklen_t fl = sizeof from;
            n = recvfrom(sv[1], big, sizeof big, 0, (struct sockaddr *)&from, &fl);
            extra = fl ^ fnv((unsigned char *)&from, sizeof from);
        }
        if (round == 3) {
            struct iovec v[2] = { { big, 3 }, { big + 100, 5000 } };
            n = readv(sv[1], v, 2);
        }
        if (round == 4) {
            struct iovec v[2] = { { big, 2 }, { big + 200, 9000 } };
            struct msghdr m = { .msg_iov = v, .msg_iovlen = 2 };
            n = recvmsg(sv[1], &m, 0);
            extra = (unsigned)m.msg_flags;
        }
        printf("receive %d: %zd bytes, buffer %08x, extra %08x\n", round, n, fnv(big, sizeof big), extra);
    }

    /* a blocking receive that waits for a forked peer */
    char buf[64], go = 'g';
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
        if (read(sv[0], buf, 1) != 1) _exit(1);
        if (write(sv[0], "late", 4) != 4) _exit(1);
        _exit(0);
    }
    if (write(sv[1], &go, 1) != 1) die("write go");
    ssize_t n = read(sv[1], buf, sizeof buf);
    printf("blocking read: %.*s\n", (int)(n > 0 ? n : 0), buf);
    int status;
    waitpid(pid, &status, 0);
    printf("peer: %d\n", status);
    close(sv[0]);
    close(sv[1]);

    /* poll and epoll over many descriptors */
    enum { PAIRS = 12 };
    int p[PAIRS][2];
    for (int i = 0; i < PAIRS; i++)
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p[i]) != 0) die("socketpair poll");
    for (int i = 0; i < PAIRS; i += 3)
        if (write(p[i][0], "x", 1) != 1) die("write x");
    int closed = p[PAIRS - 1][1];
    close(closed);
    struct pollfd pf[PAIRS + 2];
    for (int i = 0; i < PAIRS; i++) pf[i] = (struct pollfd){ p[i][1], POLLIN, 0 };
    pf[PAIRS] = (struct pollfd){ -1, POLLIN, 0 };
    pf[PAIRS + 1] = (struct pollfd){ p[1][0], POLLOUT, 0 };
    int r = poll(pf, PAIRS + 2, 0);
    printf("poll: %d", r);
    for (int i = 0; i < PAIRS + 2; i++) printf(" %x", pf[i].revents);
    printf("\n");
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < PAIRS - 1; i++) {
        struct epoll_event e = { .events = EPOLLIN, .data.u64 = 1000 + (uint64_t)i };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, p[i][1], &e) != 0) die("epoll_ctl");
    }
    struct epoll_event evs[PAIRS];
    r = epoll_wait(ep, evs, PAIRS, 0);
    unsigned long long seen = 0;
    for (int i = 0; i < r; i++) seen |= 1ULL << (evs[i].data.u64 - 1000);
    printf("epoll: %d ready, set %llx\n", r, seen);
    r = epoll_wait(ep, evs, 2, 0);
    printf("epoll at most 2: %d\n", r);
    close(ep);
    for (int i = 0; i < PAIRS; i++) {
        close(p[i][0]);
        if (p[i][1] != closed) close(p[i][1]);
    }
    printf("done\n");
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && strcmp(argv[1], "local") == 0) return local_test();
    if (argc >= 2 && strcmp(argv[1], "reads") == 0) return reads_test();
    if (argc >= 3 && strcmp(argv[1], "unixpath") == 0) return unixpath_test(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "sigpipe") == 0) return sigpipe_test(atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[1], "timeouts") == 0) return timeouts_test(argv[2], atoi(argv[3]));
    if (argc >= 2) return client(atoi(argv[1]), argc - 2, argv + 2);
    fprintf(stderr, "usage: netecho PORT LINE... | netecho sigpipe PORT | netecho local | netecho unixpath DIR\n");
    return 2;
}
