// readpath: read(2)/pread(2)/readv(2) of regular files into every kind of guest memory.
// Usage: readpath FILE DIR.  FILE is a file older than the run (a recording may log its reads by reference),
// DIR a directory where the program writes a fresh file (whose reads are logged by value).
// Reads that cross pages, short reads at the end of a file, reads past it, a bad buffer (EFAULT, nothing written),
// a read-only mapping, fresh untouched pages, a read too long for one call's page list, a copy-on-write page
// after fork, and a read over code the program is running (the next call runs the new code). Prints sizes,
// return values, errno names and FNV-1a sums of the buffers only, so the output is the same wherever it runs.
// Exit 0 if everything behaved as expected, 1 otherwise.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static const char *errname(int e)
{
    switch (e) {
    case EFAULT: return "EFAULT";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    default: return "other";
    }
}

static void report(const char *what, long rc, const void *buf, size_t n)
{
    int e = errno;
    printf("%-28s rc=%ld errno=%s sum=%016llx\n", what, rc, rc < 0 ? errname(e) : "0",
           (unsigned long long)(buf ? fnv(buf, n) : 0));
}

static void expect(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL %s\n", what);
        failures++;
    }
}

typedef int (*fn_t)(void);

static long run_code(fn_t f, int times)
{
    long s = 0;
    for (int i = 0; i < times; i++) s += f();
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: readpath FILE DIR\n");
        return 2;
    }
    const long page = 4096;
    int fd = open(argv[1], O_RDONLY);
    expect(fd >= 0, "open FILE");
    struct stat st;
    expect(fstat(fd, &st) == 0, "fstat FILE");
    expect(st.st_size > 1600 * 1024, "FILE larger than 1.6 MB");
    long size = st.st_size;

    // across pages, at odd offsets, read() and then pread()
    unsigned char *buf = malloc(4 * page);
    memset(buf, 0x5a, 4 * page);
    long r = read(fd, buf + 4000, 9000);
    report("read across pages", r, buf, 4 * page);
    r = read(fd, buf + 1, 600);
    report("read continues", r, buf, 4 * page);
    r = pread(fd, buf + 1, 2 * page, 12345);
    report("pread across pages", r, buf, 4 * page);
    r = pread(fd, buf, 4096, size - 700);
    report("pread short at end", r, buf, 4 * page);
    r = pread(fd, buf, 4096, size + 10);
    report("pread past end", r, buf, 4 * page);
    printf("offset after reads %ld\n", (long)lseek(fd, 0, SEEK_CUR));

    // bad buffers: EFAULT, the file offset and the memory untouched
    errno = 0;
    r = read(fd, NULL, 4096);
    report("read into NULL", r, NULL, 0);
    volatile uintptr_t low = 16; // an address in page 0 (never mapped)
    errno = 0;
    r = read(fd, (void *)low, 600);
    report("read into page 0", r, NULL, 0);
    unsigned char *ro = mmap(NULL, 2 * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = 0;
    r = read(fd, ro + 100, 2000);
    report("read into read-only", r, ro, 2 * page);
    printf("offset after faults %ld\n", (long)lseek(fd, 0, SEEK_CUR));

    // fresh pages nobody touched yet, and readv with two pieces
    unsigned char *fresh = mmap(NULL, 16 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    r = pread(fd, fresh + 100, 15 * page, 4096 * 7);
    report("pread into fresh pages", r, fresh, 16 * page);
    struct iovec iov[2] = { { fresh + 3, 700 }, { fresh + 5 * page - 10, 3000 } };
    r = readv(fd, iov, 2);
    report("readv two pieces", r, fresh, 16 * page);

    // longer than one call's page list
    long big = 1536 * 1024 + 123;
    unsigned char *large = malloc(big);
    memset(large, 1, big);
    r = pread(fd, large, big, 77);
    report("pread 1.5 MB", r, large, big);
    expect(r == big, "1.5 MB read whole");

    // copy-on-write after fork: the child's read does not show in the parent
    memset(buf, 0x33, 4 * page);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        r = pread(fd, buf + 10, 3 * page, 999);
        report("child pread", r, buf, 4 * page);
        fflush(stdout);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    report("parent buffer after child", 0, buf, 4 * page);

    // a read over code that runs: the next call runs the bytes read
    char path[4096];
    snprintf(path, sizeof path, "%s/readpath.dat", argv[2]);
    int out = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    expect(out >= 0, "create DIR/readpath.dat");
    unsigned char codebytes[1024];
    memset(codebytes, 0x90, sizeof codebytes);                      // nops
    const unsigned char ret42[] = { 0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3 }; // mov eax, 42; ret
    memcpy(codebytes + sizeof codebytes - sizeof ret42, ret42, sizeof ret42);
    expect(write(out, codebytes, sizeof codebytes) == sizeof codebytes, "write code bytes");
    unsigned char *code = mmap(NULL, page, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    const unsigned char ret7[] = { 0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3 };   // mov eax, 7; ret
    memcpy(code, ret7, sizeof ret7);
    printf("code before %ld\n", run_code((fn_t)code, 20000));
    expect(pread(out, code, sizeof codebytes, 0) == sizeof codebytes, "read code");
    printf("code after %ld\n", run_code((fn_t)code, 20000));

    // a file written in this run (not stable: logged by value), read in pieces to its end
    unsigned char *pattern = malloc(50000);
    for (int i = 0; i < 50000; i++) pattern[i] = (unsigned char)(i * 7 + (i >> 8));
    expect(pwrite(out, pattern, 50000, 0) == 50000, "write pattern");
    expect(lseek(out, 0, SEEK_SET) == 0, "rewind");
    unsigned char *back = calloc(1, 50000 + 30000 + page); // room for every piece asked for
    long got = 0;
    const int pieces[] = { 5000, 20000, 30000, 30000 };
    for (int i = 0; i < 4; i++) {
        r = read(out, back + got, pieces[i]);
        char what[64];
        snprintf(what, sizeof what, "fresh file piece %d", i);
        report(what, r, back, 50000);
        if (r > 0) got += r;
    }
    expect(got == 50000 && memcmp(back, pattern, 50000) == 0, "fresh file read back whole");
    close(out);
    unlink(path);
    close(fd);
    printf("failures %d\n", failures);
    return failures ? 1 : 0;
}
