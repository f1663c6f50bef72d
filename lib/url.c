/* SPDX-License-Identifier: MIT */
/* URL parsing. Errors name the URL and the part that is wrong, because a
 * bare "invalid argument" for a typo in a configuration file is the kind of
 * message this library exists to avoid. */
#include "url.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int url_error(tether_error *err, const char *url, const char *fmt, const char *what)
{
    char reason[TETHER_ERROR_MSG_MAX];
    snprintf(reason, sizeof reason, fmt, what);
    return tether__set_error(err, TETHER_EINVAL, "invalid URL '%.80s': %.160s", url, reason);
}

static bool host_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

/* Checks a DNS name: letters, digits, '-', '_' and '.', labels of 1 to 63
 * characters (a final '.' is allowed). */
static int check_name(const char *url, const char *host, tether_error *err)
{
    size_t label = 0;
    for (size_t i = 0; host[i] != '\0'; i++) {
        if (!host_char_ok(host[i])) {
            return url_error(err, url, "host '%s' contains an invalid character", host);
        }
        if (host[i] != '.') {
            label++;
        } else if (label == 0) {
            return url_error(err, url, "host '%s' has an empty label", host);
        } else {
            label = 0;
        }
        if (label > 63) {
            return url_error(err, url, "host '%s' has a label over 63 characters", host);
        }
    }
    return TETHER_OK;
}

/* The rest of a tcp+srv:// or tls+srv:// URL: an SRV owner name of the form
 * _service._proto.domain (RFC 2782), and nothing else: the records give
 * the ports and the hosts. */
static int parse_srv(const char *url, const char *rest, struct tether__url *u, tether_error *err)
{
    if (strpbrk(rest, ":[]") != NULL) {
        return url_error(err, url, "%s",
                         "an SRV URL takes no port (its SRV records give the ports)");
    }
    const char *slash = strchr(rest, '/');
    if (slash != NULL) {
        return url_error(err, url, "unexpected path '%s' after the SRV name", slash);
    }
    size_t hl = strlen(rest);
    if (hl > TETHER__HOST_MAX) {
        return url_error(err, url, "%s", "SRV name longer than 255 bytes");
    }
    memcpy(u->host, rest, hl + 1);
    int rv = check_name(url, u->host, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    /* Two labels of at least one character after their '_', then a
     * domain: "_svc._tcp.example.com". */
    const char *svc_end = strchr(rest, '.');
    const char *proto_end = svc_end != NULL ? strchr(svc_end + 1, '.') : NULL;
    if (rest[0] != '_' || svc_end == NULL || svc_end - rest < 2 || svc_end[1] != '_' ||
        proto_end == NULL || proto_end - svc_end < 3 || proto_end[1] == '\0') {
        return url_error(err, url, "SRV name '%s' must have the form _service._proto.domain",
                         u->host);
    }
    u->srv = true;
    return TETHER_OK;
}

static int parse_port(const char *url, const char *p, bool for_listen, int *port, tether_error *err)
{
    if (*p == '\0') {
        return url_error(err, url, "%s", "missing port after ':'");
    }
    long v = 0;
    for (const char *q = p; *q != '\0'; q++) {
        if (*q == '/') {
            return url_error(err, url, "unexpected path '%s' after the port", q);
        }
        if (*q < '0' || *q > '9') {
            return url_error(err, url, "port '%s' is not a number", p);
        }
        v = v * 10 + (*q - '0');
        if (v > 65535) {
            return url_error(err, url, "port '%s' is out of range (0-65535)", p);
        }
    }
    if (v == 0 && !for_listen) {
        return url_error(err, url, "%s", "port 0 is only valid for listening");
    }
    *port = (int)v;
    return TETHER_OK;
}

static int parse_inet(const char *url, const char *rest, bool for_listen, struct tether__url *u,
                      tether_error *err)
{
    const char *port_sep;
    if (*rest == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL) {
            return url_error(err, url, "%s", "unterminated '[' in IPv6 address");
        }
        size_t hl = (size_t)(close - rest - 1);
        if (hl == 0 || hl > TETHER__HOST_MAX) {
            return url_error(err, url, "%s", "empty or overlong IPv6 address");
        }
        memcpy(u->host, rest + 1, hl);
        u->host[hl] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, u->host, &a6) != 1) {
            return url_error(err, url, "'%s' is not an IPv6 address", u->host);
        }
        if (close[1] != ':') {
            return url_error(err, url, "%s",
                             close[1] == '\0' ? "missing port" : "expected ':' after ']'");
        }
        port_sep = close + 1;
    } else {
        port_sep = strrchr(rest, ':');
        if (port_sep == NULL) {
            return url_error(err, url, "%s", "missing port (expected host:port)");
        }
        size_t hl = (size_t)(port_sep - rest);
        if (hl == 0) {
            return url_error(err, url, "%s", "missing host before ':'");
        }
        if (hl > TETHER__HOST_MAX) {
            return url_error(err, url, "%s", "host name longer than 255 bytes");
        }
        if (memchr(rest, ':', hl) != NULL) {
            return url_error(err, url, "%s", "IPv6 addresses must be in brackets, e.g. [::1]:80");
        }
        memcpy(u->host, rest, hl);
        u->host[hl] = '\0';
        if (strcmp(u->host, "*") == 0) {
            if (!for_listen) {
                return url_error(err, url, "%s", "'*' is only valid for listening");
            }
            u->wildcard = true;
        } else {
            int rv = check_name(url, u->host, err);
            if (rv != TETHER_OK) {
                return rv;
            }
        }
    }
    return parse_port(url, port_sep + 1, for_listen, &u->port, err);
}

