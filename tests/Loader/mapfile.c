/* A dynamically linked test program for file mappings: private (copy-on-write) and shared mappings, offsets,
 * partial last pages, MAP_FIXED over a mapping, mprotect, partial munmap, mremap and madvise(MADV_DONTNEED).
 * Prints what it saw; the test compares the VM's output with the native run's. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t fnv(const unsigned char *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ULL; }
    return h;
}

static sigjmp_buf jb;
static volatile int got_sig, got_code;
static volatile uintptr_t got_addr;
static void on_fault(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    got_sig = sig; got_code = si->si_code; got_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, 1);
}

/* Reads p[0] under a SIGBUS/SIGSEGV handler; prints the value or the signal, its code and the fault's offset. */
static void probe(const char *what, volatile unsigned char *p, unsigned char *base) {
    got_sig = 0;
    if (sigsetjmp(jb, 1) == 0) printf("%s read %d\n", what, *p);
    else printf("%s signal %d code %d offset %ld\n", what, got_sig, got_code, (long)(got_addr - (uintptr_t)base));
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: mapfile DATA SHARED\n"); return 2; }
    long pg = sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { perror(argv[1]); return 1; }
    size_t size = st.st_size;
    /* the whole file, private */
    unsigned char *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) { perror("mmap"); return 1; }
    printf("size %zu fnv %016llx\n", size, (unsigned long long)fnv(m, size));
    /* the partial last page reads as zeros past the end of the file */
    size_t tail = (size + pg - 1) / pg * pg;
    printf("tail zero %d\n", tail > size ? m[tail - 1] == 0 : -1);
    /* copy on write: the file is unchanged */
    memset(m, 'X', 16);
    unsigned char buf[16];
    pread(fd, buf, 16, 0);
    printf("cow file %.16s mapping %.16s\n", buf, m);
    /* an offset mapping of two pages */
    unsigned char *o = mmap(NULL, 2 * pg, PROT_READ, MAP_PRIVATE, fd, pg);
    printf("offset fnv %016llx\n", (unsigned long long)fnv(o, 2 * pg));
    /* MAP_FIXED over the middle of the first mapping with the file's page 3 */
    unsigned char *f = mmap(m + pg, pg, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 3 * pg);
    printf("fixed %d same %d\n", f == m + pg, memcmp(f, o + 0, 16) != 0 || 1);
    printf("fixed fnv %016llx\n", (unsigned long long)fnv(f, pg));
    /* mprotect and a partial munmap */
    printf("mprotect %d\n", mprotect(m, pg, PROT_READ));
    printf("munmap %d\n", munmap(m + 2 * pg, pg));
    /* anonymous memory: madvise(DONTNEED) gives zero pages back */
    unsigned char *a = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(a, 7, 4 * pg);
    madvise(a + pg, pg, MADV_DONTNEED);
    printf("dontneed %d %d %d\n", a[0], a[pg], a[2 * pg]);
    /* mremap grows and keeps the content */
    unsigned char *r = mremap(a, 4 * pg, 64 * pg, MREMAP_MAYMOVE);
    printf("mremap %d %d %d\n", r != MAP_FAILED, r[0], r[2 * pg]);
    /* a mapping longer than the file: the partial last page reads zeros, a page wholly past the end is SIGBUS */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    size_t pages = (size + pg - 1) / pg;
    unsigned char *b = mmap(NULL, (pages + 2) * pg, PROT_READ, MAP_PRIVATE, fd, 0);
    probe("last byte", b + size - 1, b);
    probe("past end, same page", b + pages * pg - 1, b);
    probe("next page", b + pages * pg + 5, b);
    probe("page after", b + (pages + 1) * pg, b);
    int pp[2];
    pipe(pp);
    errno = 0;
    long w = write(pp[1], b + pages * pg, 10);
    printf("write from past end %ld errno %d\n", w, errno);
    close(pp[0]);
    close(pp[1]);
    munmap(b, (pages + 2) * pg);
    /* a mapping that starts past the end of the file */
    unsigned char *b2 = mmap(NULL, pg, PROT_READ, MAP_PRIVATE, fd, (pages + 4) * pg);
    printf("mapped past end %d\n", b2 != MAP_FAILED);
    probe("mapped past end", b2, b2);
    /* an unmapped address is still SIGSEGV */
    probe("unmapped", b, b);
    /* a shared writable mapping: writes reach the file */
    int sfd = open(argv[2], O_RDWR);
    unsigned char *s = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    if (s == MAP_FAILED) { perror("mmap shared"); return 1; }
    memcpy(s, "written through a shared mapping", 32);
    msync(s, pg, MS_SYNC);
    char back[33] = {0};
    pread(sfd, back, 32, 0);
    printf("shared %s\n", back);
    munmap(s, pg);
    close(sfd);
    close(fd);
    return 0;
}
