/* What a process sees of itself through /proc, printed so that the VM's output can be compared with the native
 * run's (only facts that do not depend on the pid or host paths are printed), plus the safety checks that the VM
 * process's own /proc cannot be reached (printed as "host-mem ..." lines, which the test reads separately). */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <unistd.h>

static const char *base(const char *p) { const char *s = strrchr(p, '/'); return s ? s + 1 : p; }

int main(int argc, char **argv) {
    long pg = sysconf(_SC_PAGESIZE);
    if (argc > 1 && strcmp(argv[1], "cpu") == 0) {
        /* the /proc/cpuinfo flags line against CPUID, flag by flag */
        unsigned a, b, c, d, ea, eb, ec, ed;
        __get_cpuid(1, &a, &b, &c, &d);
        __get_cpuid(0x80000001, &ea, &eb, &ec, &ed);
        struct { const char *name; unsigned *reg; int bit; } f[] = {
            {"fpu", &d, 0}, {"tsc", &d, 4}, {"cx8", &d, 8}, {"cmov", &d, 15}, {"clflush", &d, 19}, {"mmx", &d, 23},
            {"fxsr", &d, 24}, {"sse", &d, 25}, {"sse2", &d, 26}, {"pni", &c, 0}, {"ssse3", &c, 9}, {"cx16", &c, 13},
            {"sse4_1", &c, 19}, {"sse4_2", &c, 20}, {"popcnt", &c, 23}, {"aes", &c, 25}, {"xsave", &c, 26},
            {"avx", &c, 28}, {"rdrand", &c, 30}, {"syscall", &ed, 11}, {"nx", &ed, 20}, {"lm", &ed, 29},
            {"lahf_lm", &ec, 0}, {"abm", &ec, 5},
        };
        char line[4096] = "";
        FILE *ci = fopen("/proc/cpuinfo", "r");
        while (ci && fgets(line, sizeof line, ci)) if (strncmp(line, "flags", 5) == 0) break;
        char padded[4200];
        snprintf(padded, sizeof padded, " %s ", strchr(line, ':') ? strchr(line, ':') + 1 : "");
        padded[strcspn(padded, "\n")] = ' ';
        int mismatches = 0;
        for (unsigned i = 0; i < sizeof f / sizeof f[0]; i++) {
            char key[64];
            snprintf(key, sizeof key, " %s ", f[i].name);
            int cpuid = (*f[i].reg >> f[i].bit) & 1, listed = strstr(padded, key) != NULL;
            if (cpuid != listed) { printf("mismatch %s cpuid %d cpuinfo %d\n", f[i].name, cpuid, listed); mismatches++; }
        }
        cpu_set_t set;
        sched_getaffinity(0, sizeof set, &set);
        printf("flags checked %zu mismatches %d nprocs %d affinity %d\n", sizeof f / sizeof f[0], mismatches, get_nprocs(), CPU_COUNT(&set));
        return 0;
    }
    /* a file mapping at an offset appears in /proc/self/maps with its offset and path */
    int fd = open(argv[1], O_RDONLY);
    unsigned char *m = mmap(NULL, 2 * pg, PROT_READ, MAP_PRIVATE, fd, pg);
    char want[32], line[512];
    snprintf(want, sizeof want, "%lx-", (unsigned long)m);
    FILE *maps = fopen("/proc/self/maps", "r");
    while (fgets(line, sizeof line, maps)) {
        if (strncmp(line, want, strlen(want)) != 0) continue;
        char range[64], perms[8], off[32], dev[16], path[256] = "";
        unsigned long ino;
        sscanf(line, "%63s %7s %31s %15s %lu %255s", range, perms, off, dev, &ino, path);
        printf("maps %s %s %s\n", perms, off, base(path));
    }
    fclose(maps);
    char exe[256] = "";
    readlink("/proc/self/exe", exe, sizeof exe - 1);
    printf("exe %s\n", base(exe));
    char link[256] = "", fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
    readlink(fdpath, link, sizeof link - 1);
    printf("fd %d -> %s\n", fd, base(link));
    snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
    int again = open(fdpath, O_RDONLY);
    unsigned char b0 = 0, b1 = 0;
    pread(again, &b0, 1, 0);
    pread(fd, &b1, 1, 0);
    printf("reopen %d same byte %d\n", again >= 0, b0 == b1);
    DIR *dir = opendir("/proc/self/fd");
    int n = 0;
    struct dirent *e;
    /* descriptors inherited from the parent (numbered above the ones opened here) are not counted */
    while ((e = readdir(dir))) if (e->d_name[0] != '.' && atoi(e->d_name) <= dirfd(dir)) n++;
    closedir(dir);
    printf("fds listed %d\n", n);
    FILE *cl = fopen("/proc/self/cmdline", "r");
    char cmd[512];
    size_t k = fread(cmd, 1, sizeof cmd, cl);
    int args = 0;
    for (size_t i = 0; i < k; i++) if (cmd[i] == 0) args++;
    const char *last = cmd;
    for (size_t i = 0; i + 1 < k; i++) if (cmd[i] == 0) last = cmd + i + 1;
    printf("cmdline args %d last %s\n", args, base(last));
    FILE *au = fopen("/proc/self/auxv", "r");
    unsigned long kv[2], entry = 0, phdr = 0;
    while (fread(kv, sizeof kv, 1, au) == 1 && kv[0] != 0) { if (kv[0] == AT_ENTRY) entry = kv[1]; if (kv[0] == AT_PHDR) phdr = kv[1]; }
    printf("auxv entry %d phdr %d\n", entry == getauxval(AT_ENTRY), phdr == getauxval(AT_PHDR));
    FILE *st = fopen("/proc/self/status", "r");
    int pidok = 0;
    while (fgets(line, sizeof line, st)) if (strncmp(line, "Pid:", 4) == 0) pidok = atoi(line + 4) == getpid();
    printf("status pid %d\n", pidok);
    /* the VM process's own memory: never reachable (natively this is the process itself) */
    char mem[64];
    snprintf(mem, sizeof mem, "/proc/%d/mem", getpid());
    int mfd = open(mem, O_RDWR);
    printf("host-mem pid %d errno %d\n", mfd, mfd < 0 ? errno : 0);
    mfd = open("/proc/self/mem", O_RDONLY);
    printf("host-mem self %d errno %d\n", mfd, mfd < 0 ? errno : 0);
    unlink("/tmp/revirt-procview-link");
    symlink("/proc", "/tmp/revirt-procview-link");
    snprintf(mem, sizeof mem, "/tmp/revirt-procview-link/%d/mem", getpid());
    mfd = open(mem, O_RDONLY);
    printf("host-mem via-symlink %d errno %d\n", mfd, mfd < 0 ? errno : 0);
    unlink("/tmp/revirt-procview-link");
    mfd = open("/proc/1/environ", O_RDONLY);
    printf("host-mem init %d errno %d\n", mfd, mfd < 0 ? errno : 0);
    return 0;
}
