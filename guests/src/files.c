// files: file-system syscalls through libc.  Usage: files [DIR] (default ".").
// Creates DIR/files_test.d, and inside it: writes/lseeks/preads/pwrites a file,
// fstat, ftruncate, sparse write, O_APPEND, dup, stdio (fopen/fprintf/fgets),
// rename, symlink/readlink/lstat, mkdir, openat/fstatat/unlinkat, chdir/fchdir,
// opendir/readdir (names sorted before printing), expected errors (ENOENT,
// EEXIST, ENOTEMPTY, EISDIR), then removes everything again.
// Prints only deterministic facts (sizes, contents, names, errno names).
// Exit 0 if everything behaved as expected, 1 otherwise.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static int failures;
static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL %s (errno %d)\n", what, errno);
        failures++;
    }
}

static const char *errname(int e)
{
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EEXIST: return "EEXIST";
    case ENOTEMPTY: return "ENOTEMPTY";
    case EISDIR: return "EISDIR";
    case ENOTDIR: return "ENOTDIR";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    default: return "other";
    }
}

static void expect_err(int rc, int want, const char *what)
{
    int e = errno;
    printf("%-34s rc=%d errno=%s\n", what, rc, rc < 0 ? errname(e) : "0");
    if (rc != -1 || e != want) {
        printf("FAIL %s: expected -1/%s\n", what, errname(want));
        failures++;
    }
}

static const char *ftype(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISLNK(m)) return "symlink";
    return "other";
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* list a directory: sorted names with type (from lstat) and size for files */
static void list_dir(const char *path)
{
    DIR *d = opendir(path);
    check(d != NULL, "opendir");
    if (!d) return;
    char *names[64];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL && n < 64)
        names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmpstr);
    printf("listing of %s (%d entries):\n", strrchr(path, '/') ? strrchr(path, '/') + 1 : path, n);
    for (int i = 0; i < n; i++) {
        char full[4200];
        struct stat st;
        snprintf(full, sizeof full, "%s/%s", path, names[i]);
        if (lstat(full, &st) == 0) {
            if (S_ISREG(st.st_mode))
                printf("  %-14s %-7s %lld bytes mode %03o\n", names[i], ftype(st.st_mode),
                       (long long)st.st_size, (unsigned)(st.st_mode & 0777));
            else
                printf("  %-14s %s\n", names[i], ftype(st.st_mode));
        } else {
            printf("  %-14s lstat failed\n", names[i]);
            failures++;
        }
        free(names[i]);
    }
}

static void remove_tree_quiet(const char *w)
{
    /* best effort cleanup of a previous aborted run */
    static const char *files[] = { "data.txt", "renamed.txt", "link", "sub/a", "sub/b", "sub/c",
                                   "stdio.txt", "append.txt", "sparse.bin", "at.txt" };
    char p[4200];
    for (unsigned i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", w, files[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/sub", w);
    rmdir(p);
    rmdir(w);
}

