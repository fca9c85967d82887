// rmroot: removes its own program file, then tries to remove the root directory itself in every spelling.
// Usage: rmroot  (run as /rmroot under a root holding only this program)
// Prints one line per step: "<step> <errno, 0 when it succeeded>". Inside a VM with --root DIR, DIR must survive.
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

static void step(const char *what, int r) { printf("%s %d\n", what, r == 0 ? 0 : errno); }

int main(int argc, char **argv)
{
    (void)argc;
    step("unlink-self", unlink(argv[0]));
    step("rmdir-root", rmdir("/"));
    step("rmdir-dot", rmdir("/."));
    step("rmdir-dotdot", rmdir("/.."));
    step("unlink-root", unlink("/"));
    step("rename-root", rename("/", "/x"));
    return 0;
}
