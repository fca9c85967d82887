// nondet_random: prints 16 bytes from getrandom(), 16 bytes read from
// /dev/urandom and getpid(), in hex/decimal.  Output differs run to run.
// Exit 1 if a source fails.
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

static void hex(const char *label, const unsigned char *b, int n)
{
    printf("%s ", label);
    for (int i = 0; i < n; i++) printf("%02x", b[i]);
    printf("\n");
}

int main(void)
{
    unsigned char a[16], b[16];
    int ok = 1;
    ssize_t n = getrandom(a, sizeof a, 0);
    if (n != (ssize_t)sizeof a) { printf("getrandom failed: %zd\n", n); ok = 0; }
    else hex("getrandom   ", a, 16);

    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0) { printf("open /dev/urandom failed\n"); ok = 0; }
    else {
        size_t got = 0;
        while (got < sizeof b) {
            ssize_t r = read(fd, b + got, sizeof b - got);
            if (r <= 0) break;
            got += (size_t)r;
        }
        close(fd);
        if (got != sizeof b) { printf("short read from /dev/urandom\n"); ok = 0; }
        else hex("/dev/urandom", b, 16);
    }
    printf("pid          %d\n", (int)getpid());
    return ok ? 0 : 1;
}
