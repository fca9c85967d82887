// kvserver: single-threaded TCP key-value server built on poll().
// Usage: kvserver PORT [ADDR]   (listens on ADDR:PORT, default 127.0.0.1; PORT 0 = any free port)
// On startup writes "kvserver: listening on ADDR:N" to stderr.
// Protocol: one command per line ("\n", a trailing "\r" is ignored):
//   SET key value  -> OK          (value = rest of the line, may contain spaces)
//   GET key        -> VALUE value | NOTFOUND
//   DEL key        -> OK | NOTFOUND
//   QUIT           -> BYE, then the server closes this connection
//   SHUTDOWN       -> BYE, then the server exits with status 0
//   anything else  -> ERROR <reason>
// Every successful SET is logged to stdout as "set key" (flushed at once).
// Up to 100000 keys (SET of a new key beyond that -> ERROR full); lines up to
// 64 KiB; many clients at once; pipelined commands; non-blocking writes with
// per-connection output buffers.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_KEYS 100000
#define NBUCKETS 131072  /* power of two */
#define MAX_LINE 65536
#define MAX_CLIENTS 1000

/* ---------- hash table (separate chaining) ---------- */
struct entry {
    struct entry *next;
    uint64_t hash;
    char *key;
    char *value;
};
static struct entry *buckets[NBUCKETS];
static long nkeys;

static uint64_t hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    while (*s) h = (h ^ (unsigned char)*s++) * 0x100000001b3ULL;
    return h;
}

static struct entry **find_slot(const char *key, uint64_t h)
{
    struct entry **pp = &buckets[h & (NBUCKETS - 1)];
    while (*pp && !((*pp)->hash == h && strcmp((*pp)->key, key) == 0)) pp = &(*pp)->next;
    return pp;
}

/* returns 0 ok, -1 full, -2 out of memory */
static int kv_set(const char *key, const char *value)
{
    uint64_t h = hash_str(key);
    struct entry **pp = find_slot(key, h);
    char *v = strdup(value);
    if (!v) return -2;
    if (*pp) {
        free((*pp)->value);
        (*pp)->value = v;
        return 0;
    }
    if (nkeys >= MAX_KEYS) { free(v); return -1; }
    struct entry *e = malloc(sizeof *e);
    char *k = strdup(key);
    if (!e || !k) { free(e); free(k); free(v); return -2; }
    e->next = NULL;
    e->hash = h;
    e->key = k;
    e->value = v;
    *pp = e;
    nkeys++;
    return 0;
}

static const char *kv_get(const char *key)
{
    struct entry **pp = find_slot(key, hash_str(key));
    return *pp ? (*pp)->value : NULL;
}

static int kv_del(const char *key)
{
    struct entry **pp = find_slot(key, hash_str(key));
    struct entry *e = *pp;
    if (!e) return 0;
    *pp = e->next;
    free(e->key);
    free(e->value);
    free(e);
    nkeys--;
    return 1;
}

/* ---------- connections ---------- */
struct conn {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int closing;   /* close once the output buffer is drained */
};
static struct conn *conns[MAX_CLIENTS];
static int nconns;
static int shutting_down;

static int out_append(struct conn *c, const char *s, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 1024;
        while (cap < c->out_len + n) cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) return -1;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    return 0;
}
static int out_str(struct conn *c, const char *s) { return out_append(c, s, strlen(s)); }

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* split "CMD rest" in place; returns pointer to rest (may be "") */
static char *split_word(char *s)
{
    while (*s && *s != ' ') s++;
    if (!*s) return s;
    *s++ = 0;
    while (*s == ' ') s++;
    return s;
}

static void handle_line(struct conn *c, char *line)
{
    size_t n = strlen(line);
    if (n && line[n - 1] == '\r') line[--n] = 0;
    char *cmd = line;
    char *rest = split_word(line);

    if (strcmp(cmd, "SET") == 0) {
        char *key = rest;
        char *value = split_word(rest);
        if (!*key) { out_str(c, "ERROR missing key\n"); return; }
        int r = kv_set(key, value);
        if (r == 0) {
            out_str(c, "OK\n");
            printf("set %s\n", key);
            fflush(stdout);
        } else {
            out_str(c, r == -1 ? "ERROR full\n" : "ERROR out of memory\n");
        }
    } else if (strcmp(cmd, "GET") == 0) {
        char *key = rest;
        split_word(rest);
        const char *v = *key ? kv_get(key) : NULL;
        if (v) {
            out_str(c, "VALUE ");
            out_str(c, v);
            out_str(c, "\n");
        } else {
            out_str(c, "NOTFOUND\n");
        }
    } else if (strcmp(cmd, "DEL") == 0) {
        char *key = rest;
        split_word(rest);
        out_str(c, *key && kv_del(key) ? "OK\n" : "NOTFOUND\n");
    } else if (strcmp(cmd, "QUIT") == 0) {
        out_str(c, "BYE\n");
        c->closing = 1;
    } else if (strcmp(cmd, "SHUTDOWN") == 0) {
        out_str(c, "BYE\n");
        c->closing = 1;
        shutting_down = 1;
    } else if (*cmd == 0) {
        out_str(c, "ERROR empty command\n");
    } else {
        out_str(c, "ERROR unknown command\n");
    }
}

