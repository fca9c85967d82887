// badsyscall: invokes syscall number 1000 (not a Linux syscall) and prints the
// return value and errno; expected "-1 38" (ENOSYS).  Exit 0 if so, else 1.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void)
{
    errno = 0;
    long r = syscall(1000, 1, 2, 3);
    int e = errno;
    printf("syscall(1000) = %ld errno = %d (%s)\n", r, e, e == ENOSYS ? "ENOSYS" : "unexpected");
    /* a raw syscall instruction with a huge number must also give -ENOSYS */
    long raw;
    __asm__ volatile("syscall" : "=a"(raw) : "a"(0x7fffffffL) : "rcx", "r11", "memory");
    printf("raw syscall(0x7fffffff) = %ld\n", raw);
    return (r == -1 && e == ENOSYS && raw == -ENOSYS) ? 0 : 1;
}
