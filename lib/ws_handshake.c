/* SPDX-License-Identifier: MIT */
/* The WebSocket opening handshake (RFC 6455 section 4): the options copied
 * into a configuration, the client's upgrade request and the check of the
 * server's answer, the server's check of a request and its answers (101,
 * the HTTP errors, the health check). Works on whole heads in memory; the
 * transport (transport_ws.c) does the reading, writing and limits. */
#include "ws.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- options ----------------------------------------------------------- */

static char **strv_dup(const char *const *v, bool *oom)
{
    if (v == NULL) {
        return NULL;
    }
    size_t n = 0;
    while (v[n] != NULL) {
        n++;
    }
    char **d = calloc(n + 1, sizeof *d);
    if (d == NULL) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        d[i] = strdup(v[i]);
        if (d[i] == NULL) {
            *oom = true;
        }
    }
    return d;
}

static void strv_free(char **v)
{
    for (size_t i = 0; v != NULL && v[i] != NULL; i++) {
        free(v[i]);
    }
    free(v);
}

static char *str_dup(const char *s, bool *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    if (d == NULL) {
        *oom = true;
    }
    return d;
}

void tether__ws_cfg_free(struct tether__ws_cfg *w)
{
    if (w == NULL) {
        return;
    }
    free(w->origin);
    strv_free(w->protocols);
    free(w->headers);
    strv_free(w->allowed_origins);
    free(w->health_path);
    free(w);
}

/* A token as RFC 7230 defines it (subprotocol names are tokens). */
static bool is_token(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 0x20 || ch >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", ch) != NULL) {
            return false;
        }
    }
    return true;
}

/* Header lines: "Name: value\r\n" each, printable, no blank line. */
static bool headers_ok(const char *h)
{
    while (*h != '\0') {
        const char *eol = strstr(h, "\r\n");
        const char *colon = strchr(h, ':');
        if (eol == NULL || eol == h || colon == NULL || colon > eol || colon == h) {
            return false;
        }
        for (const char *p = h; p < eol; p++) {
            if ((unsigned char)*p < 0x20 && *p != '\t') {
                return false;
            }
        }
        h = eol + 2;
    }
    return true;
}

int tether__ws_cfg_set(struct tether__conn_cfg *cfg, const struct tether__url *u, tether_error *err)
{
    if (cfg->o.framing != TETHER_FRAMING_LEN32) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "ws:// and wss:// carry whole WebSocket messages: leave the "
                                 "framing at TETHER_FRAMING_LEN32");
    }
    tether_ws_opts o;
    tether_ws_opts_init(&o);
    if (cfg->o.ws != NULL) {
        if (cfg->o.ws->size < sizeof(size_t)) {
            return tether__set_error(
                err, TETHER_EINVAL, "WebSocket options not initialised with tether_ws_opts_init()");
        }
        tether__opts_merge(&o, sizeof o, cfg->o.ws);
    }
    for (size_t i = 0; o.protocols != NULL && o.protocols[i] != NULL; i++) {
        if (!is_token(o.protocols[i])) {
            return tether__set_error(err, TETHER_EINVAL,
                                     "WebSocket subprotocol '%.64s' is not an HTTP token",
                                     o.protocols[i]);
        }
    }
    if (o.headers != NULL && !headers_ok(o.headers)) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "tether_ws_opts::headers must be lines of the form "
                                 "'Name: value\\r\\n'");
    }
    if (o.origin != NULL && strpbrk(o.origin, "\r\n") != NULL) {
        return tether__set_error(err, TETHER_EINVAL, "tether_ws_opts::origin contains a newline");
    }
    if (o.max_request == 0) {
        o.max_request = TETHER_WS_MAX_REQUEST_DEFAULT;
    }
    if (o.max_request < 256 || o.max_request > (1u << 20)) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "tether_ws_opts::max_request must be 256 to 1048576, not %zu",
                                 o.max_request);
    }
    struct tether__ws_cfg *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    bool oom = false;
    w->origin = str_dup(o.origin, &oom);
    w->protocols = strv_dup(o.protocols, &oom);
    w->headers = str_dup(o.headers, &oom);
    w->allowed_origins = strv_dup(o.allowed_origins, &oom);
    w->health_path = str_dup(o.health_path, &oom);
    w->text = o.text;
    w->max_request = o.max_request;
    w->handshake_timeout_ms = o.handshake_timeout_ms;
    memcpy(w->path, u->ws_path, sizeof w->path);
    w->any_path = u->ws_any_path;
    if (strchr(u->host, ':') != NULL) {
        snprintf(w->host, sizeof w->host, "[%s]:%d", u->host, u->port);
    } else {
        snprintf(w->host, sizeof w->host, "%s:%d", u->host, u->port);
    }
    if (oom) {
        tether__ws_cfg_free(w);
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    cfg->o.ws = NULL; /* copied */
    cfg->ws = w;
    return TETHER_OK;
}

