/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the URL parser (lib/url.c), which parses every URL a
 * user hands to tether_conn_dial(), tether_listen() and the clients.
 *
 * Input layout: byte 0 bit 0 selects listening (for_listen), the rest up to
 * the first NUL byte is the URL. A URL that parses must describe a valid
 * address (a port in range, a terminated host or path) and come back the
 * same from its canonical spelling; one that does not parse must fail with
 * TETHER_EINVAL and a message. Any broken invariant aborts. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (URL '%s')\n", __FILE__, __LINE__, #cond, \
                    url);                                                                          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Writes the canonical spelling of a parsed URL into buf. */
static void url_format(const struct tether__url *u, char *buf, size_t len)
{
    const char *scheme = u->scheme == TETHER__SCHEME_TLS ? "tls" : "tcp";
    /* ws:// and wss:// keep their path, unless the URL named none. */
    const char *path = u->ws && !u->ws_any_path ? u->ws_path : "";

    if (u->ws) {
        scheme = u->scheme == TETHER__SCHEME_TLS ? "wss" : "ws";
    }

    if (u->scheme == TETHER__SCHEME_UNIX) {
        if (u->path[0] == '\0') {
            snprintf(buf, len, "unix://@%.*s", (int)(u->path_len - 1), u->path + 1);
        } else {
            snprintf(buf, len, "unix://%s", u->path);
        }
    } else if (u->srv) {
        snprintf(buf, len, "%s+srv://%s", scheme, u->host);
    } else if (strchr(u->host, ':') != NULL) {
        snprintf(buf, len, "%s://[%s]:%d%s", scheme, u->host, u->port, path);
    } else {
        snprintf(buf, len, "%s://%s:%d%s", scheme, u->host, u->port, path);
    }
}

static void check_parsed(const char *url, bool for_listen, const struct tether__url *u)
{
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    char text[TETHER__WS_PATH_MAX + 512];
    char again[512];
    struct tether__url u2;
    tether_error err2;
    int rv;

    if (u->scheme == TETHER__SCHEME_UNIX) {
        FUZZ_CHECK(u->path_len > 0 && u->path_len <= sizeof u->path);
        if (u->path[0] == '\0') {
            FUZZ_CHECK(u->path_len >= 2); /* an abstract name is never empty */
            FUZZ_CHECK(memchr(u->path + 1, '\0', u->path_len - 1) == NULL);
        } else {
            FUZZ_CHECK(u->path[0] == '/');
            FUZZ_CHECK(u->path_len < sizeof u->path && u->path[u->path_len] == '\0');
            FUZZ_CHECK(strlen(u->path) == u->path_len);
        }
    } else {
        FUZZ_CHECK(u->scheme == TETHER__SCHEME_TCP || u->scheme == TETHER__SCHEME_TLS);
        FUZZ_CHECK(memchr(u->host, '\0', sizeof u->host) != NULL);
        FUZZ_CHECK(u->host[0] != '\0');
        FUZZ_CHECK(u->port >= 0 && u->port <= 65535);
        /* An SRV URL names a service, not a port: only dialled, port 0, and
         * the name starts with "_service". */
        FUZZ_CHECK(u->port != 0 || for_listen || u->srv);
        FUZZ_CHECK(!u->srv || (!for_listen && u->port == 0 && u->host[0] == '_'));
        FUZZ_CHECK(!u->wildcard || (for_listen && strcmp(u->host, "*") == 0));
        if (u->ws) {
            /* A WebSocket path: absolute, printable, no spaces or '#'. */
            FUZZ_CHECK(!u->srv && u->ws_path[0] == '/');
            FUZZ_CHECK(strpbrk(u->ws_path, " #") == NULL);
            FUZZ_CHECK(!u->ws_any_path || strcmp(u->ws_path, "/") == 0);
        }
        if (strchr(u->host, ':') != NULL) {
            struct in6_addr a6;
            FUZZ_CHECK(inet_pton(AF_INET6, u->host, &a6) == 1);
        }
    }

    /* The canonical spelling parses to the very same address. */
    url_format(u, text, sizeof text);
    rv = tether__url_parse(text, for_listen, &u2, &err2);
    if (rv != TETHER_OK) {
        fprintf(stderr, "canonical form '%s' failed: %s\n", text, err2.message);
    }
    FUZZ_CHECK(rv == TETHER_OK);
    FUZZ_CHECK(memcmp(u, &u2, sizeof u2) == 0);

    /* A socket address for it, and a printable form of that. */
    rv = tether__url_sockaddr(u, &ss, &sl);
    if (u->scheme == TETHER__SCHEME_UNIX || u->wildcard) {
        FUZZ_CHECK(rv == TETHER_OK);
    } else {
        FUZZ_CHECK(rv == TETHER_OK || rv == TETHER_EAGAIN);
    }
    if (rv == TETHER_OK) {
        FUZZ_CHECK(sl > 0 && sl <= sizeof ss);
        tether__addr_format((const struct sockaddr *)&ss, sl, again, sizeof again);
        FUZZ_CHECK(again[0] != '\0');
        if (u->scheme != TETHER__SCHEME_UNIX) {
            char port[16];
            snprintf(port, sizeof port, ":%d", u->port);
            FUZZ_CHECK(strlen(again) > strlen(port) &&
                       strcmp(again + strlen(again) - strlen(port), port) == 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tether__url u;
    tether_error err;
    bool for_listen;
    size_t n;
    char *url;
    int rv;

    if (size < 1) {
        return 0;
    }
    for_listen = (data[0] & 1) != 0;
    data++;
    size--;
    n = strnlen((const char *)data, size);
    /* An exactly sized copy, so AddressSanitizer sees any read past it. */
    url = malloc(n + 1);
    if (url == NULL) {
        abort();
    }
    memcpy(url, data, n);
    url[n] = '\0';

    memset(&err, 0xA5, sizeof err);
    rv = tether__url_parse(url, for_listen, &u, &err);
    if (rv == TETHER_OK) {
        check_parsed(url, for_listen, &u);
    } else {
        FUZZ_CHECK(rv == TETHER_EINVAL);
        FUZZ_CHECK(err.code == TETHER_EINVAL);
        FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
        FUZZ_CHECK(strncmp(err.message, "invalid URL '", 13) == 0);
    }
    free(url);
    return 0;
}
