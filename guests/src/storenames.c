// storenames: the names-and-sizes workload of the shared-storage tests. In DIR, iteration I appends "line I" to
// "cur" (O_APPEND, kept open), links "tfile" as "h.I", makes the symlink "s.I" to "n.I" (dangling until the next
// call) and the directory "n.I", and every third iteration moves "cur" into it ("n.I/log"), writes "moved to n.I"
// through the descriptor it still holds (the write follows the file, not the name) and opens a new "cur". From
// iteration 6 on it removes "h.(I-6)", "s.(I-6)" and "n.(I-6)" (unlinking its "log" first when it has one). It
// rewrites a 20-byte record at the start of "state" each iteration and sets its length with ftruncate every fourth
// (checking fstat), and sets the length of "tfile" with truncate(2) every fifth (checking stat).
// Every call's result is checked: a change made twice (ENOENT, EEXIST) or lost prints "BAD ..." and exits 1.
// It prints "iter I" per iteration and "done N" at the end.
// With a fourth argument "names" it makes only the changes of names (no writes, no truncations): nothing but
// them is ever held, so each one's wait is for the one before ("all": everything). With a fifth, GO, it waits
// (polling, up to a minute) until the path GO exists before its first iteration, whose first change is the link.
// With "meta" it makes, per iteration, only new files and changes of their modes and times (meta below).
// With "trunc" it truncates existing files by opening them with O_TRUNC (trunc below).
// Usage: storenames DIR ITERATIONS [WORK [names|all|meta|trunc [GO]]]
// The tree it leaves depends only on ITERATIONS: a run killed and continued elsewhere must leave a native run's.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *dir;

static void path_of(char *out, size_t n, const char *fmt, long a)
{
    char name[128];
    snprintf(name, sizeof name, fmt, a);
    snprintf(out, n, "%s/%s", dir, name);
}

static void bad(const char *what, long i)
{
    printf("BAD %s at iteration %ld: %s\n", what, i, strerror(errno));
    exit(1);
}

static int open_cur(long i)
{
    char p[512];
    path_of(p, sizeof p, "cur", 0);
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) bad("open cur", i);
    return fd;
}

static void put(int fd, const char *text, long i)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len) bad("write", i);
}

static void wait_for(const char *go)
{
    struct stat gst;
    for (long t = 0; go && stat(go, &gst) != 0; t++) {
        if (t >= 60000) bad("wait for GO", -1);
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
}

static void expect_mode(const char *p, mode_t mode, long i)
{
    struct stat st;
    if (stat(p, &st) != 0) bad("stat", i);
    if ((st.st_mode & 07777) != mode) { printf("BAD mode of %s at iteration %ld: %o\n", p, i, st.st_mode & 07777); exit(1); }
}

static void expect_mtime(const char *p, time_t t, long i)
{
    struct stat st;
    if (stat(p, &st) != 0) bad("stat", i);
    if (st.st_mtime != t) { printf("BAD mtime of %s at iteration %ld: %ld\n", p, i, (long)st.st_mtime); exit(1); }
}

// meta: iteration I creates "c.I" with O_CREAT|O_EXCL (mode 0600) and, before that creation can have reached the
// storage, opens the name again read-only and with O_EXCL (EEXIST), writes "I" through the first descriptor and
// reads it back through the second; fchmods it to 0640, appends "again" through an O_CREAT open of the name that
// now exists, sets its times to I*1000 s with utimensat; creates "o.I" read-only with O_CREAT (mode 0444); makes
// the FIFO "f.I" (0600) and the regular file "r.I" (0644) with mknod, chmods "r.I" to 0600 and sets its times to
// I*1000+1 s with utimes. Each mode and time is checked with stat.
// the work's result is kept, so that the compiler keeps the work
static volatile uint64_t meta_sink;

static void meta(long n, long work, const char *go)
{
    char p[512], line[64];
    uint64_t acc = 1;
    wait_for(go);
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < work; k++) acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        meta_sink = acc;
        path_of(p, sizeof p, "c.%ld", i);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) bad("create", i);
        int rd = open(p, O_RDONLY);
        if (rd < 0) bad("open of the new name", i);
        if (open(p, O_WRONLY | O_CREAT | O_EXCL, 0600) >= 0 || errno != EEXIST) bad("second O_EXCL create", i);
        snprintf(line, sizeof line, "%ld\n", i);
        put(fd, line, i);
        char back[64] = {0};
        if (pread(rd, back, sizeof back - 1, 0) != (ssize_t)strlen(line) || strcmp(back, line) != 0) bad("read back", i);
        if (fchmod(fd, 0640) != 0) bad("fchmod", i);
        expect_mode(p, 0640, i);
        int again = open(p, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (again < 0) bad("open with O_CREAT of an existing name", i);
        put(again, "again\n", i);
        if (close(again) != 0 || close(fd) != 0 || close(rd) != 0) bad("close", i);
        struct timespec ts[2] = {{i * 1000, 0}, {i * 1000, 0}};
        if (utimensat(AT_FDCWD, p, ts, 0) != 0) bad("utimensat", i);
        expect_mtime(p, i * 1000, i);
        path_of(p, sizeof p, "o.%ld", i);
        int ro = open(p, O_RDONLY | O_CREAT, 0444);
        if (ro < 0) bad("read-only create", i);
        if (write(ro, "x", 1) != -1 || errno != EBADF) bad("write to a read-only creation", i);
        if (close(ro) != 0) bad("close", i);
        expect_mode(p, 0444, i);
        path_of(p, sizeof p, "f.%ld", i);
        if (mknod(p, S_IFIFO | 0600, 0) != 0) bad("mknod fifo", i);
        path_of(p, sizeof p, "r.%ld", i);
        if (mknod(p, S_IFREG | 0644, 0) != 0) bad("mknod file", i);
        if (chmod(p, 0600) != 0) bad("chmod", i);
        expect_mode(p, 0600, i);
        struct timeval tv[2] = {{i * 1000 + 1, 0}, {i * 1000 + 1, 0}};
        if (utimes(p, tv) != 0) bad("utimes", i);
        expect_mtime(p, i * 1000 + 1, i);
        printf("iter %ld\n", i);
    }
    printf("done %ld\n", n);
    exit((int)(acc & 0));
}