void tether_ws_opts_init_sized(tether_ws_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_ws_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.max_request = TETHER_WS_MAX_REQUEST_DEFAULT;
    d.handshake_timeout_ms = TETHER_WS_HANDSHAKE_TIMEOUT_DEFAULT;
    tether__sized_fill(opts, size, &d, sizeof d);
}

tether_ws_opts *tether__ws_opts_dup(const tether_ws_opts *in)
{
    tether_ws_opts *o = calloc(1, sizeof *o);
    if (o == NULL) {
        return NULL;
    }
    tether_ws_opts_init(o);
    if (in->size >= sizeof(size_t)) {
        tether__opts_merge(o, sizeof *o, in);
        o->size = sizeof *o;
    }
    bool oom = false;
    o->origin = str_dup(o->origin, &oom);
    o->headers = str_dup(o->headers, &oom);
    o->health_path = str_dup(o->health_path, &oom);
    o->protocols = (const char *const *)strv_dup(o->protocols, &oom);
    o->allowed_origins = (const char *const *)strv_dup(o->allowed_origins, &oom);
    if (oom) {
        tether__ws_opts_free(o);
        return NULL;
    }
    return o;
}

void tether__ws_opts_free(tether_ws_opts *o)
{
    if (o == NULL) {
        return;
    }
    /* (Every string is our own copy: the casts drop the const the public
     * struct puts on them for its callers.) */
    free((char *)o->origin);
    free((char *)o->headers);
    free((char *)o->health_path);
    strv_free((char **)o->protocols);
    strv_free((char **)o->allowed_origins);
    free(o);
}

/* ---- head parsing -------------------------------------------------------- */

/* Finds header name in head (lines after the first); returns its value
 * with surrounding blanks trimmed, or NULL. A header given twice yields
 * the first; *dup is set. */
static const char *head_get(const char *head, size_t len, const char *name, size_t *vlen, bool *dup)
{
    const char *end = head + len;
    const char *line = memchr(head, '\n', len);
    const char *found = NULL;
    size_t nl = strlen(name);
    while (line != NULL && line + 1 < end) {
        line++;
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) {
            break;
        }
        size_t ll = (size_t)(eol - line);
        if (ll > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            const char *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t')) {
                v++;
            }
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) {
                ve--;
            }
            if (found != NULL) {
                if (dup != NULL) {
                    *dup = true;
                }
                return found;
            }
            found = v;
            *vlen = (size_t)(ve - v);
        }
        line = eol;
    }
    return found;
}

/* Whether a comma-separated header value contains token (any case). */
static bool list_has(const char *v, size_t vlen, const char *token)
{
    size_t tl = strlen(token);
    const char *end = v + vlen;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == '\t' || *v == ',')) {
            v++;
        }
        const char *e = v;
        while (e < end && *e != ',') {
            e++;
        }
        const char *te = e;
        while (te > v && (te[-1] == ' ' || te[-1] == '\t')) {
            te--;
        }
        if ((size_t)(te - v) == tl && strncasecmp(v, token, tl) == 0) {
            return true;
        }
        v = e;
    }
    return false;
}

/* ---- client -------------------------------------------------------------- */

