// storelog: the storage workload of the shared-storage tests. In DIR it appends numbered lines to "log"
// (O_APPEND), rewrites a fixed-width record in place in "state" (pwrite at 0) and one of 16 slots of "table"
// (lseek + write) each iteration, and checks what it wrote by reading it back: the state record every fourth
// iteration (pread), the log's size (fstat and lseek SEEK_END) every tenth. It prints "line I" per iteration.
// Usage: storelog DIR ITERATIONS [WORK]
// At the end it reads the whole log back and prints "verified N lines" (or "BAD ..." and exits 1). The files'
// content depends only on ITERATIONS: a run killed and continued elsewhere must leave exactly a native run's files.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int open_in(const char *dir, const char *name, int flags)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, flags, 0644);
    if (fd < 0) { perror(path); exit(1); }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s DIR ITERATIONS [WORK]\n", argv[0]); return 2; }
    const char *dir = argv[1];
    long n = atol(argv[2]);
    long work = argc > 3 ? atol(argv[3]) : 20000;
    setvbuf(stdout, NULL, _IONBF, 0);
    int log = open_in(dir, "log", O_WRONLY | O_CREAT | O_APPEND);
    int state = open_in(dir, "state", O_RDWR | O_CREAT);
    int table = open_in(dir, "table", O_RDWR | O_CREAT);
    uint64_t acc = 1;
    long logBytes = 0;
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < work; k++) acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        char line[64];
        int len = snprintf(line, sizeof line, "line %ld\n", i);
        if (write(log, line, (size_t)len) != len) { perror("write log"); return 1; }
        logBytes += len;
        if (i % 4 == 0 && i > 0) {
            char back[32] = {0};
            long seen = -1;
            if (pread(state, back, 20, 0) != 20 || sscanf(back, "count %ld", &seen) != 1 || seen != i) {
                printf("BAD state before iteration %ld: %.20s\n", i, back);
                return 1;
            }
        }
        char rec[32];
        snprintf(rec, sizeof rec, "count %013ld\n", i + 1); // 20 bytes
        if (pwrite(state, rec, 20, 0) != 20) { perror("pwrite state"); return 1; }
        char slot[32];
        snprintf(slot, sizeof slot, "slot %2ld written at %011ld\n", i % 16, i); // 31 bytes with the newline
        if (lseek(table, (i % 16) * 31, SEEK_SET) < 0 || write(table, slot, 31) != 31) { perror("table"); return 1; }
        if (i % 10 == 9) {
            struct stat st;
            off_t end = lseek(log, 0, SEEK_END);
            if (fstat(log, &st) != 0 || st.st_size != logBytes || end != logBytes) {
                printf("BAD log size at iteration %ld: fstat %ld, SEEK_END %ld, written %ld\n", i, (long)st.st_size, (long)end, logBytes);
                return 1;
            }
        }
        printf("line %ld\n", i);
    }
    close(log);
    close(state);
    close(table);
    char path[512];
    snprintf(path, sizeof path, "%s/log", dir);
    FILE *f = fopen(path, "r");
    if (!f) { perror("fopen"); return 1; }
    char got[64];
    long i = 0;
    while (fgets(got, sizeof got, f)) {
        char want[64];
        snprintf(want, sizeof want, "line %ld\n", i);
        if (strcmp(got, want) != 0) { printf("BAD line %ld: %s", i, got); return 1; }
        i++;
    }
    fclose(f);
    if (i != n) { printf("BAD: %ld lines, expected %ld\n", i, n); return 1; }
    printf("verified %ld lines\n", i);
    return (int)(acc & 0);
}
