// forkcow: fork must give the child a private copy of every page, whatever the VM shares underneath (pages are
// shared copy-on-write).  The parent fills 4 MiB of heap, a stack array and a page of code it wrote itself; then
// children and a grandchild each change some of it, print checksums of what they see, and exec a program; the
// parent prints what it sees after each child (its own bytes, unchanged) and changes its copy too.  Every line
// is deterministic: a native run and a VM run print the same.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define HEAP (4u << 20)

// covers every byte (n is a multiple of 8)
static unsigned sum(const unsigned char *p, size_t n)
{
    unsigned long long h = 1469598103934665603ull, w;
    for (size_t i = 0; i < n; i += 8) { memcpy(&w, p + i, 8); h = (h ^ w) * 1099511628211ull; }
    return (unsigned)(h ^ (h >> 32));
}

typedef int (*fn_t)(void);

// mov eax, imm32; ret
static void emit(unsigned char *code, int v)
{
    code[0] = 0xB8;
    memcpy(code + 1, &v, 4);
    code[5] = 0xC3;
}

static int wait_child(pid_t c)
{
    int st = 0;
    if (waitpid(c, &st, 0) != c) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int main(int argc, char **argv)
{
    if (argc > 1) { printf("exec'd with %s\n", argv[1]); return 5; }
    unsigned char *heap = malloc(HEAP);
    unsigned char stack[8192];
    for (size_t i = 0; i < HEAP; i++) heap[i] = (unsigned char)(i * 7 + (i >> 12));
    for (size_t i = 0; i < sizeof stack; i++) stack[i] = (unsigned char)(i * 13);
    unsigned char *code = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) return 1;
    emit(code, 1);
    printf("parent: heap %08x stack %08x code %d\n", sum(heap, HEAP), sum(stack, sizeof stack), ((fn_t)code)());
    fflush(stdout);

    for (int round = 0; round < 3; round++) {
        pid_t c = fork();
        if (c < 0) return 2;
        if (c == 0) {
            // the child changes a different part each round, including its code
            for (size_t i = round; i < HEAP; i += 4096 * (round + 1)) heap[i] ^= 0x5A;
            stack[round * 100] = 0xEE;
            emit(code, 10 + round);
            printf("child %d: heap %08x stack %08x code %d\n", round, sum(heap, HEAP), sum(stack, sizeof stack), ((fn_t)code)());
            fflush(stdout);
            if (round == 1) {
                // a grandchild of a child that already wrote: its own copy again
                pid_t g = fork();
                if (g == 0) {
                    memset(heap, 0x11, HEAP / 2);
                    emit(code, 99);
                    printf("grandchild: heap %08x code %d\n", sum(heap, HEAP), ((fn_t)code)());
                    fflush(stdout);
                    _exit(3);
                }
                printf("child 1: grandchild exit %d, heap %08x code %d\n", wait_child(g), sum(heap, HEAP), ((fn_t)code)());
                fflush(stdout);
            }
            if (round == 2) {
                char *args[] = { argv[0], "round2", 0 };
                execv(argv[0], args);
                _exit(4);
            }
            _exit(round);
        }
        int status = wait_child(c);
        printf("parent after child %d (exit %d): heap %08x stack %08x code %d\n", round, status, sum(heap, HEAP), sum(stack, sizeof stack), ((fn_t)code)());
        // the parent writes too: a page the child also wrote, and its code
        heap[round * 4096] ^= 0xA5;
        emit(code, 100 + round);
        printf("parent changed: heap %08x code %d\n", sum(heap, HEAP), ((fn_t)code)());
        fflush(stdout);
    }
    return 0;
}
