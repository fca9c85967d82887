// Self-modifying code: writes machine code into an executable mapping, runs it, rewrites it in place and runs
// it again (as a JIT does). The VM must drop what it decoded when the code changes.
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

typedef long (*fn)(long);

int main(void) {
    unsigned char *code = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (code == MAP_FAILED) { perror("mmap"); return 1; }
    long total = 0;
    for (int k = 1; k <= 50; k++) {
        // lea rax, [rdi + k] ; ret   (48 8d 47 k ; c3)
        unsigned char body[] = { 0x48, 0x8d, 0x47, (unsigned char)k, 0xc3 };
        memcpy(code, body, sizeof body);
        __builtin___clear_cache((char *)code, (char *)code + sizeof body);
        long r = ((fn)code)(1000);
        total += r;
        if (k % 10 == 0) printf("k=%d -> %ld\n", k, r);
    }
    // a loop whose body patches its own next iteration's immediate
    for (int k = 0; k < 5; k++) {
        // mov eax, imm32 ; ret
        unsigned char body[] = { 0xb8, (unsigned char)(k * 3), 0, 0, 0, 0xc3 };
        memcpy(code + 64, body, sizeof body);
        printf("patched %ld\n", ((fn)(code + 64))(0));
    }
    printf("total %ld\n", total);
    return 0;
}
