// epollserver: single-threaded line echo server on epoll (edge-triggered clients, accept4 with SOCK_NONBLOCK).
// Usage: epollserver PORT    (127.0.0.1:PORT; 0 = any free port). At startup it writes
// "epollserver: listening on 127.0.0.1:N" to stderr.
// Each line "X" from a client gets the reply "ECHO X" (via send, or writev for every other line), and is logged
// to stdout as "conn K: X" where K numbers connections in accept order. "SHUTDOWN" replies "BYE" and the
// server exits 0 after printing "served N connections, M lines".
// The epoll user data is a pointer to the connection (the listener has data.ptr == NULL).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct conn {
    int fd, id;
    char in[65536];
    size_t len;
};

static int nconns, nlines, done;

static void reply(struct conn *c, const char *line)
{
    char buf[70000];
    int n = snprintf(buf, sizeof buf, "ECHO %s\n", line);
    if (nlines % 2 == 0) {
        if (send(c->fd, buf, (size_t)n, MSG_NOSIGNAL) != n) perror("send");
    } else {
        struct iovec iov[2] = { { buf, 5 }, { buf + 5, (size_t)n - 5 } };
        if (writev(c->fd, iov, 2) != n) perror("writev");
    }
}

/* returns 1 when the connection is finished */
static int on_readable(struct conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->in + c->len, sizeof c->in - c->len - 1, 0);
        if (r < 0) return errno == EAGAIN ? 0 : 1;
        if (r == 0) return 1;
        c->len += (size_t)r;
        char *start = c->in, *nl;
        while ((nl = memchr(start, '\n', c->len - (size_t)(start - c->in)))) {
            *nl = 0;
            if (nl > start && nl[-1] == '\r') nl[-1] = 0;
            if (strcmp(start, "SHUTDOWN") == 0) {
                send(c->fd, "BYE\n", 4, MSG_NOSIGNAL);
                done = 1;
                return 1;
            }
            printf("conn %d: %s\n", c->id, start);
            reply(c, start);
            nlines++;
            start = nl + 1;
        }
        c->len -= (size_t)(start - c->in);
        memmove(c->in, start, c->len);
        if (c->len == sizeof c->in - 1) return 1;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    if (listen(lfd, 64) != 0) { perror("listen"); return 1; }
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("epoll_create1"); return 1; }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) { perror("epoll_ctl"); return 1; }
    fprintf(stderr, "epollserver: listening on 127.0.0.1:%d\n", ntohs(a.sin_port));

    struct epoll_event evs[16];
    while (!done) {
        int n = epoll_wait(ep, evs, 16, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n && !done; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    struct sockaddr_in peer;
                    socklen_t pl = sizeof peer;
                    int fd = accept4(lfd, (struct sockaddr *)&peer, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    if (pl != sizeof peer || peer.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) printf("odd peer\n");
                    c = calloc(1, sizeof *c);
                    c->fd = fd;
                    c->id = ++nconns;
                    struct epoll_event ce = { .events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c };
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce) != 0) perror("epoll_ctl add");
                    printf("conn %d: open\n", c->id);
                }
                continue;
            }
            if (on_readable(c)) {
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                if (!done) printf("conn %d: closed\n", c->id);
                close(c->fd);
                free(c);
            }
        }
    }
    printf("served %d connections, %d lines\n", nconns, nlines);
    close(ep);
    close(lfd);
    return 0;
}
