// forkbig: the cost of fork for a process with much memory touched (benchmark; bench/run.py).
//   usage: forkbig MIB FORKS
// Touches MIB MiB of heap (every page written), then forks FORKS times; each child reads one byte of its own page
// and exits with it, the parent waits. Prints a checksum of the exit statuses.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) { fprintf(stderr, "usage: forkbig MIB FORKS\n"); return 2; }
    size_t size = (size_t)atoi(argv[1]) << 20;
    int forks = atoi(argv[2]);
    unsigned char *buf = malloc(size);
    if (!buf) return 1;
    for (size_t i = 0; i < size; i += 4096) buf[i] = (unsigned char)(i >> 12);
    unsigned sum = 0;
    for (int k = 0; k < forks; k++) {
        pid_t c = fork();
        if (c < 0) return 1;
        if (c == 0) _exit(buf[((size_t)k * 4096 * 37) % size] & 0x7f);
        int st;
        waitpid(c, &st, 0);
        sum = sum * 31 + (unsigned)WEXITSTATUS(st);
    }
    printf("%u\n", sum);
    return 0;
}