char *tether__ws_client_request(const struct tether__ws_cfg *w, char key[25], size_t *len)
{
    uint8_t raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        return NULL;
    }
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof raw);
    key[24] = '\0';
    size_t cap = 512 + strlen(w->path) + strlen(w->host) +
                 (w->origin != NULL ? strlen(w->origin) : 0) +
                 (w->headers != NULL ? strlen(w->headers) : 0);
    for (size_t i = 0; w->protocols != NULL && w->protocols[i] != NULL; i++) {
        cap += strlen(w->protocols[i]) + 2;
    }
    char *r = malloc(cap);
    if (r == NULL) {
        return NULL;
    }
    int n = snprintf(r, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n",
                     w->path, w->host, key);
    size_t off = (size_t)n;
    if (w->origin != NULL) {
        off += (size_t)snprintf(r + off, cap - off, "Origin: %s\r\n", w->origin);
    }
    if (w->protocols != NULL && w->protocols[0] != NULL) {
        off += (size_t)snprintf(r + off, cap - off, "Sec-WebSocket-Protocol: ");
        for (size_t i = 0; w->protocols[i] != NULL; i++) {
            off += (size_t)snprintf(r + off, cap - off, "%s%s", i > 0 ? ", " : "", w->protocols[i]);
        }
        off += (size_t)snprintf(r + off, cap - off, "\r\n");
    }
    if (w->headers != NULL) {
        off += (size_t)snprintf(r + off, cap - off, "%s", w->headers);
    }
    /* Offered to every server; only a tether server accepts it (ws.h). */
    off += (size_t)snprintf(r + off, cap - off, "Sec-WebSocket-Extensions: %s\r\n\r\n",
                            TETHER__WS_EXT_CTRL);
    *len = off;
    return r;
}

int tether__ws_client_check(const struct tether__ws_cfg *w, const char *head, size_t len,
                            const char *key, char **protocol, bool *tctl, char *detail, size_t dlen)
{
    *protocol = NULL;
    *tctl = false;
    int status = 0;
    if (len < 12 || strncmp(head, "HTTP/1.1 ", 9) != 0 || sscanf(head + 9, "%3d", &status) != 1) {
        snprintf(detail, dlen, "the server's answer is not an HTTP/1.1 response (%.20s...)", head);
        return TETHER_EPROTO;
    }
    if (status != 101) {
        const char *eol = memchr(head, '\r', len);
        int sl = eol != NULL ? (int)(eol - head) : 40;
        snprintf(detail, dlen, "the server refused the WebSocket upgrade: %.*s", sl > 80 ? 80 : sl,
                 head);
        return TETHER_EPROTO;
    }
    size_t vl = 0;
    const char *v = head_get(head, len, "Upgrade", &vl, NULL);
    if (v == NULL || !list_has(v, vl, "websocket")) {
        snprintf(detail, dlen, "the server's 101 response lacks 'Upgrade: websocket'");
        return TETHER_EPROTO;
    }
    v = head_get(head, len, "Connection", &vl, NULL);
    if (v == NULL || !list_has(v, vl, "upgrade")) {
        snprintf(detail, dlen, "the server's 101 response lacks 'Connection: Upgrade'");
        return TETHER_EPROTO;
    }
    char want[29];
    if (tether__ws_accept_key(key, strlen(key), want) != TETHER_OK) {
        snprintf(detail, dlen, "cannot compute Sec-WebSocket-Accept");
        return TETHER_EPROTO;
    }
    v = head_get(head, len, "Sec-WebSocket-Accept", &vl, NULL);
    if (v == NULL || vl != 28 || memcmp(v, want, 28) != 0) {
        snprintf(detail, dlen, "the server's Sec-WebSocket-Accept is %s (expected %s)",
                 v == NULL ? "missing" : "wrong", want);
        return TETHER_EPROTO;
    }
    v = head_get(head, len, "Sec-WebSocket-Extensions", &vl, NULL);
    if (v != NULL) {
        if (vl != strlen(TETHER__WS_EXT_CTRL) || strncasecmp(v, TETHER__WS_EXT_CTRL, vl) != 0) {
            snprintf(detail, dlen,
                     "the server chose a WebSocket extension that was not offered "
                     "(%.*s)",
                     (int)(vl > 64 ? 64 : vl), v);
            return TETHER_EPROTO;
        }
        *tctl = true;
    }
    v = head_get(head, len, "Sec-WebSocket-Protocol", &vl, NULL);
    if (v != NULL) {
        bool offered = false;
        for (size_t i = 0; w->protocols != NULL && w->protocols[i] != NULL; i++) {
            if (strlen(w->protocols[i]) == vl && memcmp(w->protocols[i], v, vl) == 0) {
                offered = true;
            }
        }
        if (!offered) {
            snprintf(detail, dlen, "the server chose subprotocol '%.*s', which was not offered",
                     (int)(vl > 64 ? 64 : vl), v);
            return TETHER_EPROTO;
        }
        *protocol = strndup(v, vl);
        if (*protocol == NULL) {
            snprintf(detail, dlen, "out of memory");
            return TETHER_ENOMEM;
        }
    }
    return TETHER_OK;
}

