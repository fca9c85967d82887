// filelog: writes numbered records to a file under the guest root through one descriptor that stays open,
// reading each tenth record back (lseek + read, so the descriptor's offset matters), and prints a line per record.
// Usage: filelog PATH RECORDS [WORK]
// At the end it re-opens the file, checks that it holds exactly records 0..RECORDS-1 and prints
// "verified N records" (or "BAD ..." and exits 1). Used by the failover tests: a backup that takes over must
// continue on its own copy of the file at the right offset.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: %s PATH RECORDS [WORK]\n", argv[0]); return 2; }
    const char *path = argv[1];
    long n = atol(argv[2]);
    long work = argc > 3 ? atol(argv[3]) : 20000;
    setvbuf(stdout, NULL, _IONBF, 0);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    uint64_t acc = 1;
    for (long i = 0; i < n; i++) {
        for (long k = 0; k < work; k++) acc = acc * 6364136223846793005ULL + 1442695040888963407ULL;
        char rec[64];
        int len = snprintf(rec, sizeof rec, "record %ld\n", i);
        if (write(fd, rec, (size_t)len) != len) { perror("write"); return 1; }
        if (i % 10 == 9) {
            off_t end = lseek(fd, 0, SEEK_CUR);
            char back[64] = {0};
            lseek(fd, end - len, SEEK_SET);
            if (read(fd, back, (size_t)len) != len || memcmp(back, rec, (size_t)len) != 0) {
                printf("BAD read-back at record %ld\n", i);
                return 1;
            }
        }
        printf("line %ld\n", i);
    }
    close(fd);
    FILE *f = fopen(path, "r");
    if (!f) { perror("fopen"); return 1; }
    char line[64];
    long i = 0;
    while (fgets(line, sizeof line, f)) {
        char want[64];
        snprintf(want, sizeof want, "record %ld\n", i);
        if (strcmp(line, want) != 0) { printf("BAD record %ld: %s", i, line); return 1; }
        i++;
    }
    fclose(f);
    if (i != n) { printf("BAD: %ld records, expected %ld\n", i, n); return 1; }
    printf("verified %ld records\n", i);
    return (int)(acc & 0);
}
