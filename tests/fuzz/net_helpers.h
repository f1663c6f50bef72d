/* SPDX-License-Identifier: MIT */
/* Socket helpers shared by the fuzz targets that talk to tether through
 * real sockets (fuzz_conn, fuzz_tls_server). */
#ifndef TETHER_FUZZ_NET_HELPERS_H
#define TETHER_FUZZ_NET_HELPERS_H

#include <sys/socket.h>

/* connect() that survives libFuzzer's SIGALRM (-timeout): an interrupted
 * connect goes on in the background, so wait for it (bounded) and ask how
 * it ended. Returns 0 when connected, -1 with errno set otherwise. */
int fuzz_connect_eintr(int fd, const struct sockaddr *sa, socklen_t len);

#endif
