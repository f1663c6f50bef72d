/* SPDX-License-Identifier: MIT */
/* Parsing of connection URLs: tcp://, tls://, unix://, the DNS SRV
 * forms tcp+srv:// and tls+srv:// (dialling only), and the WebSocket forms
 * ws://host:port/path and wss://host:port/path. */
#ifndef TETHER_URL_H
#define TETHER_URL_H

#include <sys/socket.h>
#include <sys/un.h>

#include "internal.h"

enum tether__scheme {
    TETHER__SCHEME_TCP,
    TETHER__SCHEME_TLS,
    TETHER__SCHEME_UNIX,
};

#define TETHER__HOST_MAX 255
#define TETHER__WS_PATH_MAX 1024

struct tether__url {
    enum tether__scheme scheme;
    char host[TETHER__HOST_MAX + 1]; /* without brackets for IPv6 */
    int port;                        /* 0..65535 */
    bool wildcard;                   /* "*" host (listen only) */
    /* tcp+srv:// or tls+srv://: host is the SRV name ("_svc._tcp.example.com")
     * and port is 0; the scheme is TCP or TLS as without "+srv". */
    bool srv;
    /* unix: the sun_path bytes; an abstract name starts with a NUL byte */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    size_t path_len;
    /* ws:// (scheme TCP) or wss:// (scheme TLS): the request path, "/" when
     * the URL names none (a listener then accepts any path). */
    bool ws;
    bool ws_any_path;
    char ws_path[TETHER__WS_PATH_MAX + 1];
    /* The socket address of a numeric host or a Unix path, worked out
     * once by tether__url_parse(); addr_len 0 for a name (or once host or
     * port were changed after parsing: set it to 0 then). */
    socklen_t addr_len;
    struct sockaddr_storage addr;
};

/* Parses url. for_listen allows port 0 and the "*" host, and refuses the
 * SRV forms. On failure returns
 * TETHER_EINVAL and fills err with a message naming what is wrong. */
int tether__url_parse(const char *url, bool for_listen, struct tether__url *u, tether_error *err);

/* Fills a sockaddr for a numeric host (IPv4 or IPv6 literal, or the
 * wildcard) or a Unix path. Returns TETHER_EAGAIN if the host is a name
 * that needs resolving. */
int tether__url_sockaddr(const struct tether__url *u, struct sockaddr_storage *ss, socklen_t *len);

/* Formats a socket address as "1.2.3.4:5", "[::1]:5" or "unix:/path". */
void tether__addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

#endif /* TETHER_URL_H */