// trunc: DIR holds TRUNC_FILES files "t.K", each "start K\n" (made here when missing), and the directory "ready"
// (made before GO: on shared storage it appears once the backup holds the log up to it). Iteration I
// works on "t.(I%4)": it opens it read-only, then again with O_TRUNC — O_WRONLY|O_TRUNC on odd iterations,
// O_RDWR|O_CREAT|O_TRUNC on even ones — and checks, before that truncation can have reached the storage, that the
// first descriptor reads nothing and the second's fstat says 0 bytes; it writes "t K iteration I" through the
// second, reads it back through the first; every third iteration it opens the file O_RDONLY|O_TRUNC (which Linux
// truncates as well), reads nothing through it and writes "again I" through the second descriptor.
#define TRUNC_FILES 4

static void expect_read(int fd, const char *want, long i)
{
    char back[128] = {0};
    ssize_t n = pread(fd, back, sizeof back - 1, 0);
    if (n != (ssize_t)strlen(want) || strcmp(back, want) != 0) { printf("BAD read at iteration %ld: %zd bytes \"%s\", expected \"%s\"\n", i, n, back, want); exit(1); }
}

static void trunc_mode(long n, long work, const char *go)
{
    char p[512], line[64], start[32];
    uint64_t acc = 1;
    for (int k = 0; k < TRUNC_FILES; k++) {
        path_of(p, sizeof p, "t.%ld", k);
        int fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 && errno == EEXIST) continue;
        snprintf(start, sizeof start, "start %d\n", k);
        if (fd < 0) bad("create t", -1);
        put(fd, start, -1);
        if (close(fd) != 0) bad("close", -1);
    }
    path_of(p, sizeof p, "ready", 0);
    if (mkdir(p, 0755) != 0) bad("mkdir ready", -1);
    wait_for(go);
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < work; k++) acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        meta_sink = acc;
        path_of(p, sizeof p, "t.%ld", i % TRUNC_FILES);
        int rd = open(p, O_RDONLY);
        if (rd < 0) bad("open t read-only", i);
        int fd = open(p, i % 2 ? O_WRONLY | O_TRUNC : O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) bad("open with O_TRUNC", i);
        expect_read(rd, "", i);
        struct stat st;
        if (fstat(fd, &st) != 0 || st.st_size != 0) { printf("BAD size after O_TRUNC at iteration %ld: %ld\n", i, (long)st.st_size); exit(1); }
        snprintf(line, sizeof line, "t %ld iteration %ld\n", i % TRUNC_FILES, i);
        put(fd, line, i);
        expect_read(rd, line, i);
        if (i % 3 == 2) {
            int rt = open(p, O_RDONLY | O_TRUNC);
            if (rt < 0) bad("open O_RDONLY|O_TRUNC", i);
            expect_read(rt, "", i);
            if (write(rt, "x", 1) != -1 || errno != EBADF) bad("write through O_RDONLY|O_TRUNC", i);
            snprintf(line, sizeof line, "again %ld\n", i);
            if (pwrite(fd, line, strlen(line), 0) != (ssize_t)strlen(line)) bad("pwrite", i);
            expect_read(rt, line, i);
            if (close(rt) != 0) bad("close", i);
        }
        if (close(fd) != 0 || close(rd) != 0) bad("close", i);
        printf("iter %ld\n", i);
    }
    printf("done %ld\n", n);
    exit((int)(acc & 0));
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s DIR ITERATIONS [WORK]\n", argv[0]); return 2; }
    dir = argv[1];
    long n = atol(argv[2]);
    long work = argc > 3 ? atol(argv[3]) : 20000;
    int data = !(argc > 4 && strcmp(argv[4], "names") == 0);
    const char *go = argc > 5 ? argv[5] : NULL;
    setvbuf(stdout, NULL, _IONBF, 0);
    umask(022);
    if (argc > 4 && strcmp(argv[4], "meta") == 0) meta(n, work, go);
    if (argc > 4 && strcmp(argv[4], "trunc") == 0) trunc_mode(n, work, go);
    char p[512], q[512], line[64];
    int cur = open_cur(-1);
    path_of(p, sizeof p, "state", 0);
    int state = open(p, O_RDWR | O_CREAT, 0644);
    if (state < 0) bad("open state", -1);
    path_of(p, sizeof p, "tfile", 0);
    int tf = open(p, O_WRONLY | O_CREAT, 0644);
    if (tf < 0 || close(tf) != 0) bad("create tfile", -1);
    uint64_t acc = 1;
    wait_for(go);
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < work; k++) acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        snprintf(line, sizeof line, "line %ld\n", i);
        if (data) put(cur, line, i);
        path_of(p, sizeof p, "tfile", 0);
        path_of(q, sizeof q, "h.%ld", i);
        if (link(p, q) != 0) bad("link", i);
        snprintf(line, sizeof line, "n.%ld", i);
        path_of(q, sizeof q, "s.%ld", i);
        if (symlink(line, q) != 0) bad("symlink", i);
        path_of(p, sizeof p, "n.%ld", i);
        if (mkdir(p, 0755) != 0) bad("mkdir", i);
        if (i % 3 == 2) {
            path_of(p, sizeof p, "cur", 0);
            path_of(q, sizeof q, "n.%ld/log", i);
            if (rename(p, q) != 0) bad("rename", i);
            snprintf(line, sizeof line, "moved to n.%ld\n", i);
            if (data) put(cur, line, i);
            if (close(cur) != 0) bad("close", i);
            cur = open_cur(i);
        }
        if (i >= 6) {
            long old = i - 6;
            path_of(p, sizeof p, "h.%ld", old);
            if (unlink(p) != 0) bad("unlink h", i);
            path_of(p, sizeof p, "s.%ld", old);
            if (unlink(p) != 0) bad("unlink s", i);
            if (old % 3 == 2) {
                path_of(p, sizeof p, "n.%ld/log", old);
                if (unlink(p) != 0) bad("unlink", i);
            }
            path_of(p, sizeof p, "n.%ld", old);
            if (rmdir(p) != 0) bad("rmdir", i);
        }
        char rec[32];
        snprintf(rec, sizeof rec, "count %013ld\n", i + 1); // 20 bytes
        if (!data) { printf("iter %ld\n", i); continue; }
        if (pwrite(state, rec, 20, 0) != 20) bad("pwrite state", i);
        if (i % 4 == 3) {
            struct stat st;
            off_t len = 20 + i % 7;
            if (ftruncate(state, len) != 0) bad("ftruncate", i);
            if (fstat(state, &st) != 0 || st.st_size != len) { printf("BAD state size at iteration %ld: %ld\n", i, (long)st.st_size); return 1; }
        }
        if (i % 5 == 4) {
            struct stat st;
            path_of(p, sizeof p, "tfile", 0);
            if (truncate(p, i % 11) != 0) bad("truncate", i);
            if (stat(p, &st) != 0 || st.st_size != i % 11) { printf("BAD tfile size at iteration %ld: %ld\n", i, (long)st.st_size); return 1; }
        }
        printf("iter %ld\n", i);
    }
    if (close(cur) != 0 || close(state) != 0) bad("close at the end", n);
    printf("done %ld\n", n);
    return (int)(acc & 0);
}
