// bigmap: asks for more memory than the address space holds and checks the refusals are ENOMEM, then that memory
// still works. A mapping of the whole 128 TiB user half fails with ENOMEM; mappings of 1 TiB are taken until one
// fails (Linux's overcommit heuristic refuses the first, a VM that maps lazily runs out of address space later), each
// touched at both ends; after unmapping them a 16 MiB mapping is touched whole and reads back.
// Prints "whole ENOMEM", "tib N ENOMEM" and "after ok"; exit 1 on any other outcome.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define TIB (1ULL << 40)
#define MAXMAPS 256

int main(void)
{
    void *whole = mmap(NULL, 1ULL << 47, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (whole != MAP_FAILED || errno != ENOMEM) { printf("whole mapped or errno %d\n", errno); return 1; }
    printf("whole ENOMEM\n");
    static char *maps[MAXMAPS];
    int n = 0;
    for (; n < MAXMAPS; n++) {
        void *p = mmap(NULL, TIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) break;
        maps[n] = p;
        maps[n][0] = 1;
        maps[n][TIB - 1] = 2;
        if (maps[n][4096] != 0) { printf("a fresh page is not zero\n"); return 1; }
    }
    if (n == MAXMAPS || errno != ENOMEM) { printf("tib %d errno %d\n", n, errno); return 1; }
    printf("tib %s ENOMEM\n", n == 0 ? "0" : "N");
    for (int i = 0; i < n; i++) munmap(maps[i], TIB);
    size_t bytes = 16 << 20;
    uint64_t *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { printf("16 MiB refused\n"); return 1; }
    for (size_t i = 0; i < bytes / 8; i++) m[i] = i;
    for (size_t i = 0; i < bytes / 8; i++) if (m[i] != i) { printf("readback\n"); return 1; }
    printf("after ok\n");
    return 0;
}
