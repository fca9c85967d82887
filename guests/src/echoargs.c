// echoargs: prints argc/argv, the HOME and PATH environment variables (if
// set), AT_PAGESZ from the aux vector, then reads stdin to EOF and prints its
// length and an FNV-1a checksum.  Exit 0.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) printf("argv[%d]=\"%s\"\n", i, argv[i]);
    printf("argv[argc]=%s\n", argv[argc] == NULL ? "NULL" : "non-NULL");
    static const char *vars[] = { "HOME", "PATH" };
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(vars[i]);
        if (v) printf("%s=%s\n", vars[i], v);
        else printf("%s is unset\n", vars[i]);
    }
    printf("AT_PAGESZ=%lu\n", getauxval(AT_PAGESZ));

    uint64_t h = 0xcbf29ce484222325ULL;
    unsigned long long len = 0;
    unsigned char buf[4096];
    ssize_t n;
    while ((n = read(0, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++) h = (h ^ buf[i]) * 0x100000001b3ULL;
        len += (unsigned long long)n;
    }
    if (n < 0) perror("read");
    printf("stdin: %llu bytes, fnv1a %016llx\n", len, (unsigned long long)h);
    return 0;
}
