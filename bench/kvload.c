// kvload: closed-loop load generator for the kvserver guest, or for redis-server.
// Usage: kvload PORT CONNECTIONS SECONDS [WARMUP_SECONDS [ADDR [PROTOCOL [TRACE]]]]   (ADDR: the server's IPv4 address,
// default 127.0.0.1; PROTOCOL: "kv", kvserver's line protocol (the default), or "resp", redis' protocol; TRACE: a file
// that gets one line "SENT DONE PORT" per completed request, CLOCK_MONOTONIC seconds and the connection's local port,
// for placing a fault's stall in time and finding its connection's frames)
// Each of CONNECTIONS connections keeps exactly one request outstanding (SET of its own key, then GET of it,
// alternately), sends the next one as soon as the reply arrives, and checks the reply. One thread, epoll: the
// client costs a few microseconds per request, far below the server's cost, so it is not the bottleneck.
// Prints one line: "requests N seconds S rate R p50_ms A p90_ms B p99_ms C max_ms D errors E".
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { KEYS_PER_CONN = 1000 }; // up to 100 connections stay within kvserver's 100,000 keys (MAX_KEYS)

struct conn {
    int fd;
    long n;            // requests completed
    double sent_at;    // when the outstanding request was sent
    char in[256];
    int in_len;
    int header;        // RESP: the GET's "$N" line arrived, its value line is next
    int port;          // the connection's local port (the trace names the connection by it)
};

static int resp; // speak RESP (redis) instead of kvserver's lines

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int send_request(struct conn *c, int id)
{
    // Each connection reuses KEYS_PER_CONN keys (a SET and the GET of it share one), so a fast server never
    // reaches kvserver's key limit however long the run; the values stay unique, so a stale reply is caught.
    char buf[160], k[32], v[32];
    long key = (c->n / 2) % KEYS_PER_CONN;
    int kl = snprintf(k, sizeof k, "c%dk%ld", id, key), vl = snprintf(v, sizeof v, "value-%ld", c->n), len;
    if (!resp)
        len = c->n % 2 == 0 ? snprintf(buf, sizeof buf, "SET %s %s\n", k, v) : snprintf(buf, sizeof buf, "GET %s\n", k);
    else if (c->n % 2 == 0)
        len = snprintf(buf, sizeof buf, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kl, k, vl, v);
    else
        len = snprintf(buf, sizeof buf, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, k);
    c->sent_at = now();
    return write(c->fd, buf, len) == len ? 0 : -1;
}

static int reply_ok(struct conn *c, int id, const char *line)
{
    char want[128];
    if (c->n % 2 == 0) return strcmp(line, resp ? "+OK" : "OK") == 0;
    snprintf(want, sizeof want, resp ? "value-%ld" : "VALUE value-%ld", c->n - 1);
    (void)id;
    return strcmp(line, want) == 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) { fprintf(stderr, "usage: kvload PORT CONNECTIONS SECONDS [WARMUP_SECONDS [ADDR [kv|resp]]]\n"); return 2; }
    resp = argc > 6 && strcmp(argv[6], "resp") == 0;
    FILE *trace = argc > 7 ? fopen(argv[7], "w") : NULL;
    if (argc > 7 && !trace) { perror(argv[7]); return 2; }
    int port = atoi(argv[1]), nconn = atoi(argv[2]);
    double seconds = atof(argv[3]), warmup = argc > 4 ? atof(argv[4]) : 0.5;
    struct conn *cs = calloc(nconn, sizeof *cs);
    int ep = epoll_create1(0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, argc > 5 ? argv[5] : "127.0.0.1", &a.sin_addr) != 1) { fprintf(stderr, "kvload: bad address\n"); return 2; }
    for (int i = 0; i < nconn; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        double t0 = now();
        while (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            if (now() - t0 > 60) { perror("connect"); return 1; }
            close(fd);
            fd = socket(AF_INET, SOCK_STREAM, 0);
            usleep(5000);
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        struct sockaddr_in local;
        socklen_t llen = sizeof local;
        cs[i].port = getsockname(fd, (struct sockaddr *)&local, &llen) == 0 ? ntohs(local.sin_port) : 0;
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    size_t cap = 1 << 20, nlat = 0;
    double *lat = malloc(cap * sizeof *lat);
    long errors = 0, total = 0;
    double start = now(), measure_from = start + warmup, stop = measure_from + seconds;
    for (int i = 0; i < nconn; i++) send_request(&cs[i], i);
    struct epoll_event evs[256];
    int active = nconn;
    while (active > 0) {
        int k = epoll_wait(ep, evs, 256, 1000);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) { perror("epoll_wait"); return 1; }
        for (int e = 0; e < k; e++) {
            int i = evs[e].data.u32;
            struct conn *c = &cs[i];
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len);
            if (r <= 0) { fprintf(stderr, "connection %d: %s\n", i, r == 0 ? "closed" : strerror(errno)); return 1; }
            c->in_len += r;
            char *nl;
            while ((nl = memchr(c->in, '\n', c->in_len))) {
                *nl = 0;
                if (resp && nl > c->in && nl[-1] == '\r') nl[-1] = 0;
                if (resp && c->n % 2 == 1 && !c->header && c->in[0] == '$' && strcmp(c->in, "$-1") != 0) {
                    // a bulk reply's length line: the value follows on the next line
                    c->header = 1;
                    int used = nl - c->in + 1;
                    memmove(c->in, nl + 1, c->in_len - used);
                    c->in_len -= used;
                    continue;
                }
                c->header = 0;
                double t = now();
                if (!reply_ok(c, i, c->in)) errors++;
                if (trace) fprintf(trace, "%.6f %.6f %d\n", c->sent_at, t, c->port);
                if (c->sent_at >= measure_from && t <= stop) {
                    if (nlat == cap) lat = realloc(lat, (cap *= 2) * sizeof *lat);
                    lat[nlat++] = (t - c->sent_at) * 1000;
                    total++;
                }
                int used = nl - c->in + 1;
                memmove(c->in, nl + 1, c->in_len - used);
                c->in_len -= used;
                c->n++;
                if (t < stop) send_request(c, i);
                else { epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL); active--; }
            }
        }
    }
    qsort(lat, nlat, sizeof *lat, cmp_double);
#define P(q) (nlat ? lat[(size_t)((q) * (nlat - 1))] : 0.0)
    printf("requests %ld seconds %.3f rate %.1f p50_ms %.4f p90_ms %.4f p99_ms %.4f max_ms %.4f errors %ld\n",
           total, seconds, total / seconds, P(0.5), P(0.9), P(0.99), nlat ? lat[nlat - 1] : 0.0, errors);
    for (int i = 0; i < nconn; i++) close(cs[i].fd);
    if (trace) fclose(trace);
    return errors ? 1 : 0;
}
