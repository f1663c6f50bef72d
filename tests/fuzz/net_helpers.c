/* SPDX-License-Identifier: MIT */
/* Socket helpers shared by the fuzz targets (see net_helpers.h); not a
 * target itself, hence not named fuzz_*.c (run-long.sh runs those). */
#include "net_helpers.h"

#include <errno.h>
#include <poll.h>

int fuzz_connect_eintr(int fd, const struct sockaddr *sa, socklen_t len)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int err = 0;
    socklen_t el = sizeof err;

    if (connect(fd, sa, len) == 0) {
        return 0;
    }
    if (errno != EINTR) {
        return -1;
    }
    /* Each wait is at most 10 s; a signal may cut a few of them short. */
    for (int i = 0; i < 100 && poll(&p, 1, 10000) < 0 && errno == EINTR; i++) {
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
        errno = err != 0 ? err : errno;
        return -1;
    }
    return 0;
}
