// execerrs: execve's errors as Linux gives them, and children that crash.
//   usage: execerrs DIR     (DIR: an empty directory to make test files in)
// execve of a missing file (ENOENT), a directory and a file without the execute bit (EACCES), a file with the bit
// that is neither ELF nor "#!" (ENOEXEC), an argument over 128 KiB and arguments over the stack's quarter (E2BIG);
// a 32-bit ELF is reported as what happened (run, or the errno). A child that dereferences NULL and one that runs
// ud2: the parent sees SIGSEGV and SIGILL in the wait status. The failing exec leaves the caller running.
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e)
{
    switch (e) {
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case ENOEXEC: return "ENOEXEC";
    case E2BIG: return "E2BIG";
    case ENOTDIR: return "ENOTDIR";
    case ELOOP: return "ELOOP";
    default: return strerror(e);
    }
}

/* runs execve in a child; prints what the child saw (an errno, or how the program it ran ended) */
static void try_exec(const char *what, const char *path, char *const argv[])
{
    int p[2];
    if (pipe(p)) exit(1);
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        fcntl(p[1], F_SETFD, FD_CLOEXEC);
        char *envp[] = { NULL };
        execve(path, argv, envp);
        int e = errno;
        if (write(p[1], &e, sizeof e) != sizeof e) _exit(2);
        _exit(0);
    }
    close(p[1]);
    int e = 0;
    ssize_t n = read(p[0], &e, sizeof e);
    close(p[0]);
    int st;
    waitpid(c, &st, 0);
    if (n == sizeof e) printf("%s: %s\n", what, errname(e));
    else if (WIFEXITED(st)) printf("%s: ran, exit %d\n", what, WEXITSTATUS(st));
    else printf("%s: ran, killed by signal %d\n", what, WTERMSIG(st));
}

static void write_file(const char *path, const void *bytes, size_t n, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    if (fd < 0 || write(fd, bytes, n) != (ssize_t)n) { perror(path); exit(1); }
    close(fd);
    chmod(path, mode);
}

/* a minimal i386 ELF executable: exit(7) with int $0x80 */
static void write_elf32(const char *path)
{
    unsigned char f[84 + 12];
    memset(f, 0, sizeof f);
    const unsigned char ident[16] = { 0x7f, 'E', 'L', 'F', 1, 1, 1, 0 };
    memcpy(f, ident, 16);
    uint16_t h16[] = { 2 /* ET_EXEC */, 3 /* EM_386 */ };
    memcpy(f + 16, h16, 4);
    uint32_t version = 1, entry = 0x08048000 + 84, phoff = 52, shoff = 0, flags = 0;
    memcpy(f + 20, &version, 4);
    memcpy(f + 24, &entry, 4);
    memcpy(f + 28, &phoff, 4);
    memcpy(f + 32, &shoff, 4);
    memcpy(f + 36, &flags, 4);
    uint16_t sizes[] = { 52, 32, 1, 40, 0, 0 };
    memcpy(f + 40, sizes, 12);
    uint32_t ph[8] = { 1 /* PT_LOAD */, 0, 0x08048000, 0x08048000, sizeof f, sizeof f, 5 /* R+X */, 0x1000 };
    memcpy(f + 52, ph, 32);
    /* mov $1,%eax; mov $7,%ebx; int $0x80 */
    const unsigned char code[] = { 0xb8, 1, 0, 0, 0, 0xbb, 7, 0, 0, 0, 0xcd, 0x80 };
    memcpy(f + 84, code, sizeof code);
    write_file(path, f, sizeof f, 0755);
}

static void crash(int how)
{
    pid_t c = fork();
    if (c == 0) {
        if (how == 0) { volatile int *p = NULL; *p = 1; }
        else __asm__ volatile("ud2");
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
    printf("child that %s: %s %d\n", how == 0 ? "dereferences NULL" : "runs ud2",
           WIFSIGNALED(st) ? "killed by signal" : "exited", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: execerrs DIR\n"); return 2; }
    char path[512];
    char *args[] = { "prog", NULL };

    snprintf(path, sizeof path, "%s/missing", argv[1]);
    try_exec("missing file", path, args);
    try_exec("directory", argv[1], args);
    snprintf(path, sizeof path, "%s/noexec", argv[1]);
    write_file(path, "#!/bin/sh\necho hi\n", 18, 0644);
    try_exec("script without the execute bit", path, args);
    snprintf(path, sizeof path, "%s/text", argv[1]);
    write_file(path, "just some text\n", 15, 0755);
    try_exec("executable text without #!", path, args);
    snprintf(path, sizeof path, "%s/empty", argv[1]);
    write_file(path, "", 0, 0755);
    try_exec("empty executable", path, args);
    snprintf(path, sizeof path, "%s/badinterp", argv[1]);
    write_file(path, "#!/nonexistent/interpreter\n", 27, 0755);
    try_exec("#! naming a missing interpreter", path, args);
    snprintf(path, sizeof path, "%s/notdir/x", argv[1]);
    char tp[512];
    snprintf(tp, sizeof tp, "%s/text", argv[1]);
    snprintf(path, sizeof path, "%s/x", tp);
    try_exec("a path through a file", path, args);

    /* E2BIG: one string over MAX_ARG_STRLEN (128 KiB), and 40 strings of 100 KiB (over 2 MiB in all) */
    char *big = malloc(200 * 1024);
    memset(big, 'a', 200 * 1024 - 1);
    big[200 * 1024 - 1] = 0;
    char *one[] = { "prog", big, NULL };
    try_exec("an argument of 200 KiB", "/bin/true", one);
    char *many[42];
    char *mid = malloc(100 * 1024);
    memset(mid, 'b', 100 * 1024 - 1);
    mid[100 * 1024 - 1] = 0;
    many[0] = "prog";
    for (int i = 1; i <= 40; i++) many[i] = mid;
    many[41] = NULL;
    try_exec("40 arguments of 100 KiB", "/bin/true", many);

    snprintf(path, sizeof path, "%s/elf32", argv[1]);
    write_elf32(path);
    try_exec("32-bit ELF", path, args);

    crash(0);
    crash(1);
    printf("the caller runs on\n");
    return 0;
}
