// forkbomb: forks children that wait on a pipe until fork fails (or MAX children), then lets them all go and
// reaps them.  Prints how many were forked, what stopped it and how many were reaped.  Exit 0 when fork stopped
// with EAGAIN and every child was reaped; 1 otherwise.  (Run it only under a process limit: the VM's.)
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX 100000

int main(void)
{
    int p[2];
    if (pipe(p) != 0) return 1;
    int n = 0, err = 0;
    while (n < MAX) {
        pid_t c = fork();
        if (c < 0) { err = errno; break; }
        if (c == 0) {
            char b;
            close(p[1]);
            while (read(p[0], &b, 1) > 0) {}
            _exit(7);
        }
        n++;
    }
    close(p[1]);
    int reaped = 0, status, good = 1;
    while (wait(&status) > 0) {
        reaped++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 7) good = 0;
    }
    printf("forked %d children; stopped by %s; reaped %d\n", n, err == EAGAIN ? "EAGAIN" : err ? strerror(err) : "none", reaped);
    return err == EAGAIN && reaped == n && good ? 0 : 1;
}
