// wildptr: prints "before", flushes, then stores through (int *)0x10.
// Expected to die from SIGSEGV (shell status 139).  Exit 1 if it survives.
#include <stdint.h>
#include <stdio.h>

int main(void)
{
    printf("before\n");
    fflush(stdout);
    volatile int *p = (volatile int *)(uintptr_t)0x10;
    *p = 42;
    printf("after\n");
    return 1;
}