static int parse_unix(const char *url, const char *rest, struct tether__url *u, tether_error *err)
{
    size_t max = sizeof u->path;
    if (*rest == '@') {
        /* Linux abstract namespace: a leading NUL byte, no file. */
        size_t nl = strlen(rest + 1);
        if (nl == 0) {
            return url_error(err, url, "%s", "empty abstract socket name after '@'");
        }
        if (nl + 1 > max) {
            return url_error(err, url, "%s", "abstract socket name too long (107 bytes at most)");
        }
        u->path[0] = '\0';
        memcpy(u->path + 1, rest + 1, nl);
        u->path_len = nl + 1;
        return TETHER_OK;
    }
    if (*rest != '/') {
        return url_error(err, url, "%s",
                         "unix URLs need an absolute path (unix:///path) or @name (unix://@name)");
    }
    size_t pl = strlen(rest);
    if (pl + 1 > max) {
        return url_error(err, url, "%s", "unix socket path too long (107 bytes at most)");
    }
    memcpy(u->path, rest, pl + 1);
    u->path_len = pl;
    return TETHER_OK;
}

/* A request path: printable ASCII without spaces, '#' or '%' escapes
 * left as they are (the server compares them byte for byte). */
static bool ws_path_ok(const char *p)
{
    for (; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#') {
            return false;
        }
    }
    return true;
}

/* host:port[/path] of a ws:// or wss:// URL. */
static int parse_ws(const char *url, const char *rest, bool for_listen, struct tether__url *u,
                    tether_error *err)
{
    const char *slash = rest;
    if (*rest == '[') {
        slash = strchr(rest, ']');
        if (slash == NULL) {
            return url_error(err, url, "%s", "unterminated '[' in IPv6 address");
        }
    }
    slash = strchr(slash, '/');
    const char *path = slash != NULL ? slash : "/";
    size_t pl = strlen(path);
    if (pl > TETHER__WS_PATH_MAX) {
        return url_error(err, url, "%s", "path longer than 1024 bytes");
    }
    if (!ws_path_ok(path)) {
        return url_error(err, url, "path '%.64s' contains a space, '#' or a non-ASCII byte", path);
    }
    memcpy(u->ws_path, path, pl + 1);
    u->ws_any_path = slash == NULL;
    char hostport[TETHER__HOST_MAX + 16];
    size_t hl = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
    if (hl == 0 || hl >= sizeof hostport) {
        return url_error(err, url, "%s", hl == 0 ? "missing host and port" : "host too long");
    }
    memcpy(hostport, rest, hl);
    hostport[hl] = '\0';
    return parse_inet(url, hostport, for_listen, u, err);
}

static int url_sockaddr_of(const struct tether__url *u, struct sockaddr_storage *ss,
                           socklen_t *len);

static int url_parse(const char *url, bool for_listen, struct tether__url *u, tether_error *err);

int tether__url_parse(const char *url, bool for_listen, struct tether__url *u, tether_error *err)
{
    int rv = url_parse(url, for_listen, u, err);
    if (rv == TETHER_OK && !u->srv && url_sockaddr_of(u, &u->addr, &u->addr_len) != TETHER_OK) {
        u->addr_len = 0; /* a name: resolved when dialled */
    }
    return rv;
}

