// nondet_stdin: reads all of stdin and prints it byte-reversed, followed by
// a newline and the byte count.  Output depends only on the input, which the
// recorder has to capture.  Exit 0.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            if (!buf) return 1;
        }
        ssize_t n = read(0, buf + len, cap - len);
        if (n < 0) { perror("read"); return 1; }
        if (n == 0) break;
        len += (size_t)n;
    }
    for (size_t i = 0; i < len / 2; i++) {
        char t = buf[i];
        buf[i] = buf[len - 1 - i];
        buf[len - 1 - i] = t;
    }
    fwrite(buf, 1, len, stdout);
    printf("\n%zu bytes\n", len);
    free(buf);
    return 0;
}