/* process complete lines in the input buffer */
static void process_input(struct conn *c)
{
    size_t start = 0;
    while (!c->closing) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (!nl) break;
        *nl = 0;
        handle_line(c, c->in + start);
        start = (size_t)(nl - c->in) + 1;
    }
    if (c->closing) {
        c->in_len = 0;  /* ignore anything after QUIT/SHUTDOWN */
        return;
    }
    memmove(c->in, c->in + start, c->in_len - start);
    c->in_len -= start;
    if (c->in_len >= MAX_LINE) {
        out_str(c, "ERROR line too long\n");
        c->closing = 1;
        c->in_len = 0;
    }
}

/* returns -1 if the connection should be dropped now */
static int conn_read(struct conn *c)
{
    if (c->in_cap - c->in_len < 4096) {
        size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
        if (cap > MAX_LINE * 2) cap = MAX_LINE * 2;
        if (cap > c->in_cap) {
            char *p = realloc(c->in, cap);
            if (!p) return -1;
            c->in = p;
            c->in_cap = cap;
        }
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    if (n == 0) {
        /* peer closed: a final unterminated line is still processed */
        if (c->in_len && c->in_len < c->in_cap) {
            c->in[c->in_len++] = '\n';
            process_input(c);
        }
        c->closing = 1;
        return 0;
    }
    c->in_len += (size_t)n;
    process_input(c);
    return 0;
}

static int conn_write(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [ADDR]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (argc > 2 && inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
        fprintf(stderr, "kvserver: bad address %s\n", argv[2]);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("bind"); return 1; }
    if (listen(lfd, 128) != 0) { perror("listen"); return 1; }
    socklen_t alen = sizeof addr;
    getsockname(lfd, (struct sockaddr *)&addr, &alen);
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
    char shown[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &addr.sin_addr, shown, sizeof shown);
    fprintf(stderr, "kvserver: listening on %s:%d\n", shown, ntohs(addr.sin_port));

    struct pollfd pfds[MAX_CLIENTS + 1];
    for (;;) {
        int np = 0;
        pfds[np].fd = lfd;
        pfds[np].events = (shutting_down || nconns >= MAX_CLIENTS) ? 0 : POLLIN;
        pfds[np].revents = 0;
        np++;
        for (int i = 0; i < nconns; i++) {
            pfds[np].fd = conns[i]->fd;
            pfds[np].events = (conns[i]->closing ? 0 : POLLIN) |
                              (conns[i]->out_len > conns[i]->out_off ? POLLOUT : 0);
            pfds[np].revents = 0;
            np++;
        }
        int r = poll(pfds, (nfds_t)np, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
        }

        /* existing connections (index i <-> pfds[i + 1]) */
        for (int i = 0; i < nconns; i++) {
            struct conn *c = conns[i];
            short re = pfds[i + 1].revents;
            int drop = 0;
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                if (!c->closing && conn_read(c) < 0) drop = 1;
                else if ((re & (POLLHUP | POLLERR)) && !(re & POLLIN)) c->closing = 1;
            }
            if (!drop && c->out_len > c->out_off && conn_write(c) < 0) drop = 1;
            if (!drop && c->closing && c->out_len == c->out_off) drop = 1;
            if (drop) pfds[i + 1].fd = -2;  /* mark */
        }
        /* compact the connection list */
        int j = 0;
        for (int i = 0; i < nconns; i++) {
            if (pfds[i + 1].fd == -2) conn_free(conns[i]);
            else conns[j++] = conns[i];
        }
        nconns = j;

        if (shutting_down) {
            /* best effort: flush remaining output, then exit */
            for (int i = 0; i < nconns; i++) {
                fcntl(conns[i]->fd, F_SETFL, fcntl(conns[i]->fd, F_GETFL) & ~O_NONBLOCK);
                conn_write(conns[i]);
                conn_free(conns[i]);
            }
            close(lfd);
            fflush(stdout);
            return 0;
        }

        /* new connections */
        if (pfds[0].revents & POLLIN) {
            for (;;) {
                if (nconns >= MAX_CLIENTS) break;
                int fd = accept(lfd, NULL, NULL);
                if (fd < 0) break;
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                struct conn *c = calloc(1, sizeof *c);
                if (!c) { close(fd); break; }
                c->fd = fd;
                conns[nconns++] = c;
            }
        }
    }
}