static int url_parse(const char *url, bool for_listen, struct tether__url *u, tether_error *err)
{
    if (url == NULL || u == NULL) {
        return tether__set_error(err, TETHER_EINVAL, "URL is NULL");
    }
    memset(u, 0, sizeof *u);
    const char *sep = strstr(url, "://");
    if (sep == NULL) {
        return url_error(
            err, url, "%s",
            "missing scheme (expected tcp://, tls://, unix://, ws://, wss://, tcp+srv:// or "
            "tls+srv://)");
    }
    size_t sl = (size_t)(sep - url);
    const char *rest = sep + 3;
    if (sl == 3 && strncmp(url, "tcp", 3) == 0) {
        u->scheme = TETHER__SCHEME_TCP;
    } else if (sl == 3 && strncmp(url, "tls", 3) == 0) {
        u->scheme = TETHER__SCHEME_TLS;
    } else if (sl == 7 && (strncmp(url, "tcp+srv", 7) == 0 || strncmp(url, "tls+srv", 7) == 0)) {
        u->scheme = url[2] == 'p' ? TETHER__SCHEME_TCP : TETHER__SCHEME_TLS;
        if (for_listen) {
            return url_error(err, url, "%s",
                             "SRV URLs are for dialling only (listen on tcp:// or tls://)");
        }
        if (*rest == '\0') {
            return url_error(err, url, "%s", "missing SRV name (e.g. _service._tcp.example.com)");
        }
        return parse_srv(url, rest, u, err);
    } else if ((sl == 2 && strncmp(url, "ws", 2) == 0) ||
               (sl == 3 && strncmp(url, "wss", 3) == 0)) {
        u->scheme = sl == 3 ? TETHER__SCHEME_TLS : TETHER__SCHEME_TCP;
        u->ws = true;
        if (*rest == '\0') {
            return url_error(err, url, "%s", "missing host and port");
        }
        return parse_ws(url, rest, for_listen, u, err);
    } else if (sl == 4 && strncmp(url, "unix", 4) == 0) {
        u->scheme = TETHER__SCHEME_UNIX;
        return parse_unix(url, rest, u, err);
    } else {
        char scheme[32];
        snprintf(scheme, sizeof scheme, "%.*s", (int)TETHER__MIN(sl, 24), url);
        return url_error(
            err, url, "unknown scheme '%s' (expected tcp, tls, unix, ws, wss, tcp+srv or tls+srv)",
            scheme);
    }
    if (*rest == '\0') {
        return url_error(err, url, "%s", "missing host and port");
    }
    return parse_inet(url, rest, for_listen, u, err);
}

int tether__url_sockaddr(const struct tether__url *u, struct sockaddr_storage *ss, socklen_t *len)
{
    if (u->addr_len != 0) {
        *ss = u->addr;
        *len = u->addr_len;
        return TETHER_OK;
    }
    return url_sockaddr_of(u, ss, len);
}

static int url_sockaddr_of(const struct tether__url *u, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (u->scheme == TETHER__SCHEME_UNIX) {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, u->path, u->path_len);
        /* Abstract names are length-delimited; paths are NUL-terminated. */
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + u->path_len +
                           (u->path[0] == '\0' ? 0 : 1));
        return TETHER_OK;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (u->wildcard) {
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)u->port);
        *len = sizeof *sin;
        return TETHER_OK;
    }
    if (inet_pton(AF_INET, u->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)u->port);
        *len = sizeof *sin;
        return TETHER_OK;
    }
    if (inet_pton(AF_INET6, u->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)u->port);
        *len = sizeof *sin6;
        return TETHER_OK;
    }
    return TETHER_EAGAIN;
}

void tether__addr_format(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char ip[INET6_ADDRSTRLEN];
    if (buflen == 0) {
        return;
    }
    buf[0] = '\0';
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
        snprintf(buf, buflen, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof ip);
        snprintf(buf, buflen, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t pl = len > off ? (size_t)len - off : 0;
        if (pl > 0 && sun->sun_path[0] == '\0') {
            snprintf(buf, buflen, "unix:@%.*s", (int)(pl - 1), sun->sun_path + 1);
        } else if (pl > 0) {
            snprintf(buf, buflen, "unix:%.*s", (int)strnlen(sun->sun_path, pl), sun->sun_path);
        } else {
            snprintf(buf, buflen, "unix:(unnamed)");
        }
    } else {
        snprintf(buf, buflen, "(family %d)", sa->sa_family);
    }
}
