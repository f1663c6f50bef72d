/* SPDX-License-Identifier: MIT */
/* A program built against the installed tether, the way a user would build
 * it: it checks that headers and library agree and that the basic calls link
 * and work. Prints "consumer ok <version>" on success. */
#include <stdio.h>
#include <string.h>

#include <tether/tether.h>

int main(void)
{
    const char *version = tether_version();
    if (strcmp(version, TETHER_VERSION_STRING) != 0) {
        fprintf(stderr, "version mismatch: library %s, headers %s\n", version,
                TETHER_VERSION_STRING);
        return 1;
    }

    const char *msg = tether_strerror(TETHER_EINVAL);
    const char *name = tether_err_name(TETHER_EINVAL);
    if (strcmp(msg, "invalid argument") != 0 || strcmp(name, "TETHER_EINVAL") != 0) {
        fprintf(stderr, "unexpected error strings: %s / %s\n", name, msg);
        return 1;
    }

    tether_loop *loop = NULL;
    int rv = tether_loop_new(&loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "tether_loop_new: %s\n", tether_strerror(rv));
        return 1;
    }
    rv = tether_loop_free(loop);
    if (rv != TETHER_OK) {
        fprintf(stderr, "tether_loop_free: %s\n", tether_strerror(rv));
        return 1;
    }

    printf("consumer ok %s\n", version);
    return 0;
}
