// bulkserver: streams large bodies over TCP, one connection at a time (a download or upload server).
// Usage: bulkserver PORT [ADDR]   (listens on ADDR:PORT, default 127.0.0.1)
// On startup writes "bulkserver: listening on ADDR:PORT" to stderr.
// Protocol: one request line per connection:
//   GET BYTES SEED  -> BYTES bytes of the body for SEED, then the server closes the connection
//   PUT BYTES SEED  -> reads BYTES bytes, checks them against the body for SEED, answers "OK BYTES" or
//                      "BAD AT OFFSET", closes
//   SHUTDOWN        -> "BYE", then the server exits with status 0
// The body for SEED (the oracle a client checks against): 64 KiB blocks, each a copy of one 64 KiB block of
// xorshift64 output seeded by SEED, with the stream offset of every 1 KiB boundary written over its first 8
// bytes (little-endian), so a byte out of place, lost or repeated anywhere shows.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BLOCK 65536
#define STAMP 1024

static unsigned char base[BLOCK], block[BLOCK], got[BLOCK];

static void make_base(uint64_t seed)
{
    uint64_t x = seed ? seed : 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < BLOCK; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(base + i, &x, 8);
    }
}

/* the body's bytes from offset `at` (a multiple of BLOCK) */
static void make_block(uint64_t at)
{
    memcpy(block, base, BLOCK);
    for (int i = 0; i < BLOCK; i += STAMP) {
        uint64_t off = at + (uint64_t)i;
        memcpy(block + i, &off, 8);
    }
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

static int read_line(int fd, char *buf, int cap)
{
    int n = 0;
    while (n < cap - 1) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return n;
}

static void serve_get(int fd, uint64_t bytes, uint64_t seed)
{
    make_base(seed);
    for (uint64_t at = 0; at < bytes; at += BLOCK) {
        make_block(at);
        size_t n = bytes - at < BLOCK ? (size_t)(bytes - at) : BLOCK;
        if (write_all(fd, block, n) != 0) { fprintf(stderr, "bulkserver: write: %s\n", strerror(errno)); return; }
    }
}

static void serve_put(int fd, uint64_t bytes, uint64_t seed)
{
    make_base(seed);
    char reply[64];
    for (uint64_t at = 0; at < bytes; at += BLOCK) {
        make_block(at);
        size_t n = bytes - at < BLOCK ? (size_t)(bytes - at) : BLOCK, have = 0;
        while (have < n) {
            ssize_t r = read(fd, got + have, n - have);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) { fprintf(stderr, "bulkserver: upload ended at %llu\n", (unsigned long long)(at + have)); return; }
            have += (size_t)r;
        }
        if (memcmp(got, block, n) != 0) {
            size_t i = 0;
            while (got[i] == block[i]) i++;
            snprintf(reply, sizeof reply, "BAD AT %llu\n", (unsigned long long)(at + i));
            write_all(fd, (unsigned char *)reply, strlen(reply));
            return;
        }
    }
    snprintf(reply, sizeof reply, "OK %llu\n", (unsigned long long)bytes);
    write_all(fd, (unsigned char *)reply, strlen(reply));
}

int main(int argc, char **argv)
{
    if (argc < 2) { fprintf(stderr, "usage: bulkserver PORT [ADDR]\n"); return 2; }
    const char *addr_s = argc > 2 ? argv[2] : "127.0.0.1";
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])) };
    if (inet_pton(AF_INET, addr_s, &a.sin_addr) != 1) { fprintf(stderr, "bulkserver: bad address %s\n", addr_s); return 2; }
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 16) != 0) { perror("bulkserver: bind/listen"); return 1; }
    fprintf(stderr, "bulkserver: listening on %s:%d\n", addr_s, ntohs(a.sin_port));
    for (;;) {
        int fd = accept(l, NULL, NULL);
        if (fd < 0) { if (errno == EINTR) continue; perror("bulkserver: accept"); return 1; }
        char line[256];
        unsigned long long bytes = 0, seed = 0;
        if (read_line(fd, line, sizeof line) < 0) { close(fd); continue; }
        if (strcmp(line, "SHUTDOWN") == 0) { write_all(fd, (const unsigned char *)"BYE\n", 4); close(fd); return 0; }
        if (sscanf(line, "GET %llu %llu", &bytes, &seed) == 2) serve_get(fd, bytes, seed);
        else if (sscanf(line, "PUT %llu %llu", &bytes, &seed) == 2) serve_put(fd, bytes, seed);
        else write_all(fd, (const unsigned char *)"ERROR\n", 6);
        close(fd);
    }
}