int main(int argc, char **argv)
{
    const char *base = argc > 1 ? argv[1] : ".";
    char w[4096], p[4200], q[4200];
    char buf[8192];
    struct stat st;
    int fd, rc;
    ssize_t n;

    umask(022);
    snprintf(w, sizeof w, "%s/files_test.d", base);
    remove_tree_quiet(w);
    rc = mkdir(w, 0755);
    check(rc == 0, "mkdir workdir");
    if (rc != 0) return 1;
    printf("created files_test.d\n");

    /* --- write, lseek, read, pread, pwrite --- */
    snprintf(p, sizeof p, "%s/data.txt", w);
    fd = open(p, O_CREAT | O_TRUNC | O_RDWR, 0666);
    check(fd >= 0, "open data.txt");
    const char *hello = "hello world\n";
    n = write(fd, hello, strlen(hello));
    check(n == 12, "write hello");
    for (int i = 0; i < 5000; i++) buf[i] = (char)('A' + i % 26);
    n = write(fd, buf, 5000);
    check(n == 5000, "write 5000");
    off_t off = lseek(fd, 0, SEEK_CUR);
    printf("offset after writes: %lld\n", (long long)off);
    off = lseek(fd, 6, SEEK_SET);
    memset(buf, 0, sizeof buf);
    n = read(fd, buf, 5);
    printf("read at 6: %zd \"%s\"\n", n, buf);
    check(n == 5 && memcmp(buf, "world", 5) == 0, "read world");
    off = lseek(fd, -10, SEEK_END);
    n = read(fd, buf, 100);
    buf[n > 0 ? n : 0] = 0;
    printf("lseek(-10, END)=%lld read %zd \"%s\"\n", (long long)off, n, buf);
    off = lseek(fd, 0, SEEK_END);
    printf("size via SEEK_END: %lld\n", (long long)off);
    n = read(fd, buf, 100);
    printf("read at EOF: %zd\n", n);
    memset(buf, 0, sizeof buf);
    n = pread(fd, buf, 8, 12 + 26 * 3);
    printf("pread 8 at %d: %zd \"%s\"\n", 12 + 26 * 3, n, buf);
    check(n == 8 && memcmp(buf, "ABCDEFGH", 8) == 0, "pread");
    check(lseek(fd, 0, SEEK_CUR) == 5012, "pread does not move offset");
    n = pwrite(fd, "HELLO", 5, 0);
    check(n == 5, "pwrite");
    memset(buf, 0, sizeof buf);
    n = pread(fd, buf, 12, 0);
    printf("after pwrite: \"%.11s\"\n", buf);
    check(fstat(fd, &st) == 0, "fstat");
    printf("fstat: type=%s size=%lld mode=%03o nlink=%lu\n", ftype(st.st_mode), (long long)st.st_size,
           (unsigned)(st.st_mode & 0777), (unsigned long)st.st_nlink);
    check(ftruncate(fd, 100) == 0, "ftruncate");
    check(fstat(fd, &st) == 0 && st.st_size == 100, "size after ftruncate");
    printf("after ftruncate(100): size=%lld\n", (long long)st.st_size);

    /* dup shares the file offset */
    int fd2 = dup(fd);
    check(fd2 >= 0, "dup");
    lseek(fd, 20, SEEK_SET);
    printf("dup offset follows: %lld\n", (long long)lseek(fd2, 0, SEEK_CUR));
    close(fd2);
    check(close(fd) == 0, "close");
    expect_err(close(fd), EBADF, "close again");

    /* --- sparse file --- */
    snprintf(p, sizeof p, "%s/sparse.bin", w);
    fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    check(fd >= 0, "open sparse");
    lseek(fd, 100000, SEEK_SET);
    write(fd, "end", 3);
    close(fd);
    fd = open(p, O_RDONLY);
    n = pread(fd, buf, 4096, 50000);
    int zeros = 1;
    for (ssize_t i = 0; i < n; i++) if (buf[i]) zeros = 0;
    n = pread(fd, buf, 10, 99998);
    printf("sparse: hole reads zeros=%d, tail read %zd bytes \"%.*s\"\n", zeros, n, (int)(n > 2 ? n - 2 : 0), buf + 2);
    close(fd);

    /* --- O_APPEND --- */
    snprintf(p, sizeof p, "%s/append.txt", w);
    for (int i = 0; i < 3; i++) {
        fd = open(p, O_CREAT | O_WRONLY | O_APPEND, 0644);
        lseek(fd, 0, SEEK_SET);  /* ignored for writes with O_APPEND */
        char line[32];
        int len = snprintf(line, sizeof line, "line %d\n", i);
        write(fd, line, (size_t)len);
        close(fd);
    }
    fd = open(p, O_RDONLY);
    n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    close(fd);
    printf("append file (%zd bytes): %s", n, buf);

    /* --- stdio --- */
    snprintf(p, sizeof p, "%s/stdio.txt", w);
    FILE *f = fopen(p, "w");
    check(f != NULL, "fopen w");
    for (int i = 0; i < 100; i++) fprintf(f, "row %03d value %d\n", i, i * i);
    fclose(f);
    f = fopen(p, "r");
    check(f != NULL, "fopen r");
    int rows = 0;
    long total = 0;
    char line[128];
    while (fgets(line, sizeof line, f)) {
        int a, b;
        if (sscanf(line, "row %d value %d", &a, &b) == 2) { rows++; total += b; }
    }
    fseek(f, -16, SEEK_END);
    fgets(line, sizeof line, f);
    printf("stdio: %d rows, sum %ld, ftell %ld, last line \"%.*s\"\n", rows, total, ftell(f),
           (int)strcspn(line, "\n"), line);
    fclose(f);

    /* --- rename --- */
    snprintf(p, sizeof p, "%s/data.txt", w);
    snprintf(q, sizeof q, "%s/renamed.txt", w);
    check(rename(p, q) == 0, "rename");
    expect_err(stat(p, &st), ENOENT, "stat old name");
    check(stat(q, &st) == 0 && st.st_size == 100, "stat new name");
    expect_err(open(p, O_RDONLY), ENOENT, "open old name");

    /* --- symlink --- */
    snprintf(p, sizeof p, "%s/link", w);
    check(symlink("renamed.txt", p) == 0, "symlink");
    n = readlink(p, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("readlink: %zd \"%s\"\n", n, buf);
    check(lstat(p, &st) == 0 && S_ISLNK(st.st_mode), "lstat symlink");
    check(stat(p, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 100, "stat through symlink");

    /* --- mkdir, openat, fstatat, unlinkat --- */
    snprintf(p, sizeof p, "%s/sub", w);
    check(mkdir(p, 0750) == 0, "mkdir sub");
    expect_err(mkdir(p, 0750), EEXIST, "mkdir existing");
    int dfd = open(p, O_RDONLY | O_DIRECTORY);
    check(dfd >= 0, "open dir");
    for (int i = 0; i < 3; i++) {
        char name[2] = { (char)('c' - i), 0 };
        int ffd = openat(dfd, name, O_CREAT | O_WRONLY | O_TRUNC, 0640);
        check(ffd >= 0, "openat");
        memset(buf, 'x', 10 * (i + 1));
        write(ffd, buf, 10 * (i + 1));
        close(ffd);
    }
    check(fstatat(dfd, "b", &st, 0) == 0 && st.st_size == 20, "fstatat b");
    printf("fstatat sub/b: size=%lld mode=%03o\n", (long long)st.st_size, (unsigned)(st.st_mode & 0777));
    expect_err(fstatat(dfd, "nope", &st, 0), ENOENT, "fstatat missing");
    expect_err(openat(dfd, "a", O_RDONLY | O_DIRECTORY), ENOTDIR, "openat O_DIRECTORY on file");

    /* --- chdir / getcwd / fchdir --- */
    int cwd = open(".", O_RDONLY | O_DIRECTORY);
    check(cwd >= 0, "open cwd");
    check(chdir(p) == 0, "chdir sub");
    char cbuf[4096];
    check(getcwd(cbuf, sizeof cbuf) != NULL, "getcwd");
    printf("getcwd ends with: %s\n", strrchr(cbuf, '/') ? strrchr(cbuf, '/') : cbuf);
    check(access("a", R_OK | W_OK) == 0, "access a");
    expect_err(access("zzz", F_OK), ENOENT, "access missing");
    check(fchdir(cwd) == 0, "fchdir back");
    close(cwd);

    list_dir(w);
    list_dir(p);

    /* --- expected errors --- */
    expect_err(rmdir(p), ENOTEMPTY, "rmdir non-empty");
    expect_err(unlink(p), EISDIR, "unlink directory");
    snprintf(q, sizeof q, "%s/nonexistent/x", w);
    expect_err(open(q, O_CREAT | O_WRONLY, 0644), ENOENT, "create in missing dir");
    snprintf(q, sizeof q, "%s/renamed.txt/x", w);
    expect_err(open(q, O_RDONLY), ENOTDIR, "path through a file");

    /* --- cleanup --- */
    check(unlinkat(dfd, "a", 0) == 0, "unlinkat a");
    check(unlinkat(dfd, "b", 0) == 0, "unlinkat b");
    check(unlinkat(dfd, "c", 0) == 0, "unlinkat c");
    close(dfd);
    check(rmdir(p) == 0, "rmdir sub");
    static const char *names[] = { "renamed.txt", "link", "sparse.bin", "append.txt", "stdio.txt" };
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(q, sizeof q, "%s/%s", w, names[i]);
        check(unlink(q) == 0, "unlink");
    }
    list_dir(w);
    check(rmdir(w) == 0, "rmdir workdir");
    expect_err(stat(w, &st), ENOENT, "stat removed workdir");

    printf("failures %d\n", failures);
    return failures ? 1 : 0;
}