/* ---- server -------------------------------------------------------------- */

char *tether__ws_http_error(int status, size_t *len)
{
    const char *text = "Bad Request";
    const char *extra = "";
    const char *body = "bad request\n";
    switch (status) {
    case 200:
        text = "OK";
        body = "ok\n";
        break;
    case 403:
        text = "Forbidden";
        body = "origin not allowed\n";
        break;
    case 404:
        text = "Not Found";
        body = "not found\n";
        break;
    case 405:
        text = "Method Not Allowed";
        extra = "Allow: GET\r\n";
        body = "method not allowed\n";
        break;
    case 426:
        text = "Upgrade Required";
        extra = "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n";
        body = "this endpoint speaks WebSocket\n";
        break;
    case 431:
        text = "Request Header Fields Too Large";
        body = "request head too large\n";
        break;
    default:
        break;
    }
    char *r = malloc(512);
    if (r == NULL) {
        return NULL;
    }
    int n = snprintf(r, 512,
                     "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     status, text, extra, strlen(body), body);
    *len = (size_t)n;
    return r;
}

static int server_fail(int status, char **response, size_t *rlen, char *detail, size_t dlen,
                       const char *msg)
{
    snprintf(detail, dlen, "%s (answered %d)", msg, status);
    *response = tether__ws_http_error(status, rlen);
    return *response != NULL ? status : -1;
}

int tether__ws_server_check(const struct tether__ws_cfg *w, const char *head, size_t len,
                            struct tether__ws_req *req, char **protocol, char **response,
                            size_t *rlen, char *detail, size_t dlen)
{
    char msg[200];
    memset(req, 0, sizeof *req);
    *protocol = NULL;
    *response = NULL;
    const char *eol = memchr(head, '\r', len);
    const char *sp1 = memchr(head, ' ', len);
    if (eol == NULL || sp1 == NULL || sp1 > eol) {
        return server_fail(400, response, rlen, detail, dlen, "malformed HTTP request line");
    }
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(eol - target));
    if (sp2 == NULL || sp2 == target || (size_t)(eol - sp2 - 1) != 8 ||
        strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
        return server_fail(400, response, rlen, detail, dlen,
                           "malformed HTTP request line (expected 'GET /path HTTP/1.1')");
    }
    req->path = target;
    req->path_len = (size_t)(sp2 - target);
    if ((size_t)(sp1 - head) != 3 || strncmp(head, "GET", 3) != 0) {
        snprintf(msg, sizeof msg, "HTTP method %.*s instead of GET",
                 (int)TETHER__MIN((size_t)(sp1 - head), (size_t)16), head);
        return server_fail(405, response, rlen, detail, dlen, msg);
    }
    if (sp2[8] != '1') {
        return server_fail(400, response, rlen, detail, dlen,
                           "HTTP/1.0 request: the WebSocket upgrade needs HTTP/1.1");
    }
    if (req->path[0] != '/') {
        return server_fail(400, response, rlen, detail, dlen, "request target is not a path");
    }
    size_t pl = req->path_len;
    const char *q = memchr(req->path, '?', pl);
    size_t bare = q != NULL ? (size_t)(q - req->path) : pl;
    size_t vl = 0;
    bool dup = false;
    const char *host = head_get(head, len, "Host", &vl, &dup);
    if (host == NULL || vl == 0 || dup) {
        return server_fail(400, response, rlen, detail, dlen,
                           dup ? "two Host headers" : "no Host header");
    }
    const char *up = head_get(head, len, "Upgrade", &vl, NULL);
    bool upgrade = up != NULL && list_has(up, vl, "websocket");
    if (!upgrade) {
        if (w->health_path != NULL && strlen(w->health_path) == bare &&
            memcmp(w->health_path, req->path, bare) == 0) {
            snprintf(detail, dlen, "answered a health check (GET %.*s)",
                     (int)TETHER__MIN(bare, 64u), req->path);
            *response = tether__ws_http_error(200, rlen);
            return *response != NULL ? 200 : -1;
        }
        snprintf(msg, sizeof msg, "plain HTTP request for %.*s without 'Upgrade: websocket'",
                 (int)TETHER__MIN(pl, (size_t)64), req->path);
        return server_fail(426, response, rlen, detail, dlen, msg);
    }
    const char *conn = head_get(head, len, "Connection", &vl, NULL);
    if (conn == NULL || !list_has(conn, vl, "upgrade")) {
        return server_fail(400, response, rlen, detail, dlen,
                           "upgrade request without 'Connection: Upgrade'");
    }
    const char *ver = head_get(head, len, "Sec-WebSocket-Version", &vl, NULL);
    if (ver == NULL || vl != 2 || memcmp(ver, "13", 2) != 0) {
        snprintf(msg, sizeof msg, "Sec-WebSocket-Version %.*s (only 13 is spoken)",
                 ver != NULL ? (int)TETHER__MIN(vl, (size_t)16) : 9,
                 ver != NULL ? ver : "(missing)");
        return server_fail(426, response, rlen, detail, dlen, msg);
    }
    dup = false;
    req->key = head_get(head, len, "Sec-WebSocket-Key", &req->key_len, &dup);
    uint8_t raw[20];
    if (req->key == NULL || dup || req->key_len != 24 ||
        EVP_DecodeBlock(raw, (const unsigned char *)req->key, 24) != 18) {
        return server_fail(400, response, rlen, detail, dlen,
                           "missing or malformed Sec-WebSocket-Key (base64 of 16 bytes)");
    }
    if (!w->any_path && (strlen(w->path) != bare || memcmp(w->path, req->path, bare) != 0)) {
        snprintf(msg, sizeof msg, "request for path %.*s; this listener serves %.64s",
                 (int)TETHER__MIN(bare, (size_t)64), req->path, w->path);
        return server_fail(404, response, rlen, detail, dlen, msg);
    }
    req->origin = head_get(head, len, "Origin", &req->origin_len, NULL);
    if (w->allowed_origins != NULL) {
        bool ok = false;
        for (size_t i = 0; req->origin != NULL && w->allowed_origins[i] != NULL; i++) {
            ok = ok || (strlen(w->allowed_origins[i]) == req->origin_len &&
                        memcmp(w->allowed_origins[i], req->origin, req->origin_len) == 0);
        }
        if (!ok) {
            snprintf(msg, sizeof msg, "origin %.*s is not allowed",
                     req->origin != NULL ? (int)TETHER__MIN(req->origin_len, (size_t)80) : 6,
                     req->origin != NULL ? req->origin : "(none)");
            return server_fail(403, response, rlen, detail, dlen, msg);
        }
    }
    req->protocols = head_get(head, len, "Sec-WebSocket-Protocol", &req->protocols_len, NULL);
    if (req->protocols != NULL && w->protocols != NULL) {
        /* The client's order of preference decides. */
        const char *p = req->protocols;
        const char *end = p + req->protocols_len;
        while (p < end && *protocol == NULL) {
            while (p < end && (*p == ' ' || *p == ',')) {
                p++;
            }
            const char *e = p;
            while (e < end && *e != ',' && *e != ' ') {
                e++;
            }
            for (size_t i = 0; w->protocols[i] != NULL && e > p; i++) {
                if (strlen(w->protocols[i]) == (size_t)(e - p) &&
                    memcmp(w->protocols[i], p, (size_t)(e - p)) == 0) {
                    *protocol = strdup(w->protocols[i]);
                    if (*protocol == NULL) {
                        return -1;
                    }
                    break;
                }
            }
            p = e;
        }
    }
    size_t el = 0;
    const char *ext = head_get(head, len, "Sec-WebSocket-Extensions", &el, NULL);
    req->tctl = ext != NULL && list_has(ext, el, TETHER__WS_EXT_CTRL);
    char accept[29];
    if (tether__ws_accept_key(req->key, req->key_len, accept) != TETHER_OK) {
        return server_fail(400, response, rlen, detail, dlen, "malformed Sec-WebSocket-Key");
    }
    size_t cap = 320 + (*protocol != NULL ? strlen(*protocol) : 0);
    char *r = malloc(cap);
    if (r == NULL) {
        free(*protocol);
        *protocol = NULL;
        return -1;
    }
    int n = snprintf(r, cap,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
                     accept);
    if (*protocol != NULL) {
        n += snprintf(r + n, cap - (size_t)n, "Sec-WebSocket-Protocol: %s\r\n", *protocol);
    }
    if (req->tctl) {
        n += snprintf(r + n, cap - (size_t)n, "Sec-WebSocket-Extensions: %s\r\n",
                      TETHER__WS_EXT_CTRL);
    }
    n += snprintf(r + n, cap - (size_t)n, "\r\n");
    *response = r;
    *rlen = (size_t)n;
    return 0;
}
