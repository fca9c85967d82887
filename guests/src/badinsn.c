// badinsn: prints "before", flushes, then executes ud2.  Expected to die
// from SIGILL (shell status 132).  Prints "after" (exit 1) if it survives.
#include <stdio.h>

int main(void)
{
    printf("before\n");
    fflush(stdout);
    __asm__ volatile("ud2");
    printf("after\n");
    return 1;
}
