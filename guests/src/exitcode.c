// exitcode: exits with the status given in argv[1] (default 0), after
// printing it.  exit(N) keeps only the low 8 bits, e.g. 256 -> 0, -1 -> 255.
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int code = argc > 1 ? atoi(argv[1]) : 0;
    printf("exiting with %d\n", code);
    exit(code);
}
